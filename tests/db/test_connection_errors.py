"""What a failed connection says (issue 18, item 9): each cause with its own fix."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from soniq import Soniq, SoniqError


def _with(url: str, **parts: str) -> str:
    split = urlsplit(url)
    netloc = split.netloc
    if "user" in parts:
        host = netloc.rsplit("@", 1)[-1]
        netloc = f"{parts['user']}:secret@{host}"
    return urlunsplit(split._replace(netloc=netloc, path=parts.get("path", split.path)))


async def _error(url: str) -> SoniqError:
    app = Soniq(url)
    with pytest.raises(SoniqError) as info:
        await app.ensure_initialized()
    await app.close()
    assert info.value.error_code == "SONIQ_DATABASE_UNAVAILABLE"
    return info.value


async def test_an_unknown_user_reads_as_a_refused_login(pg_url: str) -> None:
    err = await _error(_with(pg_url, user="no_such_role_18"))
    assert "refused the login" in err.message and "password" in err.message
    assert "secret" not in str(err)
    assert "start the server" not in err.message


async def test_no_free_connection_slot_names_the_budget(pg_url: str) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("DROP ROLE IF EXISTS soniq_full_18")
        await admin.execute("CREATE ROLE soniq_full_18 LOGIN PASSWORD 'secret' CONNECTION LIMIT 0")
        err = await _error(_with(pg_url, user="soniq_full_18"))
    finally:
        await admin.execute("DROP ROLE IF EXISTS soniq_full_18")
        await admin.close()
    assert "no free connection slot" in err.message and "max_connections" in err.message
    assert "start the server" not in err.message and "secret" not in str(err)


async def test_a_missing_database_names_soniq_setup(pg_url: str) -> None:
    err = await _error(_with(pg_url, path="/no_such_db_18"))
    assert "does not exist" in err.message and "`soniq setup`" in err.message


async def test_an_unreachable_server_says_start_it() -> None:
    err = await _error("postgresql://u:secret@127.0.0.1:1/db")
    assert "cannot reach PostgreSQL" in err.message and "start the server" in err.message
    assert "secret" not in str(err)


@pytest.mark.parametrize("url", ["mysql://u:pw@localhost/db", "localhost:5432/db", "sqlite:///x"])
def test_a_url_that_is_not_postgresql_is_refused_at_once(url: str) -> None:
    with pytest.raises(SoniqError) as info:
        Soniq(url)
    assert info.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert "postgresql://" in info.value.message
    assert "pw" not in str(info.value)
