"""Settings: defaults, SONIQ_* environment, keyword precedence, refusal of bad values."""

from __future__ import annotations

import pytest

from soniq import Soniq, SoniqError
from soniq.settings import Settings, load_settings

# API.md's settings table, name -> default.
API_DEFAULTS = {
    "database_url": None,
    "schema_name": "public",
    "jobs_modules": None,
    "concurrency": 4,
    "queues": None,
    "max_retries": 3,
    "priority": 100,
    "enqueue_validation": "strict",
    "poll_interval": 5,
    "heartbeat_interval": 5,
    "heartbeat_timeout": 30,
    "cleanup_interval": 10,
    "job_timeout": None,
    "shutdown_timeout": 30,
    "result_ttl": 86400,
    "snooze_max_seconds": 86400,
    "sync_handler_pool_size": 8,
    "pool_min_size": 2,
    "pool_max_size": 20,
    "log_level": "INFO",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SONIQ_* variable from the outer environment leaks into these tests."""
    import os

    for key in list(os.environ):
        if key.startswith("SONIQ_"):
            monkeypatch.delenv(key)


def test_defaults_match_api() -> None:
    settings = load_settings()
    for name, default in API_DEFAULTS.items():
        assert getattr(settings, name) == default, name
    assert settings.data_dir == ".soniq"


def test_every_api_setting_exists() -> None:
    fields = set(Settings.model_fields)
    assert set(API_DEFAULTS) <= fields


@pytest.mark.parametrize(
    "overrides",
    [
        {"concurrency": 0},
        {"concurrency": -1},
        {"poll_interval": 0},
        {"poll_interval": -0.5},
        {"heartbeat_interval": 0},
        {"heartbeat_timeout": -1},
        {"cleanup_interval": 0},
        {"shutdown_timeout": 0},
        {"result_ttl": 0},
        {"snooze_max_seconds": -1},
        {"sync_handler_pool_size": 0},
        {"pool_min_size": -1},
        {"pool_max_size": 0},
        {"pool_min_size": 10, "pool_max_size": 5},
        {"job_timeout": 0},
        {"job_timeout": -3},
        {"max_retries": -1},
        {"heartbeat_timeout": 5, "heartbeat_interval": 5},
        {"heartbeat_timeout": 2, "heartbeat_interval": 3},
        {"enqueue_validation": "loose"},
        {"log_level": "LOUD"},
        {"schema": "Bad-Schema"},
        {"schema": "x; DROP TABLE y"},
        {"queues": "ok,bad queue"},
        {"concurrency": "many"},
        {"no_such_setting": 1},
    ],
)
def test_invalid_values_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(SoniqError) as info:
        Soniq(**overrides)
    assert info.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert "SONIQ_" in str(info.value)  # the message names where to fix it


def test_heartbeat_error_names_both_values() -> None:
    with pytest.raises(
        SoniqError, match="heartbeat_timeout must be greater than heartbeat_interval"
    ):
        load_settings(heartbeat_timeout=3, heartbeat_interval=4)


def test_small_values_accepted() -> None:
    settings = load_settings(
        heartbeat_timeout=2,
        heartbeat_interval=0.5,
        cleanup_interval=1,
        poll_interval=0.5,
        shutdown_timeout=0.1,
        result_ttl=0.5,
        job_timeout=0.01,
        concurrency=1,
        max_retries=0,
    )
    assert settings.heartbeat_timeout == 2
    assert settings.cleanup_interval == 1
    assert settings.poll_interval == 0.5
    assert settings.max_retries == 0


def test_env_vars_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIQ_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("SONIQ_SCHEMA", "my_schema")
    monkeypatch.setenv("SONIQ_CONCURRENCY", "7")
    monkeypatch.setenv("SONIQ_QUEUES", "a, b,,c")
    monkeypatch.setenv("SONIQ_JOBS_MODULES", "pkg.jobs,other.jobs")
    monkeypatch.setenv("SONIQ_POLL_INTERVAL", "0.25")
    monkeypatch.setenv("SONIQ_ENQUEUE_VALIDATION", "warn")
    monkeypatch.setenv("SONIQ_JOB_TIMEOUT", "12.5")
    monkeypatch.setenv("SONIQ_LOG_LEVEL", "debug")
    s = load_settings()
    assert s.database_url == "postgresql://u@h/db"
    assert s.schema_name == "my_schema"
    assert s.concurrency == 7
    assert s.queues == ["a", "b", "c"]
    assert s.jobs_modules == ["pkg.jobs", "other.jobs"]
    assert s.poll_interval == 0.25
    assert s.enqueue_validation == "warn"
    assert s.job_timeout == 12.5
    assert s.log_level == "DEBUG"


def test_invalid_env_value_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIQ_HEARTBEAT_TIMEOUT", "1")
    with pytest.raises(SoniqError) as info:
        Soniq()
    assert info.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert "heartbeat_timeout" in str(info.value)


def test_kwargs_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIQ_DATABASE_URL", "postgresql://env@h/db")
    monkeypatch.setenv("SONIQ_SCHEMA", "from_env")
    monkeypatch.setenv("SONIQ_CONCURRENCY", "7")
    monkeypatch.setenv("SONIQ_QUEUES", "a,b")
    app = Soniq(
        database_url="postgresql://kw@h/db", schema="from_kwargs", concurrency=2, queues=["z"]
    )
    assert app.settings.database_url == "postgresql://kw@h/db"
    assert app.schema == "from_kwargs"
    assert app.settings.concurrency == 2
    assert app.settings.queues == ["z"]


def test_constructor_never_connects() -> None:
    # an unreachable URL is fine until the first call that needs the database
    app = Soniq(database_url="postgresql://nobody@127.0.0.1:1/none")
    assert app.settings.database_url is not None


async def test_unreachable_database_error_names_fix() -> None:
    app = Soniq(database_url="postgresql://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(SoniqError) as info:
        await app.get_queue_stats()
    assert info.value.error_code == "SONIQ_DATABASE_UNAVAILABLE"
    assert "SONIQ_DATABASE_URL" in str(info.value)
    assert "secret" not in str(info.value)  # the password is redacted


def test_instances_have_own_settings() -> None:
    a = Soniq(concurrency=1, schema="a_schema")
    b = Soniq(concurrency=9, schema="b_schema")
    assert (a.settings.concurrency, a.schema) == (1, "a_schema")
    assert (b.settings.concurrency, b.schema) == (9, "b_schema")
    assert a.tasks is not b.tasks


def test_configuration_doc_lists_every_setting() -> None:
    """docs/configuration.md has a row per setting: name, SONIQ_ variable, the real default."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].startswith("SONIQ_"):
            rows[cells[0]] = (cells[1], cells[2])
    for field, info in Settings.model_fields.items():
        name = "schema" if field == "schema_name" else field
        assert name in rows, f"{name} is missing from docs/configuration.md"
        env, shown = rows[name]
        assert env == f"SONIQ_{name.upper()}"
        default = info.default
        if default is None:
            assert shown in {"unset", "all"}, name
        elif isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(shown) == default, name
        else:
            assert shown == str(default), name


def test_unknown_soniq_variables_warn_once_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from soniq import settings as settings_module

    monkeypatch.setattr(settings_module, "_warned_env", set())
    monkeypatch.setenv("SONIQ_CONCURENCY", "3")
    monkeypatch.setenv("SONIQ_ZZZ_QQQ", "1")
    monkeypatch.setenv("SONIQ_SCHEMA", "s1")  # an alias, known
    monkeypatch.setenv("SONIQ_LOG_LEVEL", "INFO")
    with caplog.at_level("WARNING", logger="soniq"):
        Soniq("postgresql://x@127.0.0.1:1/y")
        Soniq("postgresql://x@127.0.0.1:1/y")
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 2, lines
    typo = next(line for line in lines if "SONIQ_CONCURENCY" in line)
    assert "did you mean SONIQ_CONCURRENCY?" in typo
    other = next(line for line in lines if "SONIQ_ZZZ_QQQ" in line)
    assert "SONIQ_DATABASE_URL" in other  # no close match: the valid names are listed
