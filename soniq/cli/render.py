"""Tables, key/value details, short durations and timestamps, and JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any
from uuid import UUID

import click


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    width = None
    if not (sys.stderr if stderr else sys.stdout).isatty() and not os.environ.get("COLUMNS"):
        width = 200
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


NUMERIC = {
    "Queued", "Running", "Done", "Dead", "Cancelled", "Attempts", "Concurrency", "In flight",
    "Holding", "Replayed", "Done/min", "Dead/min", "Retries", "Priority", "Version",
}  # fmt: skip
# the rest never wrap (ids stay whole)
WRAPPING = {"Last error", "Error", "Schedule", "Queues", "Limits"}


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return Text(f"{title or ''} (none)", style="bold")
    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for col in columns:
        t.add_column(
            col,
            justify="right" if col in NUMERIC else "left",
            no_wrap=col not in WRAPPING,
            overflow="fold",
            ratio=1 if col in WRAPPING else None,
        )
    for row in rows:
        t.add_row(*[Text("-" if c is None else str(c)) for c in row])
    return t


def details(title: str, pairs: Sequence[tuple[str, Any]]) -> Any:
    """A bold title line over ``key  value`` rows."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    kv = Table(show_header=False, box=None, pad_edge=False)
    kv.add_column(style="bold")
    kv.add_column(overflow="fold")
    for key, value in pairs:
        kv.add_row(key, Text("-" if value is None else str(value)))
    return Group(Text(title, style="bold"), kv)


def age(seconds: float | None) -> str:
    """A short duration: 850ms, 42s, 3m05s, 2h10m, 4d03h."""
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 0:
        return "in " + age(-s)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    delta = (datetime.now(timezone.utc) - when).total_seconds()
    return f"{age(delta)} ago" if delta >= 0 else age(delta)


def uptime(worker: dict[str, Any]) -> str:
    """How long a worker ran: until now, or until it stopped or went silent."""
    end = worker.get("stopped_at") or (
        datetime.now(timezone.utc) if worker.get("alive") else worker.get("heartbeat_at")
    )
    start = worker.get("started_at")
    return "-" if start is None or end is None else age((end - start).total_seconds())


def stamp(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def stamp_text(value: Any) -> str:
    """A timestamp stored as ISO text inside JSON, shown like :func:`stamp`."""
    try:
        return stamp(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def print_tracebacks(out: Any, errors: Sequence[dict[str, Any]]) -> None:
    """Each failed attempt's traceback, oldest first (entries without one are skipped)."""
    from rich.markup import escape

    for e in errors:
        if e.get("traceback"):
            when = stamp_text(e.get("at"))
            out.print(f"[bold]Traceback of attempt {e.get('attempt')}[/bold] ({when}):")
            out.print(escape(str(e["traceback"]).rstrip()), highlight=False, soft_wrap=True)


def short(text: str | None, limit: int = 60) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[-1] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


def worker_state(w: dict[str, Any]) -> str:
    if w.get("stopped_at") is not None:
        return "stopped"
    return "alive" if w.get("alive") else "stale"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (UUID, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False))
