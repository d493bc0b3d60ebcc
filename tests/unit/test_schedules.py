"""Schedules: validation at decoration time, tick arithmetic, daylight-saving rules."""

from __future__ import annotations

import bisect
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from soniq import Soniq, SoniqError
from soniq.schedules import Schedule, cron, every

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


def make(expr: str | None = None, *, every_: float | timedelta | None = None, tz: str = "UTC"):
    return Schedule.create(name="s", job_name="s", cron=expr, every=every_, timezone=tz, args={})


def local(t: datetime, tz: ZoneInfo = NY) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S%z")


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * * *"}, "4 fields"),
        ({"cron": "* * * * * * *"}, "7 fields"),
        ({"cron": "0 0 30 2 *"}, "invalid cron"),
        ({"cron": "H * * * *"}, "invalid cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 60, "timezone": ""}, "timezone"),
        ({"cron": "* * * * *", "every": 60}, "exactly one"),
        ({}, "exactly one"),
        ({"every": 0.5}, "at least 1 second"),
        ({"every": timedelta(0)}, "at least 1 second"),
        ({"every": float("nan")}, "timedelta or a number"),
        ({"every": True}, "timedelta or a number"),
        ({"every": "60"}, "timedelta or a number"),
        ({"every": 60, "args": {"when": datetime(2024, 1, 1)}}, "plain JSON"),
    ],
)
def test_invalid_schedules_fail_at_decoration_naming_the_schedule(options, fragment):
    app = Soniq(database_url="postgresql://unused/db")
    with pytest.raises(SoniqError) as err:

        @app.periodic(name="reports.nightly", **options)
        def nightly(**kwargs):
            return None

    assert err.value.error_code == "SONIQ_SCHEDULE_INVALID"
    assert "reports.nightly" in str(err.value)
    assert fragment in str(err.value)
    assert "reports.nightly" not in app.schedules


def test_valid_schedules_register():
    app = Soniq(database_url="postgresql://unused/db")

    @app.periodic(cron="*/5 * * * *", timezone="Europe/Berlin", queue="reports")
    def five():
        return None

    @app.periodic(every=every(minutes=1), name="minutely", args={"n": 1})
    def minute(n: int) -> int:
        return n

    @app.periodic(cron="@daily")
    def daily():
        return None

    @app.periodic(cron="*/10 * * * * *", name="tens")
    def tens():
        return None

    five_name = five.__soniq_task__.name
    assert app.schedules[five_name].cron == "*/5 * * * *"
    assert app.schedules[five_name].timezone == "Europe/Berlin"
    assert app.tasks[five_name].queue == "reports"
    assert app.schedules["minutely"].every == timedelta(minutes=1)
    assert app.schedules["minutely"].args == {"n": 1}
    assert app.schedules["minutely"].spec == "every:60"
    assert make(every_=1234567.5).spec == "every:1234567.5"
    assert app.schedules["tens"].spec == "cron:*/10 * * * * *"
    assert (five(), minute(2)) == (None, 2)  # still callable


def test_one_task_can_have_several_schedules():
    app = Soniq(database_url="postgresql://unused/db")

    @app.periodic(cron="0 8 * * *", name="report.daily", args={"period": "day"})
    @app.periodic(cron="0 8 * * 1", name="report.weekly", args={"period": "week"})
    async def report(period: str) -> str:
        return period

    task = report.__soniq_task__.name
    assert [t for t in app.tasks if not t.startswith("soniq.")] == [task]  # + built-ins
    assert {n: (s.job_name, s.args) for n, s in app.schedules.items()} == {
        "report.daily": (task, {"period": "day"}),
        "report.weekly": (task, {"period": "week"}),
    }


def test_helpers_validate():
    assert cron("0 9 * * 1-5") == "0 9 * * 1-5"
    assert every(seconds=90) == timedelta(seconds=90)
    with pytest.raises(SoniqError):
        cron("not a cron")
    with pytest.raises(SoniqError):
        every(seconds=0.2)


# -- tick arithmetic --------------------------------------------------------------------------


def test_every_is_aligned_to_the_epoch():
    s = make(every_=1.5)
    now = datetime(2024, 1, 1, 0, 0, 0, 700000, tzinfo=UTC)
    assert s.latest_at_or_before(now) == datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert s.next_after(now) == datetime(2024, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    hourly = make(every_=timedelta(hours=1), tz="Asia/Kolkata")  # timezone does not shift it
    assert hourly.next_after(now) == datetime(2024, 1, 1, 1, tzinfo=UTC)
    tick = datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert hourly.latest_at_or_before(tick) == tick
    assert hourly.next_after(tick) == tick + timedelta(hours=1)


def test_cron_with_seconds_field_first():
    s = make("15 */2 * * * *")
    start = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    ticks = list(s.ticks(start, start + timedelta(minutes=5)))
    assert [t.strftime("%H:%M:%S") for t in ticks] == ["10:00:15", "10:02:15", "10:04:15"]


def test_cron_in_a_time_zone():
    s = make("0 9 * * *", tz="Asia/Tokyo")
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)  # 21:00 in Tokyo
    assert s.next_after(now) == datetime(2024, 5, 2, 0, tzinfo=UTC)
    assert s.latest_at_or_before(now) == datetime(2024, 5, 1, 0, tzinfo=UTC)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        make("* * * * *").next_after(datetime(2024, 1, 1))


