"""``soniq embedded status|stop``: the embedded PostgreSQL of a data directory, from outside."""

from __future__ import annotations

import os

import click

from soniq import embedded as server
from soniq.cli.base import SoniqGroup, cli, fail, json_option
from soniq.cli.render import console, details, emit_json
from soniq.settings import load_settings


def _data_dir_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--data-dir",
        metavar="DIR",
        help="The data directory [env SONIQ_DATA_DIR; default: .soniq].",
    )(fn)


def _data_dir(given: str | None) -> str:
    return given or load_settings().data_dir


@cli.group("embedded", cls=SoniqGroup)
def embedded() -> None:
    """See or stop the embedded PostgreSQL (the default when no database URL is set)."""


@embedded.command("status")
@json_option
@_data_dir_option
def embedded_status(as_json: bool, data_dir: str | None) -> None:
    """Whether the embedded server runs, its URL, and the processes using it."""
    info = server.status(_data_dir(data_dir))
    if as_json:
        emit_json(info)
        return
    pairs = [
        ("data", info["pgdata"]),
        ("state", "running" if info["running"] else "stopped"),
        ("server pid", info["pid"]),
        ("url", info["url"]),
        ("used by", ", ".join(map(str, info["users"])) or "-"),
    ]
    if info["dead_users"]:
        pairs.append(("dead users", ", ".join(map(str, info["dead_users"]))))
    if os.environ.get("SONIQ_DATABASE_URL"):
        pairs.append(("note", "SONIQ_DATABASE_URL is set: apps here use that, not this server"))
    console().print(details("Embedded PostgreSQL", pairs))


@embedded.command("stop")
@_data_dir_option
@click.option("--force", is_flag=True, help="Stop it even while live processes use it.")
def embedded_stop(data_dir: str | None, force: bool) -> None:
    """Stop the embedded server (it starts again on next use)."""
    directory = _data_dir(data_dir)
    info = server.status(directory)
    if not info["running"]:
        click.echo(f"The embedded PostgreSQL in {info['pgdata']} is not running.")
        return
    if info["users"] and not force:
        fail(
            f"the embedded PostgreSQL in {info['pgdata']} is in use by process(es) "
            f"{', '.join(map(str, info['users']))}; stop them first, or pass --force "
            "(their connections are ended)"
        )
    server.stop(directory)
    click.echo(f"Stopped the embedded PostgreSQL in {info['pgdata']} (pid {info['pid']}).")
