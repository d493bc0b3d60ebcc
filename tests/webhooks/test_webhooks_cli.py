"""`soniq webhooks add|list|remove|rotate|deliveries`, table and --json."""

from __future__ import annotations

import pytest

from soniq import Soniq
from tests.cli.cli_helpers import as_json, invoke


@pytest.fixture
def env(pg_url: str, schema_name: str) -> dict[str, str]:
    return {"SONIQ_DATABASE_URL": pg_url, "SONIQ_SCHEMA": schema_name}


async def test_webhooks_cli_round_trip(app: Soniq, env: dict[str, str]) -> None:
    events = ("--event", "job.succeeded", "--event", "job.failed")
    added = as_json(
        await invoke(env, "webhooks", "add", "https://example.com/hook", *events, "--json")
    )
    assert added["events"] == ["job.succeeded", "job.failed"]
    assert added["secret"].startswith("whsec_")
    table = await invoke(env, "webhooks", "add", "http://other.example/x", "--queue", "q")
    assert table.exit_code == 0 and "whsec_" in table.stdout and "not shown again" in table.stdout

    listed = as_json(await invoke(env, "webhooks", "list", "--json"))
    assert [h["url"] for h in listed] == ["https://example.com/hook", "http://other.example/x"]
    plain = await invoke(env, "webhooks", "list")
    assert plain.exit_code == 0 and "example.com" in plain.stdout
    assert "whsec_" not in plain.stdout and "whsec_" not in str(listed)

    rotated = as_json(
        await invoke(env, "webhooks", "rotate", added["id"], "--grace", "5", "--json")
    )
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != added["secret"]
    assert as_json(await invoke(env, "webhooks", "list", "--json"))[0]["rotating"] is True

    bad = await invoke(env, "webhooks", "rotate", added["id"], "--grace", "-1")
    assert bad.exit_code != 0 and "SONIQ_WEBHOOK_INVALID" in bad.output
    bad = await invoke(env, "webhooks", "add", "ftp://example.com/", "--json")
    assert bad.exit_code != 0 and "SONIQ_WEBHOOK_INVALID" in bad.output
    bad = await invoke(env, "webhooks", "add", "https://example.com/", "--event", "job.nope")
    assert bad.exit_code != 0 and "job.nope" in bad.output
    assert len(await app.webhooks.list()) == 2

    assert as_json(await invoke(env, "webhooks", "deliveries", "--json")) == []
    assert (await invoke(env, "webhooks", "deliveries")).exit_code == 0
    assert (await invoke(env, "webhooks", "remove", added["id"])).exit_code == 0
    gone = await invoke(env, "webhooks", "remove", added["id"])
    assert gone.exit_code == 1 and "no webhook" in gone.output
    assert len(await app.webhooks.list()) == 1
