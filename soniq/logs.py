"""Logging for soniq processes: standard ``logging``, with the running job on every record.

The worker wraps each job in :func:`job_context`; :class:`JobFieldsFilter` copies the job's
``job_id``, ``task``, ``queue`` and ``attempt`` from a context variable onto each record
(``None`` outside a job), so any handler or formatter can use them. ``SONIQ_LOG_FORMAT=json``
makes :func:`configure_logging` write one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

JOB_FIELDS = ("job_id", "task", "queue", "attempt")

_current_job: ContextVar[dict[str, Any] | None] = ContextVar("soniq_current_job", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


@contextmanager
def job_context(job_id: str, task: str, queue: str, attempt: int) -> Iterator[None]:
    """Within this block (and tasks or threads started from it), records carry the job's fields."""
    token = _current_job.set({"job_id": job_id, "task": task, "queue": queue, "attempt": attempt})
    try:
        yield
    finally:
        _current_job.reset(token)


def set_current_job(job_id: str, task: str, queue: str, attempt: int) -> None:
    """Set the job fields for the rest of the current context (the worker's per-job task)."""
    _current_job.set({"job_id": job_id, "task": task, "queue": queue, "attempt": attempt})


def current_job() -> dict[str, Any] | None:
    """The fields of the job running in this context, or None."""
    return _current_job.get()


class JobFieldsFilter(logging.Filter):
    """Sets ``job_id``, ``task``, ``queue`` and ``attempt`` on each record (None outside a job).

    Fields a caller passed in ``extra=`` are kept. Add it to a handler to cover every record
    that handler emits, whichever logger produced it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        job = _current_job.get() or {}
        for name in JOB_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, job.get(name))
        return True


class TextFormatter(logging.Formatter):
    """``time level logger: message`` and, inside a job whose id the message does not
    already name, `` [task job_id attempt=N]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None or str(job_id) in record.getMessage():
            return line  # outside a job, or the message already names it
        head, sep, tail = line.partition("\n")
        task, attempt = getattr(record, "task", None), getattr(record, "attempt", None)
        where = f" [{task} {job_id} attempt={attempt}]"
        return head + where + sep + tail


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job fields, ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            out[name] = getattr(record, name, None)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


_HANDLER_MARK = "_soniq_handler"


def configure_logging(
    level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Send log records to ``stream`` (stderr) as text or JSON lines, at ``level``.

    Installs one handler on the root logger (replacing one this function installed before,
    leaving others alone) and returns it.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(JobFieldsFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
