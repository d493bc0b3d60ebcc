"""``soniq worker`` and ``soniq scheduler``: the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import load_apps, run
from soniq.cli.base import Config, cli, common, current_config, fail
from soniq.scheduler import Scheduler
from soniq.settings import QUEUE_RE


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
    cfg = current_config()
    queue_list = _parse_queues(queues)
    if metrics_port is not None:
        # before anything starts: without the metrics extra this raises a SoniqError
        # that names the fix
        from soniq.contrib import metrics  # noqa: F401
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
    cfg = current_config()
    apps = load_apps(cfg)
    _configure_process_logging(cfg, apps)

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
