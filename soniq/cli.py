"""The ``soniq`` command: a thin click layer over the app's public methods (no SQL here).

Every command takes ``--database-url`` and ``--schema`` (else ``SONIQ_DATABASE_URL`` /
``SONIQ_SCHEMA``); read commands take ``--json``. Exit codes: 0 ok, 1 failure, 2 usage.
Errors are one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import asyncpg
import click

from soniq.app import Soniq, redact_url
from soniq.errors import (
    JOBS_MODULE_IMPORT,
    JOBS_MODULES_MISSING,
    SETTINGS_INVALID,
    SoniqError,
)
from soniq.settings import QUEUE_RE, load_settings
from soniq.states import JobStatus

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

BATCH = 100  # bulk dead-letter work: entries per batch between progress updates
PAST = {"replay": "replayed", "delete": "deleted"}
GERUND = {"replay": "replaying", "delete": "deleting"}
USAGE_CODES = {SETTINGS_INVALID, JOBS_MODULES_MISSING}


# -- configuration shared by every command ---------------------------------------------------


@dataclass
class Config:
    """Options given on the group or the command (the command's win)."""

    database_url: str | None = None
    schema: str | None = None
    jobs_modules: str | None = None
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def _config() -> Config:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Config):
        root.obj = Config()
    return root.obj


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(_config(), name, value)

    return callback


