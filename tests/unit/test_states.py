"""The job state machine: legal transitions and outcome -> next state."""

from __future__ import annotations

import pytest

from soniq import JobStatus
from soniq.states import (
    TRANSITIONS,
    DeadReason,
    Decision,
    Kind,
    Outcome,
    can_move,
    decide,
)


def test_status_values_match_api() -> None:
    assert {s.value for s in JobStatus} == {
        "queued",
        "processing",
        "done",
        "cancelled",
        "dead_letter",
        "waiting",
    }
    assert JobStatus("queued") is JobStatus.QUEUED
    assert JobStatus.DEAD_LETTER == "dead_letter"  # a str enum
    assert str(JobStatus.DONE) == "done"


def test_every_state_has_transitions() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize(
    ("src", "dst", "legal"),
    [
        (JobStatus.QUEUED, JobStatus.PROCESSING, True),
        (JobStatus.QUEUED, JobStatus.CANCELLED, True),
        (JobStatus.QUEUED, JobStatus.DONE, False),
        (JobStatus.QUEUED, JobStatus.DEAD_LETTER, False),
        (JobStatus.PROCESSING, JobStatus.DONE, True),
        (JobStatus.PROCESSING, JobStatus.QUEUED, True),
        (JobStatus.PROCESSING, JobStatus.DEAD_LETTER, True),
        (JobStatus.PROCESSING, JobStatus.CANCELLED, True),  # an abort
        (JobStatus.DONE, JobStatus.QUEUED, False),
        (JobStatus.CANCELLED, JobStatus.QUEUED, False),
        (JobStatus.DEAD_LETTER, JobStatus.QUEUED, True),
        (JobStatus.DEAD_LETTER, JobStatus.PROCESSING, False),
    ],
)
def test_can_move(src: JobStatus, dst: JobStatus, legal: bool) -> None:
    assert can_move(src, dst) is legal


def test_success_is_done() -> None:
    assert decide(Outcome(Kind.SUCCESS, result=1), 1, 4, 10.0) == Decision(JobStatus.DONE)


def test_error_with_attempts_left_requeues_with_delay() -> None:
    d = decide(Outcome(Kind.ERROR, error="boom"), 1, 4, 2.5)
    assert d == Decision(JobStatus.QUEUED, delay=2.5)
    assert decide(Outcome(Kind.TIMEOUT), 3, 4, 0.0).status is JobStatus.QUEUED


def test_last_error_dead_letters_max_retries_exceeded() -> None:
    d = decide(Outcome(Kind.ERROR, error="boom"), 4, 4, 2.5)
    assert d.status is JobStatus.DEAD_LETTER
    assert d.reason is DeadReason.MAX_RETRIES_EXCEEDED


def test_last_timeout_dead_letters_timeout() -> None:
    d = decide(Outcome(Kind.TIMEOUT), 1, 1, 0.0)
    assert (d.status, d.reason) == (JobStatus.DEAD_LETTER, DeadReason.TIMEOUT)


def test_snooze_requeues_and_refunds_attempt_even_on_last() -> None:
    d = decide(Outcome(Kind.SNOOZE, snooze_seconds=30), 4, 4, 0.0)
    assert d == Decision(JobStatus.QUEUED, delay=30, refund_attempt=True)


def test_missing_handler_dead_letters_at_once() -> None:
    d = decide(Outcome(Kind.NOT_FOUND), 1, 4, 0.0)
    assert (d.status, d.reason) == (JobStatus.DEAD_LETTER, DeadReason.JOB_NOT_FOUND)


def test_dead_reasons_match_api() -> None:
    assert {r.value for r in DeadReason} == {
        "max_retries_exceeded",
        "timeout",
        "job_not_found",
        "not_retryable",
    }


def test_decisions_are_legal_transitions() -> None:
    for kind in Kind:
        for attempt in (1, 4):
            d = decide(Outcome(kind), attempt, 4, 1.0)
            assert can_move(JobStatus.PROCESSING, d.status), (kind, attempt)
