"""``soniq dashboard``: serve the web dashboard (extra ``dashboard``) until SIGINT/SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
from types import FrameType

import click

from soniq.app import Soniq
from soniq.cli.apps import _module_names, _plain_app, load_apps, run
from soniq.cli.base import cli, common, current_config, fail

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end it with exit code 0 (as `soniq worker`)
        instead of being raised again once it has shut down."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    return Server


@cli.command()
@common
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8181, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--writable",
    is_flag=True,
    help="Allow cancel, abort, retry, replay, delete, pause and resume (default: read-only).",
)
def dashboard(host: str, port: int, writable: bool) -> None:
    """Serve the web dashboard (needs `pip install 'soniq[dashboard]'`).

    With SONIQ_DASHBOARD_TOKEN set, every request needs that token (the login form sets a
    cookie; scripts send `Authorization: Bearer <token>`). Without it, only a loopback
    --host is allowed. With SONIQ_JOBS_MODULES, the schedules page shows their schedules.
    """
    from soniq.dashboard import create_app  # raises SONIQ_EXTRA_MISSING with the fix

    cfg = current_config()
    app: Soniq = load_apps(cfg)[0] if _module_names(cfg) else _plain_app(cfg)
    token = app.settings.dashboard_token
    if not token and not is_loopback(host):
        fail(
            f"refusing to serve the dashboard on {host!r} without a token: set "
            "SONIQ_DASHBOARD_TOKEN to a long random secret, or use --host 127.0.0.1",
            code=2,
        )
    import uvicorn

    _Server = _server_class()
    web = create_app(app, writable=writable, token=token)
    from soniq.logs import configure_logging

    configure_logging("DEBUG" if cfg.debug else app.settings.log_level, app.settings.log_format)
    config = uvicorn.Config(
        web, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = _Server(config)

    async def go() -> None:
        try:
            await app.ensure_initialized()
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("soniq").info(
                "soniq dashboard on http://%s:%d/ (%s%s)",
                shown,
                port,
                "writable" if writable else "read-only",
                ", token required" if token else "",
            )
            await server.serve()
        finally:
            await app.close()

    run(go)
