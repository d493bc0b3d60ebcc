"""``soniq tasks`` shows each task's flow-control limits: max_concurrency, the per-key limit,
rate limits (named and the task's own) and the execution window with its time zone."""

from __future__ import annotations

from typing import Any

from tests.cli.cli_helpers import as_json, invoke, run_soniq

MODULE = "tests.flow.tasks_cli_jobs"
SETTLE = f"{MODULE}.settle"  # the @app.periodic task (named by its function)


def _cells(line: str) -> list[str]:
    """The cells of a body (│) or header (┃) line."""
    return [c.strip() for c in line.replace("┃", "│").strip().strip("│").split("│")]


def _table(output: str) -> dict[str, dict[str, str]]:
    """The rows of a rich table by their first cell, each cell's wrapped lines joined."""
    lines = output.splitlines()
    header = _cells(next(ln for ln in lines if ln.startswith("┃")))
    rows: list[list[str]] = []
    for line in (ln for ln in lines if ln.startswith("│")):
        cells = _cells(line)
        if cells[0] or not rows:
            rows.append(cells)
        else:  # a wrapped cell's next line
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


async def test_tasks_json_lists_every_limit(cli_env: dict[str, str]) -> None:
    rows = {r["name"]: r for r in as_json(await invoke(cli_env, "tasks", "--jobs-modules",
                                                         MODULE, "--json"))}  # fmt: skip
    charge = rows["pay.charge"]
    assert charge["max_concurrency"] == 3 and charge["max_concurrency_per_key"] == 1
    assert charge["rate_limits"] == [
        {"max": 100, "window": 60.0, "name": "payments-api"},
        {"max": 5, "window": 1.0, "name": None},
    ]
    assert charge["execution_window"] == "* 9-17 * * 1-5"
    assert charge["timezone"] == "Europe/Berlin"

    refund = rows["pay.refund"]  # shares the named limit, nothing else
    assert refund["rate_limits"] == [{"max": 100, "window": 60.0, "name": "payments-api"}]
    assert refund["max_concurrency"] is None and refund["max_concurrency_per_key"] is None
    assert refund["execution_window"] is None and refund["timezone"] is None

    assert rows["pay.report"]["rate_limits"] == [{"max": 2, "window": 300.0, "name": None}]

    settle = rows[SETTLE]  # periodic: one time zone for its schedule and its window
    assert settle["max_concurrency"] == 1
    assert settle["execution_window"] == "* 6-22 * * *"
    assert settle["timezone"] == "America/New_York"
    assert settle["schedule"] == ["cron 0 8 * * * America/New_York"]

    plain = rows["pay.plain"]
    assert (
        plain["max_concurrency"],
        plain["max_concurrency_per_key"],
        plain["rate_limits"],
        plain["execution_window"],
        plain["timezone"],
    ) == (None, None, [], None, None)


async def test_tasks_table_shows_limits_and_window(cli_env: dict[str, str]) -> None:
    result = await invoke(cli_env, "tasks", "--jobs-modules", MODULE)
    assert result.exit_code == 0, result.output
    rows = _table(result.stdout)
    assert rows["pay.charge"]["Limits"] == (
        "max 3; max 1 per key; 100 per 60s (payments-api); 5 per 1s; "
        "window * 9-17 * * 1-5 Europe/Berlin"
    )
    assert rows["pay.refund"]["Limits"] == "100 per 60s (payments-api)"
    assert rows["pay.report"]["Limits"] == "2 per 300s"
    assert rows["pay.plain"]["Limits"] == "-"
    settle = next(v for k, v in rows.items() if SETTLE.startswith(k))  # the name may be cut
    assert settle["Limits"] == "max 1; window * 6-22 * * * America/New_York"


async def test_tasks_table_limits_leave_room_for_the_schedule(cli_env: dict[str, str]) -> None:
    result = await invoke(cli_env, "tasks", "--jobs-modules", MODULE)
    assert result.exit_code == 0, result.output
    rows = _table(result.stdout)
    assert SETTLE in rows, list(rows)  # the task name is not cut
    assert rows[SETTLE]["Schedule"] == "cron 0 8 * * * America/New_York"


def test_tasks_as_a_real_process(cli_env: dict[str, str]) -> None:
    proc = run_soniq(cli_env, "tasks", "--jobs-modules", MODULE, "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    charge = next(r for r in rows if r["name"] == "pay.charge")
    assert [r["name"] for r in charge["rate_limits"]] == ["payments-api", None]


async def test_a_named_limit_with_two_sizes_is_refused_on_import(cli_env: dict[str, str]) -> None:
    result = await invoke(cli_env, "tasks", "--jobs-modules", "tests.flow.tasks_cli_bad")
    assert result.exit_code != 0
    assert "SONIQ_SETTINGS_INVALID" in result.stderr
    assert "'shared'" in result.stderr and "same max and window" in result.stderr
