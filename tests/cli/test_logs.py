"""Logging: job fields on every record (any logger, tasks and threads), text and JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from soniq.logs import JobFieldsFilter, JsonFormatter, configure_logging, job_context
from tests.cli.cli_helpers import CLI_JOBS, run_soniq


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def capture(fmt: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = configure_logging("DEBUG", fmt, stream=stream)
    return logging.getLogger("test.logs"), stream, handler


def test_job_fields_on_records_inside_and_outside_a_job():
    log, stream, handler = capture("json")
    try:
        log.info("before")
        with job_context("j-1", "t.name", "q1", 2):
            log.warning("inside %s", "job", extra={"order": 7})
            logging.getLogger("some.library").info("library line")
        log.info("after")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "before",
        "inside job",
        "library line",
        "after",
    ]
    assert lines[0]["job_id"] is None and lines[3]["task"] is None
    for line in lines[1:3]:
        assert (line["job_id"], line["task"], line["queue"], line["attempt"]) == (
            "j-1",
            "t.name",
            "q1",
            2,
        )
    assert lines[1]["order"] == 7 and lines[1]["level"] == "WARNING"
    assert lines[2]["logger"] == "some.library"


async def test_fields_follow_tasks_and_threads():
    log, stream, handler = capture("json")

    def in_thread() -> None:
        log.info("thread")

    async def in_task() -> None:
        log.info("task")

    try:
        with job_context("j-2", "t.other", "default", 1):
            await asyncio.create_task(in_task())
            await asyncio.to_thread(in_thread)
        await asyncio.create_task(in_task())  # started outside: no job
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["message"], line["job_id"]) for line in lines] == [
        ("task", "j-2"),
        ("thread", "j-2"),
        ("task", None),
    ]


def test_text_format_and_exceptions():
    log, stream, handler = capture("text")
    try:
        with job_context("j-3", "t.text", "default", 3):
            try:
                raise ValueError("bad thing")
            except ValueError:
                log.exception("handler failed")
        log.info("plain")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    first = text.splitlines()[0]
    assert first.endswith("handler failed [t.text j-3 attempt=3]")
    assert "ValueError: bad thing" in text and "Traceback" in text
    assert text.splitlines()[-1].endswith("test.logs: plain")

    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    JobFieldsFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["job_id"] is None


def test_configure_replaces_only_its_own_handler():
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    try:
        first = configure_logging("INFO", "text", stream=io.StringIO())
        second = configure_logging("INFO", "json", stream=io.StringIO())
        assert first not in root.handlers and second in root.handlers and other in root.handlers
    finally:
        root.removeHandler(other)
        root.removeHandler(second)


async def test_worker_json_logs_carry_job_fields(make_app, cli_env):
    app = await make_app(enqueue_validation="none")
    add_id = await app.enqueue("cli.add", args={"x": 2, "y": 3})
    fail_id = await app.enqueue("cli.fail", args={"message": "kaput"}, queue="critical")
    env = {**cli_env, "SONIQ_JOBS_MODULES": CLI_JOBS, "SONIQ_LOG_FORMAT": "json"}
    proc = await asyncio.to_thread(run_soniq, env, "worker", "--run-once")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    assert all({"time", "level", "logger", "message", "job_id"} <= line.keys() for line in lines)
    user = [line for line in lines if line["logger"] == "cli_jobs"]
    assert [(u["message"], u["job_id"], u["task"], u["queue"], u["attempt"]) for u in user] == [
        ("adding 2 and 3", add_id, "cli.add", "default", 1),
    ]
    failures = [line for line in lines if line["job_id"] == fail_id]
    assert failures and {f["task"] for f in failures} == {"cli.fail"}
    assert sorted({f["attempt"] for f in failures}) == list(
        range(1, (await app.get_job(fail_id))["attempts"] + 1)
    )
    assert any(line["job_id"] is None and "started" in line["message"] for line in lines)
