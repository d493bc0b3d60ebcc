"""Options every command shares, the error handling around them, and the ``soniq`` group.

Options may be given on the group or on the command; both land in one :class:`Config`.
Errors become one line on stderr and an exit code (0 ok, 1 failure, 2 usage).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import asyncpg
import click

from soniq.errors import JOBS_MODULES_MISSING, SETTINGS_INVALID, SoniqError

F = TypeVar("F", bound=Callable[..., Any])

USAGE_CODES = {SETTINGS_INVALID, JOBS_MODULES_MISSING}


@dataclass
class Config:
    """Options given on the group or the command (the command's win)."""

    database_url: str | None = None
    schema: str | None = None
    jobs_modules: str | None = None
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def current_config() -> Config:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Config):
        root.obj = Config()
    return root.obj


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(current_config(), name, value)

    return callback


def _config_option(flag: str, help: str, **attrs: Any) -> Callable[[F], F]:
    """``flag`` as an option that is not passed to the command but stored in the
    :class:`Config` field of the same name (``--database-url`` -> ``database_url``)."""
    name = flag.lstrip("-").replace("-", "_")
    return click.option(flag, expose_value=False, callback=_store(name), help=help, **attrs)


def common(fn: F) -> F:
    """``--database-url``, ``--schema``, ``--jobs-modules`` and ``--debug``."""
    options = [
        _config_option(
            "--database-url",
            "PostgreSQL URL [env SONIQ_DATABASE_URL; default: the embedded server].",
            metavar="URL",
        ),
        _config_option(
            "--schema",
            "Schema holding soniq's tables [env SONIQ_SCHEMA; default: public].",
            metavar="NAME",
        ),
        _config_option(
            "--jobs-modules",
            "Comma-separated modules defining your Soniq app [env SONIQ_JOBS_MODULES].",
            metavar="MODULES",
        ),
        _config_option("--debug", "Show tracebacks and debug logs.", is_flag=True, default=None),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


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


# -- the group ---------------------------------------------------------------------------------


@click.group(cls=SoniqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.version_option(package_name="soniq", prog_name="soniq")
def cli() -> None:
    """soniq: background jobs on PostgreSQL.

    Every command reads SONIQ_* settings from the environment; --database-url and
    --schema override them. Exit codes: 0 ok, 1 failure, 2 usage error.
    """
    current_config()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="soniq")
