"""soniq.windows.ExecutionWindow on its own (no database): which instants are open, when the
window next opens, in UTC and across both DST changes of Europe/Berlin and America/New_York.

Berlin 2026: 2026-03-29 01:00 UTC clocks jump 02:00 -> 03:00 (02:xx never happens);
2026-10-25 01:00 UTC they fall back 03:00 -> 02:00 (02:xx happens twice: 00:xx and 01:xx
UTC). New York 2026: 2026-03-08 07:00 UTC 02:00 -> 03:00; 2026-11-01 06:00 UTC 02:00 ->
01:00 (01:xx happens at 05:xx and 06:xx UTC).
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta, timezone

import pytest

from soniq import Soniq, SoniqError
from soniq.windows import ExecutionWindow

UTC = timezone.utc


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
       microsecond: int = 0) -> datetime:  # fmt: skip
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def window(expression: str, tz: str = "UTC") -> ExecutionWindow:
    return ExecutionWindow(expression, tz, "test.task")


def minutes_open(w: ExecutionWindow, start: datetime, end: datetime) -> list[datetime]:
    """Every UTC minute in [start, end) at which ``w`` is open."""
    out, t = [], start
    while t < end:
        if w.is_open(t):
            out.append(t)
        t += timedelta(minutes=1)
    return out


# --- UTC ---------------------------------------------------------------------------------


def test_utc_window_is_open_on_matching_minutes_only() -> None:
    w = window("* 9-17 * * *")
    assert not w.is_open(at(2026, 12, 3, 8, 59, 59))
    assert w.is_open(at(2026, 12, 3, 9, 0))
    assert w.is_open(at(2026, 12, 3, 13, 30, 12, 5000))
    assert w.is_open(at(2026, 12, 3, 17, 59, 59))  # 17-: every minute of the hour 17
    assert not w.is_open(at(2026, 12, 3, 18, 0))


def test_open_is_judged_on_the_local_minute_of_any_aware_instant() -> None:
    w = window("* 9 * * *", "Europe/Berlin")  # winter: Berlin is UTC+1
    berlin = w.tz
    assert w.is_open(datetime(2026, 12, 3, 9, 15, tzinfo=berlin))
    assert w.is_open(at(2026, 12, 3, 8, 15))  # the same instant in UTC
    assert not w.is_open(at(2026, 12, 3, 9, 15))  # 10:15 in Berlin
    tokyo = window("* * * * *", "Asia/Tokyo").tz
    assert w.is_open(datetime(2026, 12, 3, 17, 15, tzinfo=tokyo))  # 08:15 UTC too


def test_next_open_inside_the_window_is_now() -> None:
    w = window("* 9-17 * * *")
    now = at(2026, 12, 3, 10, 20, 30)
    assert w.next_open(now) == now
    assert w.seconds_until_open(now) == 0.0


def test_next_open_outside_the_window() -> None:
    w = window("* 9-17 * * *")
    assert w.next_open(at(2026, 12, 3, 18, 0)) == at(2026, 12, 4, 9, 0)
    assert w.next_open(at(2026, 12, 3, 7, 30, 45)) == at(2026, 12, 3, 9, 0)
    assert w.seconds_until_open(at(2026, 12, 3, 8, 59, 30)) == 30.0
    w = window("*/15 * * * *")
    assert w.next_open(at(2026, 12, 3, 10, 1)) == at(2026, 12, 3, 10, 15)
    assert w.next_open(at(2026, 12, 3, 10, 15, 59)) == at(2026, 12, 3, 10, 15, 59)  # open minute
    assert w.next_open(at(2026, 12, 3, 10, 16)) == at(2026, 12, 3, 10, 30)


def test_next_open_is_the_first_open_instant_at_or_after() -> None:
    w = window("*/7 3-5 * * 2,4")
    start = at(2026, 12, 1, 0, 0)
    opened = minutes_open(w, start, start + timedelta(days=9))  # every open minute
    assert opened and all(t.weekday() in (1, 3) and 3 <= t.hour <= 5 for t in opened)
    for step in range(0, 7 * 24 * 60, 37):
        after = start + timedelta(minutes=step, seconds=17)
        minute = after.replace(second=0)
        expected = after if minute in opened else opened[bisect.bisect_right(opened, minute)]
        assert w.next_open(after) == expected, after


# --- weekdays ----------------------------------------------------------------------------


def test_weekday_window_stays_shut_over_the_weekend() -> None:
    w = window("* 9-17 * * 1-5", "Europe/Berlin")  # December: UTC+1
    assert w.is_open(at(2026, 12, 4, 16, 59))  # Friday 17:59 Berlin
    assert not w.is_open(at(2026, 12, 4, 17, 0))  # Friday 18:00 Berlin
    saturday, sunday = at(2026, 12, 5, 11, 0), at(2026, 12, 6, 11, 0)
    assert not w.is_open(saturday) and not w.is_open(sunday)
    monday_9 = at(2026, 12, 7, 8, 0)  # Monday 09:00 Berlin
    for t in (at(2026, 12, 4, 17, 0), saturday, sunday, at(2026, 12, 7, 7, 59, 30)):
        assert w.next_open(t) == monday_9, t
    assert w.seconds_until_open(sunday) == (monday_9 - sunday).total_seconds()
    assert minutes_open(w, at(2026, 12, 4, 17, 0), monday_9) == []
    assert w.is_open(monday_9)


def test_sunday_is_0_and_7() -> None:
    sunday = at(2026, 12, 6, 12, 0)
    assert window("* * * * 0").is_open(sunday) and window("* * * * 7").is_open(sunday)
    assert not window("* * * * 1-6").is_open(sunday)


# --- DST: Europe/Berlin ------------------------------------------------------------------


def test_berlin_window_follows_the_wall_clock_across_spring_forward() -> None:
    w = window("* 9-17 * * *", "Europe/Berlin")
    assert w.next_open(at(2026, 3, 28, 0, 0)) == at(2026, 3, 28, 8, 0)  # CET, UTC+1
    assert w.next_open(at(2026, 3, 28, 17, 0)) == at(2026, 3, 29, 7, 0)  # CEST, UTC+2
    assert w.is_open(at(2026, 3, 29, 15, 59)) and not w.is_open(at(2026, 3, 29, 16, 0))
    assert not w.is_open(at(2026, 3, 28, 7, 59)) and w.is_open(at(2026, 3, 28, 16, 59))


def test_berlin_window_follows_the_wall_clock_across_fall_back() -> None:
    w = window("* 9-17 * * *", "Europe/Berlin")
    assert w.next_open(at(2026, 10, 24, 16, 0)) == at(2026, 10, 25, 8, 0)  # CET again
    assert w.is_open(at(2026, 10, 24, 7, 0)) and not w.is_open(at(2026, 10, 25, 7, 0))
    assert w.is_open(at(2026, 10, 25, 16, 59)) and not w.is_open(at(2026, 10, 25, 17, 0))


def test_a_window_in_the_skipped_hour_never_opens_that_day() -> None:
    w = window("* 2 * * *", "Europe/Berlin")  # 02:00-02:59 Berlin
    day = minutes_open(w, at(2026, 3, 28, 23, 0), at(2026, 3, 29, 22, 0))  # all of 29 March
    assert day == []
    assert w.next_open(at(2026, 3, 28, 23, 0)) == at(2026, 3, 30, 0, 0)  # 02:00 CEST next day
    assert w.next_open(at(2026, 3, 29, 0, 59, 59)) == at(2026, 3, 30, 0, 0)  # 01:59:59 CET
    assert len(minutes_open(w, at(2026, 3, 27, 23, 0), at(2026, 3, 28, 23, 0))) == 60
    assert len(minutes_open(w, at(2026, 3, 29, 22, 0), at(2026, 3, 30, 22, 0))) == 60
    single = window("30 2 * * *", "Europe/Berlin")
    assert single.next_open(at(2026, 3, 28, 2, 0)) == at(2026, 3, 30, 0, 30)


def test_the_repeated_hour_is_open_in_both_occurrences() -> None:
    w = window("* 2 * * *", "Europe/Berlin")
    day = minutes_open(w, at(2026, 10, 24, 22, 0), at(2026, 10, 25, 23, 0))
    assert len(day) == 120  # 02:00-02:59 CEST, then 02:00-02:59 CET
    assert day[0] == at(2026, 10, 25, 0, 0) and day[59] == at(2026, 10, 25, 0, 59)
    assert day[60] == at(2026, 10, 25, 1, 0) and day[-1] == at(2026, 10, 25, 1, 59)
    assert w.next_open(at(2026, 10, 24, 23, 30)) == at(2026, 10, 25, 0, 0)
    assert w.next_open(at(2026, 10, 25, 1, 30)) == at(2026, 10, 25, 1, 30)  # second pass, open
    assert w.next_open(at(2026, 10, 25, 2, 0)) == at(2026, 10, 26, 1, 0)  # 03:00 CET: tomorrow
    once = window("30 2 * * *", "Europe/Berlin")
    assert once.is_open(at(2026, 10, 25, 0, 30)) and once.is_open(at(2026, 10, 25, 1, 30))
    assert once.next_open(at(2026, 10, 24, 23, 0)) == at(2026, 10, 25, 0, 30)
    assert once.next_open(at(2026, 10, 25, 1, 0)) == at(2026, 10, 25, 1, 30)  # in the 2nd pass


def test_next_open_from_the_first_pass_finds_the_second_pass() -> None:
    once = window("30 2 * * *", "Europe/Berlin")
    # 02:45 CEST (first pass): 02:30 comes again at 02:30 CET = 01:30 UTC, 45 minutes later
    assert once.next_open(at(2026, 10, 25, 0, 45)) == at(2026, 10, 25, 1, 30)


# --- DST: America/New_York ---------------------------------------------------------------


def test_new_york_across_both_changes() -> None:
    w = window("* 9-17 * * 1-5", "America/New_York")
    assert w.next_open(at(2026, 3, 6, 23, 0)) == at(2026, 3, 9, 13, 0)  # Fri -> Mon, EDT
    assert w.is_open(at(2026, 3, 6, 14, 0)) and not w.is_open(at(2026, 3, 9, 22, 0))
    assert w.next_open(at(2026, 10, 30, 22, 0)) == at(2026, 11, 2, 14, 0)  # Fri -> Mon, EST
    skipped = window("15 2 * * *", "America/New_York")  # 02:15 does not exist on 8 March
    assert skipped.next_open(at(2026, 3, 8, 5, 0)) == at(2026, 3, 9, 6, 15)
    assert minutes_open(skipped, at(2026, 3, 8, 5, 0), at(2026, 3, 9, 5, 0)) == []
    repeated = window("* 1 * * *", "America/New_York")  # 01:xx happens twice on 1 November
    day = minutes_open(repeated, at(2026, 11, 1, 4, 0), at(2026, 11, 2, 4, 0))
    assert len(day) == 120 and day[0] == at(2026, 11, 1, 5, 0) and day[-1] == at(2026, 11, 1, 6, 59)


# --- refused at registration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "says"),
    [
        ("* * 31 2 *", "UTC", "never matches"),
        ("0 12 30 2 *", "Europe/Berlin", "never matches"),
        ("* * 31 4,6,9,11 *", "UTC", "never matches"),
        ("* 25 * * *", "UTC", "not a valid cron"),
        ("* * * *", "UTC", "5-field"),
        ("@daily", "UTC", "5-field"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * * * *", "", "IANA"),
    ],
)
def test_bad_windows_are_refused(expression: str, tz: str, says: str) -> None:
    with pytest.raises(SoniqError) as err:
        ExecutionWindow(expression, tz, "test.task")
    assert err.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert says in str(err.value) and "test.task" in str(err.value)


def test_a_never_matching_window_is_refused_at_registration() -> None:
    app = Soniq(database_url="postgresql://unused/none")
    with pytest.raises(SoniqError) as err:

        @app.job(name="never", execution_window="0 0 30 2 *")
        async def never() -> None: ...

    assert err.value.error_code == "SONIQ_SETTINGS_INVALID" and "never matches" in str(err.value)
    assert "never" not in app.tasks
    rare = window("0 0 29 2 *")  # 29 February: rare, but it comes
    assert rare.next_open(at(2026, 12, 3)) == at(2028, 2, 29)


def test_the_expression_is_normalised_and_shown() -> None:
    w = window("  *   9-17 * *  1-5 ", "Europe/Berlin")
    assert w.expression == "* 9-17 * * 1-5" and w.timezone == "Europe/Berlin"
    assert repr(w) == "ExecutionWindow('* 9-17 * * 1-5', 'Europe/Berlin')"
