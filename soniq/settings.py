"""Every setting and its default, in one place.

Values come from keyword arguments to :class:`soniq.Soniq`, then ``SONIQ_<NAME>``
environment variables, then the defaults below. Values that cannot work raise
``SoniqError(SONIQ_SETTINGS_INVALID)``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from soniq.errors import SETTINGS_INVALID, SoniqError

NAME_RE = re.compile(r"^[A-Za-z_][\w.:-]{0,199}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_][\w.:-]{0,99}$")
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        return [p for p in parts if p] or None
    return value


class Settings(BaseSettings):
    """soniq settings; see API.md for the meaning of each."""

    model_config = SettingsConfigDict(
        env_prefix="SONIQ_", extra="forbid", validate_default=True, case_sensitive=False
    )

    database_url: str | None = None
    schema_name: str = "public"
    data_dir: str = ".soniq"
    jobs_modules: Annotated[list[str] | None, NoDecode] = None
    concurrency: int = 4
    queues: Annotated[list[str] | None, NoDecode] = None
    max_retries: int = 3
    priority: int = 100
    enqueue_validation: Literal["strict", "warn", "none"] = "strict"
    poll_interval: float = 5.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    cleanup_interval: float = 10.0
    job_timeout: float | None = None
    shutdown_timeout: float = 30.0
    result_ttl: float = 86400.0
    snooze_max_seconds: float = 86400.0
    idempotency_ttl: float = 86400.0
    sync_handler_pool_size: int = 8
    pool_min_size: int = 2
    pool_max_size: int = 20
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # The worker's own bookkeeping (claims, outcomes) commits without waiting for the WAL
    # flush unless this is on. Enqueues always wait. See docs/concepts.md, "Durability".
    worker_synchronous_commit: bool = False

    @field_validator("jobs_modules", "queues", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: list[str] | None) -> list[str] | None:
        for q in value or []:
            if not QUEUE_RE.match(q):
                raise ValueError(f"queue name {q!r} must match {QUEUE_RE.pattern}")
        return value

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        if not SCHEMA_RE.match(value):
            raise ValueError(
                f"schema {value!r} must be lower-case letters, digits and _ "
                f"(pattern {SCHEMA_RE.pattern})"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        positive = [
            "concurrency",
            "poll_interval",
            "heartbeat_interval",
            "heartbeat_timeout",
            "cleanup_interval",
            "shutdown_timeout",
            "result_ttl",
            "snooze_max_seconds",
            "idempotency_ttl",
            "sync_handler_pool_size",
            "pool_min_size",
            "pool_max_size",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.job_timeout is not None and self.job_timeout <= 0:
            raise ValueError("job_timeout must be greater than 0 (or unset for no timeout)")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                "heartbeat_timeout must be greater than heartbeat_interval "
                f"(got {self.heartbeat_timeout} <= {self.heartbeat_interval})"
            )
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        if self.pool_max_size < 2:
            raise ValueError("pool_max_size must be at least 2")
        return self


_ALIASES = {"schema": "schema_name"}


def load_settings(**overrides: Any) -> Settings:
    """Build settings from keyword overrides and the environment, or raise SoniqError."""
    import os

    kwargs = {_ALIASES.get(k, k): v for k, v in overrides.items() if v is not None}
    if "schema_name" not in kwargs and os.environ.get("SONIQ_SCHEMA"):
        kwargs["schema_name"] = os.environ["SONIQ_SCHEMA"]
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SoniqError(
            SETTINGS_INVALID,
            f"invalid soniq settings: {problems}. Fix the keyword argument or the "
            "matching SONIQ_<NAME> environment variable.",
        ) from None
