"""The enqueue rules on their own (no database): what a job's row holds, and what is refused."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from soniq import Soniq, SoniqError, task_ref
from soniq.enqueue import (
    NewJob,
    dedup_hash,
    new_job,
    new_jobs,
    replayed_job,
    schedule_job,
)
from soniq.schedules import Schedule

URL = "postgresql://nobody@127.0.0.1:1/nothing"  # never connected to


def make_app(**settings: Any) -> Soniq:
    return Soniq(URL, **settings)


def build(app: Soniq, target: Any, args: dict[str, Any] | None = None, **options: Any) -> NewJob:
    kwargs = options.pop("kwargs", {})
    return new_job(app.registry, app.settings, target, args, kwargs, **options)


def code_of(call: Any) -> str:
    with pytest.raises(SoniqError) as info:
        call()
    return info.value.error_code


# -- defaults --------------------------------------------------------------------------------


def test_defaults_come_from_the_settings_when_the_task_sets_none() -> None:
    app = make_app(priority=50, max_retries=7)

    @app.job(name="t.plain")
    async def plain(n: int) -> None: ...

    job = build(app, plain, {"n": 1})
    assert (job.job_name, job.queue, job.priority, job.max_attempts) == (
        "t.plain",
        "default",
        50,
        8,
    )
    assert json.loads(job.args) == {"n": 1}
    assert job.scheduled_at is None and job.dedup_key is None
    assert str(uuid.UUID(job.id)) == job.id


def test_the_tasks_own_options_beat_the_settings() -> None:
    app = make_app(priority=50, max_retries=7)

    @app.job(name="t.own", queue="emails", priority=5, retries=2)
    async def own() -> None: ...

    job = build(app, own)
    assert (job.queue, job.priority, job.max_attempts) == ("emails", 5, 3)


def test_options_given_to_enqueue_beat_the_tasks() -> None:
    app = make_app()

    @app.job(name="t.own", queue="emails", priority=5)
    async def own() -> None: ...

    job = build(app, own, queue="urgent", priority=-3)
    assert (job.queue, job.priority) == ("urgent", -3)


def test_args_and_keywords_merge() -> None:
    app = make_app()

    @app.job(name="t.two")
    async def two(a: int, b: int) -> None: ...

    assert json.loads(build(app, two, {"a": 1}, kwargs={"b": 2}).args) == {"a": 1, "b": 2}
    assert code_of(lambda: build(app, two, {"a": 1}, kwargs={"a": 2})) == "SONIQ_TASK_ARGS_INVALID"
    assert code_of(lambda: build(app, two, {"c": 1})) == "SONIQ_TASK_ARGS_INVALID"


def test_new_job_is_frozen() -> None:
    app = make_app(enqueue_validation="none")
    job = build(app, "t.any")
    with pytest.raises(AttributeError):
        job.queue = "other"  # type: ignore[misc]


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", ["has space", "", 7])
def test_bad_queue_is_refused(queue: Any) -> None:
    app = make_app(enqueue_validation="none")
    assert code_of(lambda: build(app, "t.any", queue=queue)) == "SONIQ_ENQUEUE_INVALID"


@pytest.mark.parametrize("priority", [True, "1", 1.5, 2**31, -(2**31)])
def test_bad_priority_is_refused(priority: Any) -> None:
    app = make_app(enqueue_validation="none")
    with pytest.raises(SoniqError, match="priority must be an integer") as info:
        build(app, "t.any", priority=priority)
    assert info.value.error_code == "SONIQ_ENQUEUE_INVALID"


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        (datetime(2030, 1, 1), "naive datetime"),
        (-1, "finite number >= 0"),
        (float("inf"), "finite number >= 0"),
        (float("nan"), "finite number >= 0"),
        (timedelta(seconds=-1), "finite number >= 0"),
        ("soon", "not str"),
        (True, "not bool"),
    ],
)
def test_bad_scheduled_at_is_refused(when: Any, fragment: str) -> None:
    app = make_app(enqueue_validation="none")
    with pytest.raises(SoniqError, match=fragment) as info:
        build(app, "t.any", scheduled_at=when)
    assert info.value.error_code == "SONIQ_ENQUEUE_INVALID"


def test_scheduled_at_forms() -> None:
    app = make_app(enqueue_validation="none")
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert build(app, "t.any", scheduled_at=at).scheduled_at == at
    assert build(app, "t.any", scheduled_at=0).scheduled_at is None
    before = datetime.now(timezone.utc)
    later = build(app, "t.any", scheduled_at=timedelta(minutes=5)).scheduled_at
    assert later is not None and later.tzinfo is not None
    assert (
        before + timedelta(minutes=5) <= later <= datetime.now(timezone.utc) + timedelta(minutes=5)
    )


@pytest.mark.parametrize("key", ["", 5])
def test_bad_dedup_key_is_refused(key: Any) -> None:
    app = make_app(enqueue_validation="none")
    with pytest.raises(SoniqError, match="dedup_key must be a non-empty string"):
        build(app, "t.any", dedup_key=key)


def test_arguments_that_are_not_json_are_refused() -> None:
    app = make_app(enqueue_validation="none")
    with pytest.raises(SoniqError, match="must be plain JSON") as info:
        build(app, "t.any", {"at": datetime.now(timezone.utc)})
    assert info.value.error_code == "SONIQ_TASK_ARGS_INVALID"


def test_a_target_that_is_no_task_is_refused() -> None:
    app = make_app()
    with pytest.raises(SoniqError, match=r"decorated with @app\.job") as info:
        build(app, print)
    assert info.value.error_code == "SONIQ_ENQUEUE_INVALID"


# -- unknown names ---------------------------------------------------------------------------


def test_unknown_name_strict_is_refused() -> None:
    app = make_app()  # strict by default
    with pytest.raises(SoniqError, match=r"task_ref\('t.nobody'\)") as info:
        build(app, "t.nobody")
    assert info.value.error_code == "SONIQ_UNKNOWN_TASK_NAME"


def test_unknown_name_warn_logs_and_enqueues(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(enqueue_validation="warn", priority=9)
    with caplog.at_level(logging.WARNING, logger="soniq"):
        job = build(app, "t.nobody", {"x": 1})
    assert "unregistered task name 't.nobody'" in caplog.text
    assert (job.job_name, job.queue, job.priority) == ("t.nobody", "default", 9)


def test_unknown_name_none_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(enqueue_validation="none")
    with caplog.at_level(logging.DEBUG, logger="soniq"):
        job = build(app, "t.nobody")
    assert caplog.text == ""
    assert job.job_name == "t.nobody"


def test_a_handler_of_another_instance_is_registered_here() -> None:
    app, other = make_app(), make_app()

    @other.job(name="t.elsewhere")
    async def elsewhere() -> None: ...

    assert "t.elsewhere" not in app.tasks
    build(app, elsewhere)
    assert app.tasks["t.elsewhere"] is other.tasks["t.elsewhere"]


# -- task_ref --------------------------------------------------------------------------------


class Email(BaseModel):
    to: str
    tries: int = 1


def test_task_ref_with_args_model_validates_and_normalises() -> None:
    app = make_app()
    ref = task_ref("emails.send", args_model=Email, default_queue="mail")
    job = build(app, ref, {"to": "a@b.c", "tries": "3"})
    assert json.loads(job.args) == {"to": "a@b.c", "tries": 3}
    assert (job.job_name, job.queue) == ("emails.send", "mail")
    with pytest.raises(SoniqError, match="rejected by Email") as info:
        build(app, ref, {"tries": 2})
    assert info.value.error_code == "SONIQ_TASK_ARGS_INVALID"


def test_task_ref_without_model_needs_no_registration() -> None:
    app = make_app()  # strict mode does not apply to task_ref
    job = build(app, task_ref("reports.build"), {"any": [1, 2]})
    assert (job.job_name, job.queue, json.loads(job.args)) == (
        "reports.build",
        "default",
        {"any": [1, 2]},
    )


# -- dedup -----------------------------------------------------------------------------------


def test_unique_dedup_hash_is_the_same_for_enqueue_and_a_schedule() -> None:
    app = make_app()

    @app.job(name="t.unique", unique=True, queue="q1", priority=4, retries=0)
    async def unique(a: int, b: str) -> None: ...

    schedule = Schedule.create(
        name="every-minute",
        job_name="t.unique",
        cron=None,
        every=60,
        timezone="UTC",
        args={"b": "x", "a": 1},
    )
    enqueued = build(app, unique, {"a": 1, "b": "x"})
    ticked = schedule_job(app.registry, app.settings, schedule)
    assert enqueued.dedup_key is not None
    assert enqueued.dedup_key == ticked.dedup_key == dedup_hash("t.unique", {"a": 1, "b": "x"})
    assert enqueued.dedup_key.startswith("t.unique:")
    # and the rest of the row is what enqueue would write
    for field in ("job_name", "queue", "priority", "max_attempts"):
        assert getattr(enqueued, field) == getattr(ticked, field), field
    assert json.loads(enqueued.args) == json.loads(ticked.args)
    # other arguments, another key; an explicit key wins
    assert build(app, unique, {"a": 2, "b": "x"}).dedup_key != enqueued.dedup_key
    assert build(app, unique, {"a": 1, "b": "x"}, dedup_key="mine").dedup_key == "mine"


def test_a_schedule_of_an_unregistered_task_uses_the_settings() -> None:
    app = make_app(priority=70, max_retries=1)
    schedule = Schedule.create(
        name="s", job_name="t.elsewhere", cron="* * * * *", every=None, timezone="UTC", args={}
    )
    job = schedule_job(app.registry, app.settings, schedule)
    assert (job.job_name, job.queue, job.priority, job.max_attempts, job.dedup_key) == (
        "t.elsewhere",
        "default",
        70,
        2,
        None,
    )


def test_a_schedule_whose_args_the_handler_refuses_is_refused() -> None:
    app = make_app()

    @app.job(name="t.one")
    async def one(n: int) -> None: ...

    schedule = Schedule.create(
        name="s", job_name="t.one", cron=None, every=60, timezone="UTC", args={"m": 1}
    )
    with pytest.raises(SoniqError, match="takes no argument"):
        schedule_job(app.registry, app.settings, schedule)


# -- batches and replays ---------------------------------------------------------------------


def test_a_batch_shares_columns_and_keeps_the_order() -> None:
    app = make_app()

    @app.job(name="t.batch", queue="bulk", priority=3)
    async def batch(n: int) -> None: ...

    jobs = new_jobs(app.registry, app.settings, batch, [{"n": i} for i in range(5)])
    assert jobs is not None
    assert (jobs.job_name, jobs.queue, jobs.priority, jobs.scheduled_at) == (
        "t.batch",
        "bulk",
        3,
        None,
    )
    assert json.loads(jobs.args) == [{"n": i} for i in range(5)]
    assert len(set(jobs.ids)) == 5 and jobs.ids == sorted(jobs.ids)
    assert new_jobs(app.registry, app.settings, batch, []) is None
    with pytest.raises(SoniqError, match=r"args_list\[1\] must be a dict"):
        new_jobs(app.registry, app.settings, batch, [{"n": 1}, 2])  # type: ignore[list-item]
    with pytest.raises(SoniqError, match="takes no argument"):
        new_jobs(app.registry, app.settings, batch, [{"n": 1}, {"m": 2}])


def test_a_replay_keeps_the_entrys_columns() -> None:
    row = {"job_name": "t.x", "queue": "q", "priority": 7, "args": {"a": [1]}, "max_attempts": 2}
    job = replayed_job(row)
    assert (job.job_name, job.queue, job.priority, job.max_attempts) == ("t.x", "q", 7, 2)
    assert json.loads(job.args) == {"a": [1]}
    assert job.scheduled_at is None and job.dedup_key is None


# -- the handler's signature (issue 18, item 3) and the bare decorator (item 5) ---------------


def test_a_missing_required_argument_is_refused_at_enqueue() -> None:
    from soniq import JobContext

    app = make_app()

    @app.job(name="t.sig")
    async def sig(
        order_id: int, ctx: JobContext, *, note: str = "", force: bool = False
    ) -> None: ...

    assert code_of(lambda: build(app, sig, {})) == "SONIQ_TASK_ARGS_INVALID"
    with pytest.raises(SoniqError, match="order_id"):
        build(app, "t.sig", {"note": "x"})
    assert code_of(lambda: build(app, sig, {"order_id": 1, "extra": 2})) == (
        "SONIQ_TASK_ARGS_INVALID"
    )
    assert json.loads(build(app, sig, {"order_id": 1}).args) == {"order_id": 1}  # ctx: worker's
    assert code_of(lambda: new_jobs(app.registry, app.settings, sig, [{"order_id": 1}, {}])) == (
        "SONIQ_TASK_ARGS_INVALID"
    )
    assert new_jobs(app.registry, app.settings, sig, [{"order_id": 1}]) is not None


def test_required_arguments_are_checked_also_with_kwargs() -> None:
    app = make_app()

    @app.job(name="t.kw")
    async def kw(user: str, **rest: Any) -> None: ...

    assert code_of(lambda: build(app, kw, {"other": 1})) == "SONIQ_TASK_ARGS_INVALID"
    assert json.loads(build(app, kw, {"user": "a", "other": 1}).args) == {"user": "a", "other": 1}


def test_the_bare_decorator_registers_like_the_called_one() -> None:
    app = make_app()

    @app.job
    async def bare(n: int) -> int:
        return n

    assert bare.__soniq_task__.name.endswith(".bare")  # type: ignore[attr-defined]
    assert bare.__soniq_task__.queue == "default"  # type: ignore[attr-defined]
    assert build(app, bare, {"n": 1}).job_name == bare.__soniq_task__.name  # type: ignore[attr-defined]
    assert callable(bare.enqueue)  # type: ignore[attr-defined]


def test_a_periodic_job_missing_required_arguments_is_refused_at_registration() -> None:
    app = make_app()
    with pytest.raises(SoniqError) as info:

        @app.periodic(every=60, name="t.needs")
        async def needs(customer_id: int) -> None: ...

    assert info.value.error_code == "SONIQ_TASK_ARGS_INVALID"
    assert "customer_id" in info.value.message

    @app.periodic(every=60, name="t.given", args={"customer_id": 1})
    async def given(customer_id: int) -> None: ...

    assert "t.given" in app.schedules