def common(fn: F) -> F:
    """``--database-url``, ``--schema``, ``--jobs-modules`` and ``--debug``."""
    options = [
        click.option(
            "--database-url",
            metavar="URL",
            expose_value=False,
            callback=_store("database_url"),
            help="PostgreSQL URL [env SONIQ_DATABASE_URL; default: the embedded server].",
        ),
        click.option(
            "--schema",
            metavar="NAME",
            expose_value=False,
            callback=_store("schema"),
            help="Schema holding soniq's tables [env SONIQ_SCHEMA; default: public].",
        ),
        click.option(
            "--jobs-modules",
            metavar="MODULES",
            expose_value=False,
            callback=_store("jobs_modules"),
            help="Comma-separated modules defining your Soniq app [env SONIQ_JOBS_MODULES].",
        ),
        click.option(
            "--debug",
            is_flag=True,
            default=None,
            expose_value=False,
            callback=_store("debug"),
            help="Show tracebacks and debug logs.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


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


# -- errors ----------------------------------------------------------------------------------


class SoniqGroup(click.Group):
    """A click group that turns soniq and database errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            root = ctx.find_root().obj
            cfg = root if isinstance(root, Config) else Config()
            if cfg.debug:
                raise
            code, message = _describe(exc, cfg)
            click.echo(f"error: {message}", err=True)
            ctx.exit(code)


def _describe(exc: BaseException, cfg: Config) -> tuple[int, str]:
    if isinstance(exc, SoniqError):
        return (2 if exc.error_code in USAGE_CODES else 1), str(exc)
    schema = cfg.schema or os.environ.get("SONIQ_SCHEMA") or "public"
    if isinstance(exc, asyncpg.UndefinedTableError):
        return 1, (
            f"soniq's tables are not in schema {schema!r} of this database ({exc}). "
            "Fix: run `soniq setup` once, or pass the right --schema."
        )
    if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError)):
        return 1, f"database error: {type(exc).__name__}: {exc} (use --debug for details)"
    if isinstance(exc, OSError):
        return 1, f"{type(exc).__name__}: {exc}"
    return 1, f"unexpected {type(exc).__name__}: {exc} (use --debug for the traceback)"


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _quiet_logging(cfg: Config) -> None:
    from soniq.logs import configure_logging

    fmt = os.environ.get("SONIQ_LOG_FORMAT", "text").lower()
    configure_logging(
        "DEBUG" if cfg.debug else "WARNING", fmt if fmt in ("text", "json") else "text"
    )


# -- the app(s) a command works on -------------------------------------------------------------


def _overrides(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.database_url:
        out["database_url"] = cfg.database_url
    if cfg.schema:
        out["schema"] = cfg.schema
    return out


def _plain_app(cfg: Config) -> Soniq:
    """An instance configured from flags and SONIQ_* (operator commands need no handlers)."""
    return Soniq(**_overrides(cfg))


def _module_names(cfg: Config) -> list[str]:
    raw = cfg.jobs_modules or os.environ.get("SONIQ_JOBS_MODULES") or ""
    return [m.strip() for m in raw.split(",") if m.strip()]


def load_apps(cfg: Config) -> list[Soniq]:
    """Import the jobs modules and return the distinct Soniq instances they define, with the
    command-line ``--database-url`` / ``--schema`` applied."""
    names = _module_names(cfg)
    if not names:
        raise SoniqError(
            JOBS_MODULES_MISSING,
            "no jobs modules given: set SONIQ_JOBS_MODULES=myproject.jobs (comma-separated) "
            "or pass --jobs-modules, naming the module(s) that define your Soniq app and "
            "its @app.job handlers",
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    apps: list[Soniq] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            if cfg.debug:
                raise
            if isinstance(exc, SoniqError):
                raise SoniqError(
                    exc.error_code, f"while importing jobs module {name!r}: {exc.message}"
                ) from None
            raise SoniqError(
                JOBS_MODULE_IMPORT,
                f"cannot import jobs module {name!r}: {type(exc).__name__}: {exc}. Fix the "
                "module or SONIQ_JOBS_MODULES (run from the directory that contains it, or "
                "set PYTHONPATH); --debug shows the traceback.",
            ) from None
        for value in vars(module).values():
            if isinstance(value, Soniq) and all(value is not a for a in apps):
                apps.append(value)
    if not apps:
        raise SoniqError(
            JOBS_MODULES_MISSING,
            f"the jobs modules {', '.join(names)} define no Soniq instance at module level. "
            "Fix: define `app = Soniq(...)` in (or import it into) one of them.",
        )
    overrides = _overrides(cfg)
    if overrides:
        for app in apps:
            # before first use, so the new URL / schema is what the instance connects to
            app.settings = load_settings(**{**app.settings.model_dump(), **overrides})
    return apps


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine function to completion in a fresh event loop."""
    return asyncio.run(_call(coro_fn))


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


@contextlib.asynccontextmanager
async def _opened(app: Soniq) -> Any:
    try:
        yield app
    finally:
        await app.close()


def _with_app(fn: Callable[[Soniq], Awaitable[T]]) -> T:
    cfg = _config()
    _quiet_logging(cfg)
    app = _plain_app(cfg)

    async def go() -> T:
        async with _opened(app):
            return await fn(app)

    return run(go)


# -- rendering ---------------------------------------------------------------------------------


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
WRAPPING = {"Last error", "Error", "Schedule", "Queues"}  # the rest never wrap (ids stay whole)


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


def _stamp_text(value: Any) -> str:
    """A timestamp stored as ISO text inside JSON, shown like :func:`stamp`."""
    try:
        return stamp(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def short(text: str | None, limit: int = 60) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[-1] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- the group ---------------------------------------------------------------------------------


@click.group(cls=SoniqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.version_option(package_name="soniq", prog_name="soniq")
def cli() -> None:
    """soniq: background jobs on PostgreSQL.

    Every command reads SONIQ_* settings from the environment; --database-url and
    --schema override them. Exit codes: 0 ok, 1 failure, 2 usage error.
    """
    _config()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="soniq")


# -- setup, migrate-status --------------------------------------------------------------------


@cli.command()
@common
def setup() -> None:
    """Create the database and tables if missing (idempotent)."""

    async def go(app: Soniq) -> None:
        created = await app.create_database()
        url = redact_url(await app.database_url())
        if created:
            click.echo(f"Created database {url}")
        applied = await app.setup()
        states = await app.migration_status()
        latest = max((s.version for s in states), default=0)
        if applied:
            click.echo(
                f"Applied {applied} migration(s) to schema {app.schema!r} of {url}; "
                f"now at version {latest}."
            )
        else:
            click.echo(f"Schema {app.schema!r} of {url} is up to date (version {latest}).")

    _with_app(go)


@cli.command("migrate-status")
@common
@json_option
def migrate_status(as_json: bool) -> None:
    """Applied and pending migrations."""

    async def go(app: Soniq) -> None:
        states = await app.migration_status()
        pending = [s for s in states if s.applied_at is None]
        if as_json:
            emit_json(
                {
                    "schema": app.schema,
                    "migrations": [
                        {
                            "version": s.version,
                            "name": s.name,
                            "applied_at": s.applied_at,
                            "status": "pending" if s.applied_at is None else "applied",
                        }
                        for s in states
                    ],
                    "pending": len(pending),
                }
            )
            return
        out = console()
        out.print(
            table(
                f"Migrations in schema {app.schema!r}",
                ["Version", "Name", "Status", "Applied at"],
                [
                    [
                        f"{s.version:03d}",
                        s.name,
                        "pending" if s.applied_at is None else "applied",
                        stamp(s.applied_at),
                    ]
                    for s in states
                ],
            )
        )
        if pending:
            out.print(f"{len(pending)} pending: run `soniq setup` to apply them.")
        else:
            out.print("Up to date.")

    _with_app(go)


# -- worker, scheduler ---------------------------------------------------------------------------


def _configure_process_logging(cfg: Config, apps: Sequence[Soniq]) -> None:
    from soniq.logs import configure_logging

    settings = apps[0].settings
    configure_logging("DEBUG" if cfg.debug else settings.log_level, settings.log_format)


def _parse_queues(value: str | None) -> list[str] | None:
    if value is None:
        return None
    queues = [q.strip() for q in value.split(",") if q.strip()]
    for q in queues:
        if not QUEUE_RE.match(q):
            raise click.BadParameter(
                f"queue name {q!r} is invalid: use letters, digits, _ . : -", param_hint="--queues"
            )
    if not queues:
        raise click.BadParameter("name at least one queue", param_hint="--queues")
    return queues


@cli.command()
@common
@click.option(
    "--concurrency", type=click.IntRange(min=1), help="Jobs run at once [env SONIQ_CONCURRENCY; 4]."
)
@click.option("--queues", metavar="A,B", help="Queues to consume [env SONIQ_QUEUES; all].")
@click.option("--run-once", is_flag=True, help="Run every job runnable now, then exit.")
@click.option("--with-scheduler", is_flag=True, help="Also enqueue periodic jobs in this process.")
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics on this port."
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option(
    "--metrics-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often queue gauges are sampled from the database.",
)
def worker(
    concurrency: int | None,
    queues: str | None,
    run_once: bool,
    with_scheduler: bool,
    metrics_port: int | None,
    metrics_host: str,
    metrics_interval: float,
) -> None:
    """Run the jobs of SONIQ_JOBS_MODULES until SIGTERM/SIGINT.

    The first signal lets in-flight jobs finish (up to shutdown_timeout); a second one
    returns them to the queue at once.
    """
    cfg = _config()
    queue_list = _parse_queues(queues)
    apps = load_apps(cfg)
    _configure_process_logging(cfg, apps)

    async def go() -> None:
        observers = []
        try:
            if metrics_port is not None:
                from soniq.contrib import metrics

                observers = [metrics.install(app, sample_interval=metrics_interval) for app in apps]
                try:
                    metrics.serve(metrics_port, metrics_host)
                except OSError as exc:
                    fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}")
                logging.getLogger("soniq").info(
                    "metrics on http://%s:%d/metrics", metrics_host, metrics_port
                )
            stop = asyncio.Event()
            await asyncio.gather(
                *(
                    app.run_worker(
                        concurrency=concurrency,
                        queues=queue_list,
                        run_once=run_once,
                        with_scheduler=with_scheduler,
                        handle_signals=True,
                        shutdown_event=stop if len(apps) > 1 else None,
                    )
                    for app in apps
                )
            )
        finally:
            for observer in observers:
                await observer.stop_sampler()
            for app in apps:
                await app.close()

    run(go)


@cli.command()
@common
@click.option(
    "--check-interval",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="How often to look for due periodic jobs.",
)
def scheduler(check_interval: float | None) -> None:
    """Enqueue due periodic jobs until SIGINT/SIGTERM.

    Any number may run: one leads (advisory lock), the others wait to take over.
    """
    cfg = _config()
    apps = load_apps(cfg)
    _configure_process_logging(cfg, apps)
    from soniq.scheduler import Scheduler

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        options: dict[str, Any] = {}
        if check_interval is not None:
            options["check_interval"] = check_interval
        try:
            await asyncio.gather(*(Scheduler(app, **options).run(stop) for app in apps))
        finally:
            for app in apps:
                await app.close()

    run(go)


# -- tasks ---------------------------------------------------------------------------------------


@cli.command()
@common
@json_option
def tasks(as_json: bool) -> None:
    """Tasks the jobs modules register: queue, retries, schedule."""
    cfg = _config()
    apps = load_apps(cfg)
    rows: list[dict[str, Any]] = []
    now = datetime.now(timezone.utc)
    for app in apps:
        schedules: dict[str, list[str]] = {}
        next_runs: dict[str, list[str]] = {}
        for sched in app.schedules.values():
            spec = (
                f"cron {sched.cron} {sched.timezone}"
                if sched.cron
                else (f"every {age(sched.every.total_seconds())}" if sched.every else "-")
            )
            schedules.setdefault(sched.job_name, []).append(spec)
            next_runs.setdefault(sched.job_name, []).append(sched.next_after(now).isoformat())
        for name in sorted(app.tasks):
            task = app.tasks[name]
            retries = task.retries if task.retries is not None else app.settings.max_retries
            timeout = task.timeout if task.timeout is not None else app.settings.job_timeout
            rows.append(
                {
                    "name": name,
                    "queue": task.queue,
                    "retries": retries,
                    "priority": task.priority
                    if task.priority is not None
                    else app.settings.priority,
                    "timeout": timeout,
                    "unique": task.unique,
                    "schedule": schedules.get(name, []),
                    "next_run_at": next_runs.get(name, []),
                    "schema": app.schema,
                }
            )
    if as_json:
        emit_json(rows)
        return
    several = len({r["schema"] for r in rows}) > 1
    columns = ["Task", "Queue", "Retries", "Priority", "Timeout", "Schedule", "Next run (UTC)"]
    console().print(
        table(
            f"{len(rows)} task(s)",
            columns + (["Schema"] if several else []),
            [
                [
                    r["name"],
                    r["queue"],
                    r["retries"],
                    r["priority"],
                    age(r["timeout"]) if r["timeout"] else "none",
                    "; ".join(r["schedule"]) or "-",
                    "; ".join(t[:19].replace("T", " ") for t in r["next_run_at"]) or "-",
                ]
                + ([r["schema"]] if several else [])
                for r in rows
            ],
        )
    )


# -- status, inspect ---------------------------------------------------------------------------


def _worker_state(w: dict[str, Any]) -> str:
    if w.get("stopped_at") is not None:
        return "stopped"
    return "alive" if w.get("alive") else "stale"


@cli.command()
@common
@json_option
def status(as_json: bool) -> None:
    """Queues, workers alive and the scheduler leader.

    Per queue: jobs by status, age of the oldest due job, jobs finished in the last minute.
    """

    async def go(app: Soniq) -> None:
        queues = await app.list_queues()
        throughput = await app.queue_throughput(60.0)
        workers = await app.list_workers()
        leader = await app.scheduler_leader()
        for q in queues:
            done = throughput.get(q["queue"], {})
            q["succeeded_last_minute"] = done.get("succeeded", 0)
            q["dead_lettered_last_minute"] = done.get("dead_lettered", 0)
        keys = [s.value for s in JobStatus]
        totals = {k: sum(int(q[k]) for q in queues) for k in keys}
        alive = [w for w in workers if _worker_state(w) == "alive"]
        stale = [w for w in workers if _worker_state(w) == "stale"]
        if as_json:
            emit_json(
                {
                    "schema": app.schema,
                    "totals": {"total": sum(totals.values()), **totals},
                    "queues": queues,
                    "workers": alive,
                    "stale_workers": len(stale),
                    "scheduler_leader": leader,
                }
            )
            return
        out = console()
        rows = [
            [
                q["queue"],
                q["queued"],
                q["processing"],
                q["done"],
                q["dead_letter"],
                q["cancelled"],
                age(q["oldest_queued_age"]),
                q["succeeded_last_minute"],
                q["dead_lettered_last_minute"],
            ]
            for q in queues
        ]
        rows.append(
            [
                "(all)",
                totals["queued"],
                totals["processing"],
                totals["done"],
                totals["dead_letter"],
                totals["cancelled"],
                age(max((q["oldest_queued_age"] or 0 for q in queues), default=0) or None),
                sum(q["succeeded_last_minute"] for q in queues),
                sum(q["dead_lettered_last_minute"] for q in queues),
            ]
        )
        out.print(
            table(
                f"Queues (schema {app.schema!r})",
                [
                    "Queue",
                    "Queued",
                    "Running",
                    "Done",
                    "Dead",
                    "Cancelled",
                    "Oldest due",
                    "Done/min",
                    "Dead/min",
                ],
                rows,
            )
        )
        out.print(
            table(
                f"Workers alive: {len(alive)}",
                ["Worker", "Queues", "Concurrency", "In flight", "Heartbeat", "Up"],
                [
                    [
                        w["id"],
                        ",".join(w["queues"] or []) or "all",
                        w["concurrency"],
                        w["in_flight"],
                        ago(w["heartbeat_at"]),
                        uptime(w),
                    ]
                    for w in alive
                ],
            )
        )
        if stale:
            out.print(f"{len(stale)} stale worker(s): see `soniq inspect --workers --stale`.")
        if leader is None:
            out.print("Scheduler leader: none (no `soniq scheduler` or --with-scheduler running)")
        else:
            who = leader.get("application_name") or "unnamed session"
            out.print(
                f"Scheduler leader: {who} (backend pid {leader['pid']}, "
                f"connected {ago(leader.get('backend_start'))})"
            )

    _with_app(go)


@cli.command()
@common
@json_option
@click.option(
    "--workers", "show_workers", is_flag=True, help="Workers and what they hold (default)."
)
@click.option("--stale", is_flag=True, help="Only workers silent past heartbeat_timeout.")
@click.option("--job", "job_id", metavar="ID", help="Everything about one job.")
def inspect(as_json: bool, show_workers: bool, stale: bool, job_id: str | None) -> None:
    """Workers (--workers, --stale) or one job (--job ID)."""
    if job_id is not None and (show_workers or stale):
        raise click.UsageError("give --job ID, or --workers [--stale], not both")
    if job_id is not None:
        _with_app(functools.partial(_inspect_job, job_id=job_id, as_json=as_json))
    else:
        _with_app(functools.partial(_inspect_workers, stale=stale, as_json=as_json))


async def _inspect_workers(app: Soniq, *, stale: bool, as_json: bool) -> None:
    workers = await app.list_workers()
    held = await app.worker_jobs_held()
    for w in workers:
        w["state"] = _worker_state(w)
        w["holding"] = held.get(w["id"], 0)
    if stale:
        workers = [w for w in workers if w["state"] == "stale"]
    if as_json:
        emit_json(workers)
        return
    timeout = app.settings.heartbeat_timeout
    title = (
        f"Stale workers (silent > {age(timeout)}): {len(workers)}"
        if stale
        else f"Workers: {len(workers)}"
    )
    out = console()
    out.print(
        table(
            title,
            [
                "Worker",
                "State",
                "Queues",
                "Concurrency",
                "In flight",
                "Holding",
                "Heartbeat",
                "Up",
            ],
            [
                [
                    w["id"],
                    w["state"],
                    ",".join(w["queues"] or []) or "all",
                    w["concurrency"],
                    w["in_flight"],
                    w["holding"],
                    ago(w["heartbeat_at"]),
                    uptime(w),
                ]
                for w in workers
            ],
        )
    )
    if any(w["state"] == "stale" and w["holding"] for w in workers):
        out.print(
            "Jobs held by stale workers go back to the queue at the next rescue pass "
            "(every cleanup_interval, by any running worker or scheduler)."
        )


async def _inspect_job(app: Soniq, *, job_id: str, as_json: bool) -> None:
    job = await _require_job(app, job_id)
    result = await app.get_result(job_id) if job["status"] is JobStatus.DONE else None
    waited = ran = None
    if job["started_at"] is not None:
        waited = (job["started_at"] - job["scheduled_at"]).total_seconds()
        if job["finished_at"] is not None:
            ran = (job["finished_at"] - job["started_at"]).total_seconds()
    if as_json:
        emit_json({**job, "result": result, "wait_seconds": waited, "run_seconds": ran})
        return
    out = console()
    fields: list[tuple[str, Any]] = [
        ("task", job["job_name"]),
        ("queue", job["queue"]),
        ("status", job["status"].value),
        ("priority", job["priority"]),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("args", json.dumps(job["args"], ensure_ascii=False)),
        ("created", stamp(job["created_at"])),
        ("scheduled", stamp(job["scheduled_at"])),
        ("started", stamp(job["started_at"])),
        ("finished", stamp(job["finished_at"])),
        ("waited", age(waited)),
        ("ran", age(ran)),
        ("worker", job["worker_id"]),
    ]
    if job.get("dedup_key"):
        fields.append(("dedup key", job["dedup_key"]))
    if job["status"] is JobStatus.DEAD_LETTER:
        fields += [
            ("dead reason", job.get("dead_reason") or "max_retries_exceeded"),
            ("dead since", stamp(job.get("dead_lettered_at"))),
        ]
    if job.get("resurrection_count"):
        fields.append(("replayed", f"{job['resurrection_count']} time(s)"))
    if job["status"] is JobStatus.DONE:
        fields.append(("result", json.dumps(result, ensure_ascii=False)))
    if job["last_error"]:
        fields.append(("last error", job["last_error"]))
    out.print(details(f"Job {job['id']}", fields))
    errors = job.get("errors") or []
    if errors:
        out.print(
            table(
                "Errors by attempt",
                ["Attempt", "At", "Worker", "Error"],
                [
                    [e.get("attempt"), _stamp_text(e.get("at")), e.get("worker_id"), e.get("error")]
                    for e in errors
                ],
            )
        )


async def _require_job(app: Soniq, job_id: str) -> dict[str, Any]:
    job = await app.get_job(job_id)
    if job is None:
        try:
            UUID(job_id)
        except ValueError:
            fail(f"{job_id!r} is not a job id (job ids look like 0192f1e4-7c3a-7d4e-9b1a-...)")
        fail(
            f"no job with id {job_id} in schema {app.schema!r} (finished jobs are pruned "
            "after result_ttl)"
        )
    return job


# -- jobs ----------------------------------------------------------------------------------------


@cli.group(cls=SoniqGroup)
def jobs() -> None:
    """List, cancel and retry jobs."""


@jobs.command("list")
@common
@json_option
@click.option("--status", type=click.Choice([s.value for s in JobStatus], case_sensitive=False))
@click.option("--queue", metavar="Q")
@click.option("--name", metavar="TASK", help="Only jobs of this task name.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
def jobs_list(
    as_json: bool,
    status: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    offset: int,
) -> None:
    """Jobs, newest first."""

    async def go(app: Soniq) -> None:
        if queue is not None:
            known = [q["queue"] for q in await app.list_queues()]
            if queue not in known:
                fail(
                    f"no queue named {queue!r} has jobs in schema {app.schema!r}; queues: "
                    f"{', '.join(known) or 'none'}"
                )
        rows = await app.list_jobs(
            status=status.lower() if status else None,
            queue=queue,
            job_name=name,
            limit=limit,
            offset=offset,
        )
        if as_json:
            emit_json(rows)
            return
        console().print(
            table(
                f"{len(rows)} job(s)" + (f" (limit {limit})" if len(rows) == limit else ""),
                ["ID", "Task", "Queue", "Status", "Attempts", "Due", "Last error"],
                [
                    [
                        j["id"],
                        j["job_name"],
                        j["queue"],
                        j["status"].value,
                        f"{j['attempts']}/{j['max_attempts']}",
                        ago(j["scheduled_at"]),
                        short(j["last_error"], 50),
                    ]
                    for j in rows
                ],
            )
        )

    _with_app(go)


@jobs.command("cancel")
@common
@click.argument("job_id", metavar="ID")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued job (it will never run)."""

    async def go(app: Soniq) -> None:
        job = await _require_job(app, job_id)
        if await app.cancel_job(job_id):
            click.echo(f"Cancelled job {job['id']} ({job['job_name']}).")
            return
        now = await app.get_job(job_id)
        state = now["status"].value if now else "gone"
        fail(f"job {job_id} is {state}; only queued jobs can be cancelled")

    _with_app(go)


@jobs.command("retry")
@common
@click.argument("job_id", metavar="ID")
def jobs_retry(job_id: str) -> None:
    """Put a dead-lettered job back in the queue under its own id, with one more attempt."""

    async def go(app: Soniq) -> None:
        job = await _require_job(app, job_id)
        if await app.retry_job(job_id):
            now = await app.get_job(job_id) or job
            click.echo(
                f"Job {job['id']} ({job['job_name']}) is queued again: attempt "
                f"{now['attempts'] + 1} of {now['max_attempts']}."
            )
            return
        fail(
            f"job {job_id} is {job['status'].value}; only dead-lettered jobs can be retried "
            "(a failed job waiting for its next attempt is already queued)"
        )

    _with_app(go)


# -- dead letter -------------------------------------------------------------------------------


@cli.group("dead-letter", cls=SoniqGroup)
def dead_letter() -> None:
    """List, show, replay and delete dead-lettered jobs."""


def _dead_row(d: Any) -> list[Any]:
    return [
        d.id,
        d.job_name,
        d.reason,
        d.resurrection_count,
        ago(d.dead_lettered_at),
        short(d.last_error, 50),
    ]


DEAD_COLUMNS = ["ID", "Task", "Reason", "Replayed", "Dead since", "Last error"]


@dead_letter.command("list")
@common
@json_option
@click.option("--job-name", metavar="TASK", help="Only entries of this task.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
def dead_letter_list(as_json: bool, job_name: str | None, limit: int, offset: int) -> None:
    """Dead-lettered jobs, most recent first."""

    async def go(app: Soniq) -> None:
        entries = await app.dead_letter.list_dead_letter_jobs(
            limit=limit, offset=offset, job_name=job_name
        )
        stats = await app.dead_letter.get_dead_letter_stats()
        if as_json:
            emit_json(
                {"total": stats.total_count, "by_reason": stats.by_reason, "entries": entries}
            )
            return
        out = console()
        out.print(
            table(
                f"Dead letter: {len(entries)} shown of {stats.total_count}",
                DEAD_COLUMNS,
                [_dead_row(d) for d in entries],
            )
        )
        if stats.by_reason:
            out.print(
                "By reason: "
                + ", ".join(f"{reason} {n}" for reason, n in sorted(stats.by_reason.items()))
            )

    _with_app(go)


@dead_letter.command("show")
@common
@json_option
@click.argument("ids", nargs=-1, required=True, metavar="IDS...")
def dead_letter_show(as_json: bool, ids: tuple[str, ...]) -> None:
    """Everything about dead-letter entries: arguments and full last error."""

    async def go(app: Soniq) -> None:
        entries = []
        for job_id in ids:
            entry = await app.dead_letter.get_dead_letter_job(job_id)
            if entry is None:
                fail(f"no dead-letter entry with id {job_id}; see `soniq dead-letter list`")
            entries.append(entry)
        if as_json:
            emit_json(entries)
            return
        out = console()
        for d in entries:
            pairs = [
                ("task", d.job_name),
                ("queue", d.queue),
                ("reason", d.reason),
                ("attempts", d.attempts),
                ("replayed", f"{d.resurrection_count} time(s)"),
                ("dead since", stamp(d.dead_lettered_at)),
                ("args", json.dumps(d.args, ensure_ascii=False)),
                ("last error", d.last_error),
            ]
            out.print(details(f"Dead-letter entry {d.id}", pairs))

    _with_app(go)


def _selection(ids: tuple[str, ...], select_all: bool, job_name: str | None, verb: str) -> bool:
    """Validates the selection flags; True for a bulk selection (--all / --job-name)."""
    if ids and (select_all or job_name):
        raise click.UsageError("give entry IDS, or --all / --job-name, not both")
    if not ids and not (select_all or job_name):
        raise click.UsageError(
            f"say what to {verb}: entry IDS, --all, or --job-name NAME "
            "(see `soniq dead-letter list`)"
        )
    return not ids


async def _collect(
    app: Soniq, job_name: str | None, limit: int | None, skip: Callable[[Any], str | None]
) -> tuple[list[Any], list[tuple[Any, str]]]:
    """Entries matching ``job_name``, paging through the list: (to act on, at most
    ``limit``; skipped with the reason)."""
    todo: dict[str, Any] = {}
    skipped: dict[str, tuple[Any, str]] = {}
    page = 1000
    offset = 0
    while limit is None or len(todo) < limit:
        batch = await app.dead_letter.list_dead_letter_jobs(
            limit=page, offset=offset, job_name=job_name
        )
        for entry in batch:
            why = skip(entry)
            if why is not None:
                skipped.setdefault(entry.id, (entry, why))
            elif limit is None or len(todo) < limit:
                todo.setdefault(entry.id, entry)
        if len(batch) < page:
            break
        offset += page
    return list(todo.values()), list(skipped.values())


class _Interrupt:
    """First SIGINT/SIGTERM: stop after the entry in progress. Second: cancel at once."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.requested = False
        self.task = task
        self.installed: list[signal.Signals] = []

    def __call__(self) -> None:
        if self.requested:
            self.task.cancel()
            return
        self.requested = True
        click.echo("interrupt: stopping after the entry in progress (again to stop now)", err=True)

    @contextlib.contextmanager
    def installed_on(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self)
                self.installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (e.g. tests): Ctrl-C raises KeyboardInterrupt
        try:
            yield
        finally:
            for sig in self.installed:
                loop.remove_signal_handler(sig)


async def _bulk(
    app: Soniq,
    *,
    verb: str,
    ids: tuple[str, ...],
    select_all: bool,
    job_name: str | None,
    limit: int | None,
    yes: bool,
    skip: Callable[[Any], str | None],
    act: Callable[[Any], Awaitable[Any]],
) -> tuple[list[tuple[Any, Any]], list[tuple[Any, str]], int, bool]:
    """Select entries, confirm, then ``act`` on each in batches with a progress bar.

    Returns (done as (entry, result), skipped as (entry, why), selected, interrupted).
    """
    bulk = _selection(ids, select_all, job_name, verb)
    if bulk:
        todo, skipped = await _collect(app, job_name, limit, skip)
    else:
        todo, skipped = [], []
        for job_id in dict.fromkeys(ids):
            entry = await app.dead_letter.get_dead_letter_job(job_id)
            if entry is None:
                fail(f"no dead-letter entry with id {job_id}; nothing was {PAST[verb]}")
            why = skip(entry)
            if why is None:
                todo.append(entry)
            else:
                skipped.append((entry, why))
    if bulk and todo and not yes:
        what = f" of task {job_name}" if job_name else ""
        noun = "entry" if len(todo) == 1 else "entries"
        question = f"{verb.capitalize()} {len(todo)} dead-letter {noun}{what}"
        if skipped:
            question += f" ({len(skipped)} skipped)"
        try:
            confirmed = await asyncio.to_thread(click.confirm, question + "?", err=True)
        except click.Abort:
            confirmed = False
        if not confirmed:
            fail("not confirmed; nothing changed (--yes skips the question)")
    done: list[tuple[Any, Any]] = []
    current = asyncio.current_task()
    assert current is not None
    stopper = _Interrupt(current)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(GERUND[verb]),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=False,
        disable=len(todo) < 2,
    )
    try:
        with stopper.installed_on(asyncio.get_running_loop()), progress:
            bar = progress.add_task(verb, total=len(todo))
            for start in range(0, len(todo), BATCH):
                for entry in todo[start : start + BATCH]:
                    if stopper.requested:
                        break
                    done.append((entry, await act(entry)))
                    progress.advance(bar)
                if stopper.requested:
                    break
    except asyncio.CancelledError:
        if not stopper.requested:
            raise
        uncancel = getattr(current, "uncancel", None)  # 3.11+: clear the cancel request
        if uncancel is not None:
            uncancel()  # the second signal: the entry in progress was rolled back
    return done, skipped, len(todo) + len(skipped), stopper.requested and len(done) < len(todo)


def _bulk_options(fn: F) -> F:
    for option in reversed(
        [
            click.argument("ids", nargs=-1, metavar="[IDS...]"),
            click.option("--all", "select_all", is_flag=True, help="Every entry."),
            click.option("--job-name", metavar="TASK", help="Every entry of this task."),
            click.option("--limit", type=click.IntRange(min=1), help="At most this many entries."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
        ]
    ):
        fn = option(fn)
    return fn


def _report(
    verb: str,
    done: list[tuple[Any, Any]],
    skipped: list[tuple[Any, str]],
    selected: int,
    interrupted: bool,
    as_json: bool,
    rerun_hint: str,
) -> None:
    if as_json:
        emit_json(
            {
                PAST[verb]: [{"id": e.id, "result": r} for e, r in done],
                "skipped": [{"id": e.id, "why": why} for e, why in skipped],
                "selected": selected,
                "interrupted": interrupted,
            }
        )
    else:
        noun = "entry" if selected == 1 else "entries"
        line = f"{PAST[verb].capitalize()} {len(done)} of {selected} {noun}"
        if skipped:
            line += f"; skipped {len(skipped)} ({skipped[0][1]})"
        click.echo(line + ".")
    if interrupted:
        fail(f"interrupted after {len(done)}; {rerun_hint}")


@dead_letter.command("replay")
@common
@json_option
@_bulk_options
@click.option("--again", is_flag=True, help="Also replay entries that were replayed before.")
def dead_letter_replay(
    as_json: bool,
    ids: tuple[str, ...],
    select_all: bool,
    job_name: str | None,
    limit: int | None,
    yes: bool,
    again: bool,
) -> None:
    """Enqueue each entry's task again as a new job; the entry stays, marked replayed.

    Entries replayed before are skipped (unless --again), so an interrupted bulk replay can
    simply be run again: nothing is replayed twice.
    """

    async def go(app: Soniq) -> None:
        def skip(entry: Any) -> str | None:
            if entry.resurrection_count and not again:
                return "replayed before; --again replays them anyway"
            return None

        done, skipped, selected, interrupted = await _bulk(
            app,
            verb="replay",
            ids=ids,
            select_all=select_all,
            job_name=job_name,
            limit=limit,
            yes=yes,
            skip=skip,
            act=lambda e: app.dead_letter.replay(e.id),
        )
        _report(
            "replay",
            done,
            skipped,
            selected,
            interrupted,
            as_json,
            "run the same command again to replay the rest (replayed entries are skipped)",
        )

    _with_app(go)


@dead_letter.command("delete")
@common
@json_option
@_bulk_options
def dead_letter_delete(
    as_json: bool,
    ids: tuple[str, ...],
    select_all: bool,
    job_name: str | None,
    limit: int | None,
    yes: bool,
) -> None:
    """Delete dead-letter entries for good."""

    async def go(app: Soniq) -> None:
        done, skipped, selected, interrupted = await _bulk(
            app,
            verb="delete",
            ids=ids,
            select_all=select_all,
            job_name=job_name,
            limit=limit,
            yes=yes,
            skip=lambda e: None,
            act=lambda e: app.dead_letter.delete_dead_letter_job(e.id),
        )
        _report(
            "delete",
            done,
            skipped,
            selected,
            interrupted,
            as_json,
            "run the same command again to delete the rest",
        )

    _with_app(go)
