"""From an attempt's outcome to the row the outcome statement writes.

A finished attempt becomes either a success (id + result JSON) or an :class:`OutcomeRow`
(retry, snooze or dead letter, decided by the pure ``states.decide``). They wait in the
:class:`Reporter` until the claim loop writes them, in the same statement as its next claim
(one round trip per cycle; see docs/internals.md). An outcome stays there until the database
has taken it, so a write that fails (database restart, killed connection) is retried after
reconnecting, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from soniq.jobs import Task, dump_json
from soniq.states import Decision, JobStatus, Kind, Outcome, decide
from soniq.wakeup import WakeFlag

if TYPE_CHECKING:
    from soniq.runner import ClaimedJob

log = logging.getLogger("soniq.worker")

TRACEBACK_CHARS = 64 * 1024  # each failed attempt keeps the last this many characters
_RUNNER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")


def traceback_text(exc: object) -> str | None:
    """The traceback of ``exc`` (an exception, else None), its last ``TRACEBACK_CHARS``."""
    if not isinstance(exc, BaseException):
        return None
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _RUNNER_FILE:
        tb = tb.tb_next  # the runner's own frames: the traceback starts at the handler
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > TRACEBACK_CHARS:
        text = "[... earlier lines cut ...]\n" + text[-TRACEBACK_CHARS:]
    return text


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """An attempt that did not succeed, as the outcome statement takes it.

    The fields are the columns of ``unnest(...) AS r(id, status, delay, refund, error,
    reason, traceback)`` in the ``_job_report`` fragment of ``sql/jobs.sql``.
    """

    id: uuid.UUID
    status: str  # a JobStatus value: queued (retry, snooze), dead_letter or cancelled (abort)
    delay: float  # seconds until due again, when queued
    refund: bool  # the attempt does not count (snooze)
    error: str | None  # appended to the job's errors; None for a snooze
    reason: str | None  # a DeadReason value, when dead-lettered
    traceback: str | None = None  # the failed attempt's traceback (at most TRACEBACK_CHARS)


@dataclass(frozen=True, slots=True)
class Batch:
    """Outcomes taken for one write."""

    done_ids: list[uuid.UUID]
    done_results: list[str | None]  # result JSON, in the order of done_ids
    other: list[OutcomeRow]
    requeue_now: bool  # some outcome puts a job back with no delay

    def __len__(self) -> int:
        return len(self.done_ids) + len(self.other)

    def other_columns(self) -> tuple[list[Any], ...]:
        """``other`` as one list per column, in OutcomeRow's field order."""
        rows = self.other
        return (
            [r.id for r in rows],
            [r.status for r in rows],
            [r.delay for r in rows],
            [r.refund for r in rows],
            [r.error for r in rows],
            [r.reason for r in rows],
            [r.traceback for r in rows],
        )


EMPTY_BATCH = Batch([], [], [], False)


class Reporter:
    """Outcomes waiting to be written, in the order they happened."""

    def __init__(self, wake: asyncio.Event, observers: Sequence[Any]) -> None:
        self.done_ids: list[uuid.UUID] = []
        self.done_results: list[str | None] = []
        self.other: list[OutcomeRow] = []
        self.requeue_now = False
        self.pending = WakeFlag(wake)
        self.observers = observers

    def __len__(self) -> int:
        return len(self.done_ids) + len(self.other)

    def ids(self) -> set[uuid.UUID]:
        return set(self.done_ids) | {o.id for o in self.other}

    def take(self) -> Batch:
        batch = Batch(self.done_ids, self.done_results, self.other, self.requeue_now)
        self.done_ids, self.done_results, self.other = [], [], []
        self.requeue_now = False
        self.pending.clear()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put back a batch whose write failed, ahead of anything newer."""
        self.done_ids[:0] = batch.done_ids
        self.done_results[:0] = batch.done_results
        self.other[:0] = batch.other
        self.requeue_now = self.requeue_now or batch.requeue_now
        if len(self):
            self.pending.set()

    def record(self, task: Task[Any, Any] | None, job: ClaimedJob, outcome: Outcome) -> Decision:
        """Queue ``outcome`` for writing; log and tell the observers. Returns the decision."""
        duration = time.monotonic() - job.started
        if outcome.kind is Kind.SUCCESS:
            try:
                result_json = (
                    None
                    if outcome.result is None
                    else dump_json(outcome.result, f"the return value of {job.job_name}")
                )
            except Exception as exc:  # not JSON: the attempt fails instead
                outcome = Outcome(Kind.ERROR, error=str(exc))
            else:
                self.done_ids.append(job.id)
                self.done_results.append(result_json)
                self.pending.set()
                self._observe(job, "succeeded", duration)
                return _DONE
        delay = 0.0
        if outcome.kind in (Kind.ERROR, Kind.TIMEOUT) and task is not None:
            delay = task.retry.delay_for(job.attempt)
        retryable = task is None or task.retryable(outcome.result)
        decision = decide(outcome, job.attempt, job.max_attempts, delay, retryable)
        snooze = outcome.kind is Kind.SNOOZE
        self.other.append(
            OutcomeRow(
                id=job.id,
                status=decision.status.value,
                delay=decision.delay,
                refund=decision.refund_attempt,
                error=None if snooze else outcome.error,
                reason=decision.reason.value if decision.reason else None,
                traceback=None if snooze else traceback_text(outcome.result),
            )
        )
        if decision.status is JobStatus.QUEUED and decision.delay <= 0:
            self.requeue_now = True
        self.pending.set()
        if decision.status is JobStatus.CANCELLED:
            log.info("job %s (%s) aborted", job.id, job.job_name)
            self._observe(job, "aborted", duration)
        elif decision.status is JobStatus.DEAD_LETTER:
            log.error(
                "job %s (%s) dead-lettered (%s): %s",
                job.id,
                job.job_name,
                decision.reason,
                outcome.error,
            )
            self._observe(job, "dead_lettered", duration)
        elif snooze:
            self._observe(job, "snoozed", duration)
        else:
            log.warning(
                "job %s (%s) attempt %d/%d failed: %s; retry in %.1fs",
                job.id,
                job.job_name,
                job.attempt,
                job.max_attempts,
                outcome.error,
                decision.delay,
            )
            self._observe(job, "retried", duration)
        return decision

    def _observe(self, job: ClaimedJob, outcome: str, duration: float) -> None:
        for o in self.observers:
            o.job_ended(job.queue, job.job_name, outcome, duration)


_DONE = Decision(JobStatus.DONE)
