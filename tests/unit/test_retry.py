"""Retry delays: fixed, per-attempt lists, backoff, cap and jitter (randomness injected)."""

from __future__ import annotations

import pytest

from soniq import Soniq, SoniqError
from soniq.retry import RetryPolicy


def policy(
    delay: float | list[float] = 0,
    backoff: bool = False,
    max_delay: float | None = None,
    jitter: bool = True,
) -> RetryPolicy:
    return RetryPolicy.build(delay, backoff, max_delay, jitter)


def test_default_is_immediate() -> None:
    p = policy()
    assert [p.delay_for(n) for n in (1, 2, 5)] == [0.0, 0.0, 0.0]


def test_fixed_delay_ignores_jitter_without_backoff() -> None:
    p = policy(3, jitter=True)
    assert [p.delay_for(n, rand=lambda: 0.99) for n in (1, 2, 3)] == [3.0, 3.0, 3.0]


def test_list_of_delays_last_repeats() -> None:
    p = policy([1, 5, 30])
    assert [p.delay_for(n) for n in (1, 2, 3, 4, 10)] == [1.0, 5.0, 30.0, 30.0, 30.0]


def test_backoff_doubles() -> None:
    p = policy(2, backoff=True, jitter=False)
    assert [p.delay_for(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]


def test_backoff_without_base_starts_at_one_second() -> None:
    p = policy(0, backoff=True, jitter=False)
    assert [p.delay_for(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_backoff_capped_by_max_delay() -> None:
    p = policy(10, backoff=True, max_delay=25, jitter=False)
    assert [p.delay_for(n) for n in (1, 2, 3, 8)] == [10.0, 20.0, 25.0, 25.0]


def test_jitter_keeps_between_half_and_full() -> None:
    p = policy(8, backoff=True, jitter=True)
    assert p.delay_for(1, rand=lambda: 0.0) == 4.0
    assert p.delay_for(1, rand=lambda: 1.0) == 8.0
    assert p.delay_for(2, rand=lambda: 0.5) == 12.0
    assert p.delay_for(3, rand=lambda: 0.0) == 16.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": -1},
        {"delay": True},
        {"delay": []},
        {"delay": [1, -2]},
        {"delay": ["soon"]},
        {"delay": 1, "max_delay": -5},
    ],
)
def test_invalid_options_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(SoniqError) as info:
        policy(**kwargs)  # type: ignore[arg-type]
    assert info.value.error_code == "SONIQ_TASK_INVALID"


def test_decorator_builds_policy_and_attempts() -> None:
    app = Soniq(max_retries=5)

    @app.job(name="r.list", retries=2, retry_delay=[1, 2])
    async def listed() -> None: ...

    @app.job(name="r.default")
    async def default() -> None: ...

    @app.job(name="r.alias", max_retries=1)
    async def alias() -> None: ...

    t = app.tasks
    assert t["r.list"].retries == 2
    assert t["r.list"].retry.delay == (1.0, 2.0)
    assert t["r.default"].retries is None  # falls back to the instance's max_retries
    assert t["r.alias"].retries == 1
    with pytest.raises(SoniqError) as info:
        app.job(name="r.both", retries=1, max_retries=2)
    assert info.value.error_code == "SONIQ_TASK_INVALID"
    with pytest.raises(SoniqError):
        app.job(name="r.neg", retry_delay=-1)(default)
