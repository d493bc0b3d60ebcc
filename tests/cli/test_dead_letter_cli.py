"""`soniq dead-letter`: list, show, replay, delete; bulk confirmation, and a bulk replay
interrupted halfway then run again replays each entry exactly once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import asyncpg
import pytest

from soniq import JobStatus, Soniq
from tests.cli.cli_helpers import as_json, invoke
from tests.conftest import SONIQ_BIN, wait_for


@pytest.fixture
def env(pg_url: str, schema_name: str) -> dict[str, str]:
    return {"SONIQ_DATABASE_URL": pg_url, "SONIQ_SCHEMA": schema_name}


async def dead_entries(app: Soniq, n: int, name: str = "dl.bad") -> list[str]:
    """``n`` dead-lettered jobs of task ``name`` (args ``{"n": i}``), oldest first."""

    @app.job(name=name, queue="critical", retries=0)
    async def bad(n: int) -> None:
        raise ValueError(f"cannot handle {n}")

    ids = await app.enqueue_many(bad, [{"n": i} for i in range(n)])
    await app.run_worker(run_once=True, concurrency=8)
    for job_id in ids:
        assert (await app.get_job(job_id))["status"] is JobStatus.DEAD_LETTER
    return ids


async def replays(app: Soniq) -> dict[str, int]:
    entries = await app.dead_letter.list_dead_letter_jobs(limit=10_000)
    return {e.id: e.resurrection_count for e in entries}


async def new_jobs_args(app: Soniq, name: str = "dl.bad") -> Counter[int]:
    rows = await app.list_jobs(status="queued", job_name=name, limit=10_000)
    return Counter(r["args"]["n"] for r in rows)


async def test_list_and_show(app, env):
    ids = await dead_entries(app, 3)
    result = await invoke(env, "dead-letter", "list")
    assert result.exit_code == 0, result.output
    assert "Dead letter: 3 shown of 3" in result.stdout
    assert all(i in result.stdout for i in ids)
    assert "ValueError: cannot handle 2" in result.stdout
    assert "max_retries_exceeded 3" in result.stdout

    data = as_json(await invoke(env, "dead-letter", "list", "--json", "--limit", "2"))
    assert data["total"] == 3 and data["by_reason"] == {"max_retries_exceeded": 3}
    assert len(data["entries"]) == 2
    assert {e["id"] for e in data["entries"]} <= set(ids)
    assert data["entries"][0]["job_name"] == "dl.bad"

    shown = as_json(await invoke(env, "dead-letter", "show", ids[1], ids[0], "--json"))
    assert [e["args"] for e in shown] == [{"n": 1}, {"n": 0}]
    result = await invoke(env, "dead-letter", "show", ids[2])
    assert f"Dead-letter entry {ids[2]}" in result.stdout and '{"n": 2}' in result.stdout
    assert "Traceback of attempt 1" in result.stdout
    assert 'raise ValueError(f"cannot handle {n}")' in result.stdout
    assert [e["attempt"] for e in shown[0]["errors"]] == [1]
    assert shown[0]["errors"][0]["traceback"].rstrip().endswith("ValueError: cannot handle 1")

    missing = await invoke(env, "dead-letter", "show", str(uuid.uuid4()))
    assert missing.exit_code == 1 and "no dead-letter entry" in missing.stderr
    empty = await invoke(env, "dead-letter", "list", "--job-name", "other.task")
    assert empty.exit_code == 0 and "0 shown of 3" in empty.stdout


async def test_replay_ids_once_unless_again(app, env):
    ids = await dead_entries(app, 3)
    result = await invoke(env, "dead-letter", "replay", ids[0], ids[2])
    assert result.exit_code == 0, result.output
    assert "Replayed 2 of 2 entries." in result.stdout
    assert await new_jobs_args(app) == Counter({0: 1, 2: 1})

    again = await invoke(env, "dead-letter", "replay", ids[0], "--json")
    data = as_json(again)
    assert data["replayed"] == [] and data["skipped"][0]["id"] == ids[0]
    assert await new_jobs_args(app) == Counter({0: 1, 2: 1})

    forced = as_json(await invoke(env, "dead-letter", "replay", ids[0], "--again", "--json"))
    new_id = forced["replayed"][0]["result"]
    assert (await app.get_job(new_id))["args"] == {"n": 0}
    assert (await replays(app))[ids[0]] == 2

    missing = await invoke(env, "dead-letter", "replay", ids[1], str(uuid.uuid4()))
    assert missing.exit_code == 1 and "nothing was replayed" in missing.stderr
    assert (await replays(app))[ids[1]] == 0


async def test_bulk_replay_asks_first(app, env):
    ids = await dead_entries(app, 4)
    no = await invoke(env, "dead-letter", "replay", "--all", input="n\n")
    assert no.exit_code == 1 and "Replay 4 dead-letter entries?" in no.stderr
    assert "nothing changed" in no.stderr
    assert set((await replays(app)).values()) == {0}

    eof = await invoke(env, "dead-letter", "replay", "--all", input="")
    assert eof.exit_code == 1 and set((await replays(app)).values()) == {0}

    yes = await invoke(env, "dead-letter", "replay", "--all", input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "Replayed 4 of 4 entries." in yes.stdout
    assert await replays(app) == {i: 1 for i in ids}
    assert await new_jobs_args(app) == Counter(range(4))


async def test_bulk_selection_by_name_and_limit(app, env):
    await dead_entries(app, 3, name="dl.bad")
    other = await dead_entries(app, 2, name="dl.other")
    result = await invoke(env, "dead-letter", "replay", "--job-name", "dl.other", "--yes")
    assert result.exit_code == 0 and "Replayed 2 of 2 entries." in result.stdout
    counts = await replays(app)
    assert [counts[i] for i in other] == [1, 1] and sum(counts.values()) == 2

    limited = await invoke(env, "dead-letter", "replay", "--all", "--limit", "2", "--yes")
    assert limited.exit_code == 0, limited.output
    assert sum((await replays(app)).values()) == 4  # the two never-replayed newest ones


async def test_delete_ids_and_bulk(app, env):
    ids = await dead_entries(app, 5)
    result = await invoke(env, "dead-letter", "delete", ids[0])
    assert result.exit_code == 0 and "Deleted 1 of 1 entry." in result.stdout
    assert await app.get_job(ids[0]) is None

    no = await invoke(env, "dead-letter", "delete", "--all", input="n\n")
    assert no.exit_code == 1 and len(await replays(app)) == 4

    data = as_json(await invoke(env, "dead-letter", "delete", "--all", "--yes", "--json"))
    assert sorted(d["id"] for d in data["deleted"]) == sorted(ids[1:])
    assert await replays(app) == {}
    nothing = await invoke(env, "dead-letter", "delete", "--all", "--yes")
    assert nothing.exit_code == 0 and "Deleted 0 of 0 entries." in nothing.stdout


async def test_bulk_replay_interrupted_then_rerun_replays_each_once(
    app, cli_env, pg_url, schema_name
):
    total = 30
    await dead_entries(app, total)
    order = [e.id for e in await app.dead_letter.list_dead_letter_jobs(limit=total)]
    blocked = order[total // 2]  # the replay of this entry waits on our row lock

    holder = await asyncpg.connect(pg_url)
    tx = holder.transaction()
    await tx.start()
    await holder.execute(
        f'SELECT 1 FROM "{schema_name}".soniq_jobs WHERE id = $1 FOR UPDATE', uuid.UUID(blocked)
    )
    proc = await asyncio.create_subprocess_exec(
        SONIQ_BIN,
        "dead-letter",
        "replay",
        "--all",
        "--yes",
        env=cli_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def first_half_done():
            counts = await replays(app)
            return sum(counts.values()) == total // 2

        await wait_for(first_half_done, timeout=30, message="first half replayed")
        proc.send_signal(signal.SIGINT)
        line = b""
        while b"interrupt" not in line:
            line = await asyncio.wait_for(proc.stderr.readline(), 15)
            assert line, "replay exited before acknowledging the interrupt"
        await tx.rollback()  # the entry in progress completes, then the command stops
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await holder.close()

    assert proc.returncode == 1, (out, err)
    assert b"interrupted after 16" in err and b"run the same command again" in err
    counts = await replays(app)
    assert sum(counts.values()) == total // 2 + 1
    assert all(counts[i] == 1 for i in order[: total // 2 + 1])

    rerun = await asyncio.create_subprocess_exec(
        SONIQ_BIN,
        "dead-letter",
        "replay",
        "--all",
        "--yes",
        env=cli_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(rerun.communicate(), 60)
    assert rerun.returncode == 0, err
    assert f"Replayed {total // 2 - 1} of {total} entries; skipped {total // 2 + 1}" in out.decode()
    assert await replays(app) == {i: 1 for i in order}
    assert await new_jobs_args(app) == Counter(range(total))  # each entry replayed once
