"""The maintenance loop's timing, with its passes replaced by recorders (the passes
themselves run against PostgreSQL in tests/db and tests/process)."""

from __future__ import annotations

from typing import Any

import pytest

from soniq import Soniq, maintenance


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    async def rescue(app: Any, *_: Any) -> int:
        seen.append("rescue")
        return 2

    async def prune(app: Any, *_: Any) -> tuple[int, int]:
        seen.append("prune")
        raise OSError("database went away")  # a failing pass must not stop the others

    async def vacuum(app: Any, *_: Any) -> bool:
        seen.append("vacuum")
        return False

    monkeypatch.setattr(maintenance, "rescue_stale", rescue)
    monkeypatch.setattr(maintenance, "prune", prune)
    monkeypatch.setattr(maintenance, "vacuum_if_needed", vacuum)
    return seen


async def test_every_pass_runs_at_once_then_on_its_own_period(calls: list[str]) -> None:
    rescued: list[bool] = []
    app = Soniq(database_url="postgresql://unused/db", cleanup_interval=1)
    loop = maintenance.Maintenance(app, on_rescued=lambda: rescued.append(True))
    assert loop.periods == {"rescue": 1.0, "vacuum": 2.0, "prune": 60.0}

    await loop.run_due()
    assert calls == ["rescue", "vacuum", "prune"]  # prune failed: logged, not raised
    assert rescued == [True]

    calls.clear()
    await loop.run_due()
    assert calls == []  # nothing is due again yet

    loop._last["rescue"] -= 1.0  # as if a second had passed
    await loop.run_due()
    assert calls == ["rescue"]
