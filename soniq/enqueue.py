"""The enqueue rules: target, arguments and options in, the row to insert out. No I/O.

``app.enqueue``, ``enqueue_many``, the scheduler's ticks and dead-letter replay all build
their rows here, so defaults, checks, error messages and the ``unique=True`` dedup hash
exist once. The only side effect: enqueueing a handler decorated on another instance
registers it on this registry too (so a worker of this app runs it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from soniq.errors import ENQUEUE_INVALID, TASK_ARGS_INVALID, UNKNOWN_TASK_NAME, SoniqError
from soniq.ids import _IDS
from soniq.jobs import Task, TaskRef, check_model_args, check_queue, dump_json
from soniq.registry import Registry
from soniq.schedules import Schedule
from soniq.settings import Settings

log = logging.getLogger("soniq")

_INT32 = 2**31 - 1
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))  # dump_json's, built once


class NewJob(NamedTuple):
    """One job to insert, named after the ``soniq_jobs`` columns it fills (a NamedTuple:
    immutable, and about a microsecond cheaper per enqueue than a frozen dataclass)."""

    id: str
    job_name: str
    queue: str
    priority: int
    args: str  # JSON text of the arguments
    max_attempts: int
    scheduled_at: datetime | None  # aware; None: now (the database's clock)
    dedup_key: str | None

    def columns(self) -> tuple[str, str, str, int, str, int]:
        """id, job_name, queue, priority, args, max_attempts: the first six parameters of
        every query that inserts one job."""
        return self[:6]


@dataclass(frozen=True, slots=True)
class NewJobs:
    """Jobs of one task inserted in one statement: ``args`` is one JSON array, in the order
    of ``ids``; the other columns are shared."""

    ids: list[str]
    job_name: str
    queue: str
    priority: int
    args: str
    max_attempts: int
    scheduled_at: datetime | None


def new_job(
    registry: Registry,
    settings: Settings,
    target: Any,
    args: dict[str, Any] | None,
    kwargs: dict[str, Any],
    queue: Any = None,
    priority: Any = None,
    scheduled_at: Any = None,
    dedup_key: Any = None,
) -> NewJob:
    """The job ``app.enqueue(target, args=..., **kwargs)`` inserts, with a new id."""
    name, task, job_args, default_queue = resolve(
        registry, settings, target, merge_args(args, kwargs)
    )
    if task is not None:
        job_args = check_handler_args(task, job_args)
    args_json = encode_args(job_args, name)
    q, prio, max_attempts = options(settings, task, queue, priority, default_queue)
    when = when_due(scheduled_at)
    if dedup_key is not None:
        if not isinstance(dedup_key, str) or not dedup_key:
            raise SoniqError(ENQUEUE_INVALID, "dedup_key must be a non-empty string")
    elif task is not None and task.unique:
        dedup_key = dedup_hash(name, job_args)
    return NewJob(_IDS.text(_IDS.take()), name, q, prio, args_json, max_attempts, when, dedup_key)


def new_jobs(
    registry: Registry,
    settings: Settings,
    target: Any,
    args_list: Sequence[dict[str, Any]],
    queue: Any = None,
    priority: Any = None,
    scheduled_at: Any = None,
) -> NewJobs | None:
    """The batch ``app.enqueue_many`` inserts (new ids, in input order); None when empty."""
    if isinstance(args_list, (str, bytes, dict)):
        raise SoniqError(TASK_ARGS_INVALID, "args_list must be a list of dicts")
    ref_model = target.args_model if isinstance(target, TaskRef) else None
    task: Task[Any, Any] | None
    if ref_model is not None:  # each item is checked below, not an empty dict here
        name, default_queue = target.name, target.default_queue
        task = registry.tasks.get(name)
    else:
        name, task, _, default_queue = resolve(registry, settings, target, {})
    # the same checks as new_job's, per item, with what can be hoisted out of the loop
    names = (
        task.param_names
        if task is not None and task.validate is None and not task.accepts_kwargs
        else None
    )
    required = task.required_params if task is not None else frozenset()
    items: list[dict[str, Any]] = []
    for i, item in enumerate(args_list):
        if not isinstance(item, dict):
            raise SoniqError(
                TASK_ARGS_INVALID, f"args_list[{i}] must be a dict, not {type(item).__name__}"
            )
        if ref_model is not None:
            item = check_model_args(ref_model, item, name)
        elif names is not None:
            if not names.issuperset(item) or not required <= item.keys():
                check_handler_args(task, item)  # type: ignore[arg-type]  # raises
        elif task is not None:
            item = check_handler_args(task, item)
        items.append(item)
    if not items:
        return None
    try:
        args_array_json = _JSON.encode(items)  # one call for all: most of the cost per job
    except (TypeError, ValueError):
        for i, item in enumerate(items):
            dump_json(item, f"args_list[{i}] of {name}")  # raises for the first bad one
        raise
    q, prio, max_attempts = options(settings, task, queue, priority, default_queue)
    when = when_due(scheduled_at)
    return NewJobs(_IDS.texts(len(items)), name, q, prio, args_array_json, max_attempts, when)


def schedule_job(registry: Registry, settings: Settings, schedule: Schedule) -> NewJob:
    """A job of ``schedule``'s task as ``app.enqueue`` would make it (queue, priority,
    attempts, arguments, dedup key). The tick sets the time the job is due."""
    task = registry.tasks.get(schedule.job_name)
    args = schedule.args
    if task is not None:
        args = check_handler_args(task, args)
    queue, priority, max_attempts = options(settings, task, None, None, None)
    dedup_key = dedup_hash(task.name, args) if task is not None and task.unique else None
    return NewJob(
        _IDS.text(_IDS.take()),
        schedule.job_name,
        queue,
        priority,
        dump_json(args, schedule.name),
        max_attempts,
        None,
        dedup_key,
    )


def replayed_job(row: Mapping[str, Any]) -> NewJob:
    """A new job with the task, queue, priority, attempts and arguments of ``row`` (a
    dead-letter entry), due now."""
    return NewJob(
        _IDS.text(_IDS.take()),
        row["job_name"],
        row["queue"],
        row["priority"],
        encode_args(row["args"], row["job_name"]),
        row["max_attempts"],
        None,
        None,
    )


def encode_args(args: Any, job_name: str) -> str:
    """Compact JSON text of the arguments of a ``job_name`` job; a SoniqError naming the fix
    if they are not plain JSON."""
    try:
        return _JSON.encode(args)
    except (TypeError, ValueError):
        return dump_json(args, f"arguments of {job_name}")  # raises the SoniqError


def dedup_hash(name: str, args: dict[str, Any]) -> str:
    """The dedup key of a ``unique=True`` task's job: its name and a hash of its arguments."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"))
    return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def merge_args(args: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The job's arguments from ``args=`` and keywords (a name given in both is refused)."""
    if args is not None and not isinstance(args, dict):
        raise SoniqError(
            TASK_ARGS_INVALID,
            f"args= must be a dict of keyword arguments, not {type(args).__name__}",
        )
    merged = dict(args) if args else {}
    if kwargs:
        clash = merged.keys() & kwargs.keys()
        if clash:
            raise SoniqError(
                TASK_ARGS_INVALID,
                f"argument(s) {sorted(clash)} given both in args= and as keywords",
            )
        merged.update(kwargs)
    return merged


def resolve(
    registry: Registry, settings: Settings, target: Any, merged: dict[str, Any]
) -> tuple[str, Task[Any, Any] | None, dict[str, Any], str | None]:
    """(task name, registered task or None, arguments, default queue) for ``target``."""
    tasks = registry.tasks
    task: Task[Any, Any] | None
    if isinstance(target, TaskRef):
        task = tasks.get(target.name)
        if target.args_model is not None:
            merged = check_model_args(target.args_model, merged, target.name)
        return target.name, task, merged, target.default_queue
    if isinstance(target, str):
        task = tasks.get(target)
        if task is None:
            mode = settings.enqueue_validation
            if mode == "strict":
                raise SoniqError(
                    UNKNOWN_TASK_NAME,
                    f"no task named {target!r} is registered on this Soniq instance. "
                    "Fix: import the module that defines it, enqueue task_ref("
                    f"{target!r}) to enqueue by name without the handler, or set "
                    "enqueue_validation='warn' or 'none'.",
                )
            if mode == "warn":
                log.warning("enqueueing unregistered task name %r", target)
        return target, task, merged, None
    task = getattr(target, "__soniq_task__", None)
    if task is None:
        raise SoniqError(
            ENQUEUE_INVALID,
            f"cannot enqueue {target!r}: pass a function decorated with @app.job(...), "
            "a task name, or a task_ref(...)",
        )
    if task.name not in tasks:
        # decorated on another instance: register here too, so a worker of this app runs it
        tasks[task.name] = task
    return task.name, task, merged, None


def check_handler_args(task: Task[Any, Any], args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as the handler gets them: validated by ``validate=``, else checked against
    the handler's parameters (required ones present, unknown ones refused unless the
    handler takes ``**kwargs``; ``JobContext`` parameters are the worker's to fill)."""
    if task.validate is not None:
        return task.check_args(args)
    if not task.accepts_kwargs:
        unknown = args.keys() - task.param_names
        if unknown:
            raise SoniqError(
                TASK_ARGS_INVALID,
                f"{task.name} takes no argument(s) {sorted(unknown)}; "
                f"its parameters are {sorted(task.param_names - set(task.context_params))}",
            )
    missing = task.required_params - args.keys()
    if missing:
        raise SoniqError(
            TASK_ARGS_INVALID,
            f"{task.name} is missing required argument(s) {sorted(missing)}; "
            "pass them to enqueue (or give those parameters defaults)",
        )
    return args


def when_due(value: Any) -> datetime | None:
    """``scheduled_at=`` as an aware datetime, or None for now."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise SoniqError(
                ENQUEUE_INVALID,
                "scheduled_at is a naive datetime; pass an aware one, e.g. "
                "datetime.now(timezone.utc) + timedelta(minutes=5)",
            )
        return value
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise SoniqError(
            ENQUEUE_INVALID,
            f"scheduled_at must be an aware datetime, a timedelta or seconds, "
            f"not {type(value).__name__}",
        )
    if not seconds >= 0 or seconds == float("inf"):
        raise SoniqError(
            ENQUEUE_INVALID, f"scheduled_at delay must be a finite number >= 0, got {value!r}"
        )
    if seconds == 0:
        return None
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def options(
    settings: Settings,
    task: Task[Any, Any] | None,
    queue: Any,
    priority: Any,
    default_queue: str | None,
) -> tuple[str, int, int]:
    """(queue, priority, max_attempts): the given values checked, else the task's, else the
    settings' defaults."""
    if queue is None:
        queue = task.queue if task is not None else (default_queue or "default")
    else:
        check_queue(queue, ENQUEUE_INVALID)
    if priority is None:
        priority = (
            task.priority if task is not None and task.priority is not None else settings.priority
        )
    elif (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not (-_INT32 <= priority <= _INT32)
    ):
        raise SoniqError(
            ENQUEUE_INVALID, f"priority must be an integer (lower runs first), got {priority!r}"
        )
    retries = task.retries if task is not None and task.retries is not None else None
    max_attempts = (retries if retries is not None else settings.max_retries) + 1
    return queue, priority, max_attempts


def check_cancel_filters(queue: Any, job_name: Any, tags: Any) -> None:
    """The filters of ``cancel_jobs``: at least one, each a non-empty string (tags a dict)."""
    if queue is None and job_name is None and tags is None:
        raise SoniqError(
            ENQUEUE_INVALID,
            "cancel_jobs needs at least one filter: queue=, job_name= or tags= "
            "(it never cancels every job by accident)",
        )
    for what, value in (("queue", queue), ("job_name", job_name)):
        if value is not None and (not isinstance(value, str) or not value):
            raise SoniqError(ENQUEUE_INVALID, f"{what}= must be a non-empty string")
    if tags is not None and not isinstance(tags, dict):
        raise SoniqError(ENQUEUE_INVALID, "tags= must be a dict of str to str, like enqueue's")


# -- job control options (tags, expiry, idempotency keys): a separate, slower insert --------

MAX_TAGS = 20
MAX_TAG_CHARS = 100


class JobExtras(NamedTuple):
    """The job control columns of one enqueue (see ``job_insert_ext``)."""

    tags: str | None  # JSON object text
    expires_at: datetime | None
    idempotency_key: str | None
    request_hash: str | None  # of task + arguments, for the idempotency key
    idempotency_ttl: float


def job_extras(
    settings: Settings,
    task: Task[Any, Any] | None,
    job: NewJob,
    tags: Any,
    expires_at: Any,
    idempotency_key: Any,
) -> JobExtras | None:
    """The extras of ``job``, checked; None when it uses none (the plain insert)."""
    if expires_at is None and task is not None and task.expires_after is not None:
        expires_at = task.expires_after
    if tags is None and expires_at is None and idempotency_key is None:
        return None
    tags_json = None if tags is None else json.dumps(check_tags(tags), sort_keys=True)
    expiry = None if expires_at is None else expires_when(expires_at)
    request_hash = None
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise SoniqError(ENQUEUE_INVALID, "idempotency_key must be a non-empty string")
        if job.dedup_key is not None:
            raise SoniqError(
                ENQUEUE_INVALID,
                "give idempotency_key or a dedup key (dedup_key=, unique=True), not both",
            )
        canonical = json.dumps(
            [job.job_name, json.loads(job.args)], sort_keys=True, separators=(",", ":")
        )
        request_hash = hashlib.sha256(canonical.encode()).hexdigest()
    return JobExtras(
        tags_json, expiry, idempotency_key, request_hash, float(settings.idempotency_ttl)
    )


def check_tags(tags: Any) -> dict[str, str]:
    """``tags=``: a dict of at most 20 str -> str pairs, each at most 100 characters."""
    if not isinstance(tags, dict):
        raise SoniqError(
            ENQUEUE_INVALID, f"tags must be a dict of str to str, not {type(tags).__name__}"
        )
    if len(tags) > MAX_TAGS:
        raise SoniqError(ENQUEUE_INVALID, f"at most {MAX_TAGS} tags per job, got {len(tags)}")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SoniqError(
                ENQUEUE_INVALID,
                f"tag {key!r}: {value!r}: tag keys and values must be strings "
                "(convert numbers with str())",
            )
        if not key or len(key) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"tag {key[:20]!r}: keys must be 1-{MAX_TAG_CHARS} characters and values at "
                f"most {MAX_TAG_CHARS}",
            )
    return tags


def expires_when(value: Any) -> datetime:
    """``expires_at=`` (aware datetime, timedelta or seconds from now) as an aware
    datetime in the future."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise SoniqError(
                ENQUEUE_INVALID,
                "expires_at is a naive datetime; pass an aware one, e.g. "
                "datetime.now(timezone.utc) + timedelta(minutes=5)",
            )
        when = value
    elif isinstance(value, timedelta) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        if not 0 < seconds < float("inf"):
            raise SoniqError(
                ENQUEUE_INVALID, f"expires_at must be in the future: got {value!r} seconds"
            )
        when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    else:
        raise SoniqError(
            ENQUEUE_INVALID,
            "expires_at must be an aware datetime, a timedelta or seconds from now, "
            f"not {type(value).__name__}",
        )
    if when <= datetime.now(timezone.utc):
        raise SoniqError(ENQUEUE_INVALID, f"expires_at {when.isoformat()} is in the past")
    return when