# -- daylight saving ---------------------------------------------------------------------------
# America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.


def test_spring_forward_nonexistent_time_fires_once_shifted_by_the_gap():
    s = make("30 2 * * *", tz="America/New_York")
    ticks = list(s.ticks(datetime(2024, 3, 8, 12, tzinfo=NY), datetime(2024, 3, 12, 12, tzinfo=NY)))
    assert [local(t) for t in ticks] == [
        "2024-03-09 02:30:00-0500",
        "2024-03-10 03:30:00-0400",  # 02:30 does not exist that day: once, an hour later
        "2024-03-11 02:30:00-0400",
        "2024-03-12 02:30:00-0400",
    ]


def test_spring_forward_hourly_runs_every_real_hour():
    s = make("30 * * * *", tz="America/New_York")
    day = list(s.ticks(datetime(2024, 3, 10, 0, tzinfo=NY), datetime(2024, 3, 11, 0, tzinfo=NY)))
    assert len(day) == 23  # a 23-hour day
    assert [local(t)[11:] for t in day[:4]] == [
        "00:30:00-0500",
        "01:30:00-0500",
        "03:30:00-0400",
        "04:30:00-0400",
    ]


def test_fall_back_repeated_time_fires_at_first_occurrence_only():
    s = make("30 1 * * *", tz="America/New_York")
    ticks = list(
        s.ticks(datetime(2024, 11, 2, 12, tzinfo=NY), datetime(2024, 11, 4, 12, tzinfo=NY))
    )
    assert [local(t) for t in ticks] == ["2024-11-03 01:30:00-0400", "2024-11-04 01:30:00-0500"]
    minutes = make("*/20 1 * * *", tz="America/New_York")
    fired = list(
        minutes.ticks(datetime(2024, 11, 3, 0, tzinfo=NY), datetime(2024, 11, 3, 4, tzinfo=NY))
    )
    assert [local(t)[11:] for t in fired] == ["01:00:00-0400", "01:20:00-0400", "01:40:00-0400"]


def test_fall_back_hourly_runs_in_both_occurrences():
    s = make("30 * * * *", tz="America/New_York")
    day = list(s.ticks(datetime(2024, 11, 3, 0, tzinfo=NY), datetime(2024, 11, 4, 0, tzinfo=NY)))
    assert len(day) == 25  # a 25-hour day
    assert [local(t)[11:] for t in day[:4]] == [
        "00:30:00-0400",
        "01:30:00-0400",
        "01:30:00-0500",
        "02:30:00-0500",
    ]


def _oracle(expr: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Brute force: every wall-clock match in the window mapped by the documented rules."""
    seconds = len(expr.split()) == 6
    hour_wild = expr.split()[2 if seconds else 1] == "*"
    wall = start.astimezone(tz).replace(tzinfo=None) - timedelta(hours=4)
    stop = end.astimezone(tz).replace(tzinfo=None) + timedelta(hours=4)
    walk = croniter(expr, wall, second_at_beginning=seconds)
    out: set[datetime] = set()
    while (wall := walk.get_next(datetime)) < stop:
        first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
        out.add(first.astimezone(UTC))  # a skipped time keeps the old offset: shifted forward
        if hour_wild and first.utcoffset() > second.utcoffset():  # repeated: both occurrences
            out.add(second.astimezone(UTC))
    return sorted(t for t in out if start < t <= end)


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Europe/Dublin"]
)
@pytest.mark.parametrize(
    "expr",
    [
        "30 * * * *",
        "30 1 * * *",
        "*/20 * * * *",
        "*/15 2 * * *",
        "10,35 1-3 * * *",
        "0 0 * * *",
        "*/13 * * * * *",
        "0 30 2 * * *",
    ],
)
def test_next_and_latest_match_brute_force_around_transitions(zone, expr):
    tz = ZoneInfo(zone)
    s = make(expr, tz=zone)
    rng = random.Random(f"{zone}{expr}")
    transitions = [
        datetime(2024, m, d, tzinfo=tz)
        for m, d in [(3, 10), (3, 31), (4, 7), (10, 6), (10, 27), (11, 3)]
    ]
    # sub-minute schedules: only the hours around the change, to keep the brute force quick
    span = timedelta(hours=2) if expr.startswith("*/13") else timedelta(days=1)
    for day in transitions:
        window = (day - timedelta(days=1), day + span + timedelta(days=1))
        if span < timedelta(days=1):
            window = (day - timedelta(hours=1), day + span + timedelta(hours=1))
        expected = _oracle(expr, tz, *window)
        assert list(s.ticks(window[0], window[1])) == expected
        inner = [t for t in expected if day <= t <= day + span]
        for t in inner[:: max(1, len(inner) // 50)]:
            assert s.latest_at_or_before(t) == t
        for _ in range(60):
            now = day + timedelta(seconds=rng.uniform(0, span.total_seconds()))
            k = bisect.bisect_right(expected, now)
            assert s.latest_at_or_before(now) == expected[k - 1], now
            assert s.next_after(now) == expected[k], now
