"""The job state machine, written down once. Pure code: no I/O.

States (``JobStatus``) and who moves a job out of each:

- ``queued``: waiting until ``scheduled_at`` (also between retries and after a snooze).
  A worker claims it (-> processing); an operator may cancel it (-> cancelled).
- ``processing``: claimed by exactly one worker. That worker records the outcome through
  one guarded update ("only if still processing by me"): done, queued again (retry or
  snooze), or dead_letter; cancelled ("aborted") when an abort was asked, and a job claimed
  after its ``expires_at`` goes straight to cancelled ("expired"). If the worker dies,
  rescue puts it back to queued (or dead_letter when its attempts are spent).
- ``waiting``: enqueued with ``after=``; never claimed. Its last parent's ``done`` makes it
  queued, a parent's ``dead_letter``/``cancelled`` cancels it (the database does both, in the
  transaction that records the parent's outcome: migration 008).
- ``done``, ``cancelled``: final; pruned after ``result_ttl``.
- ``dead_letter``: final until an operator retries (-> queued, same id) or deletes it;
  replay makes a new job and leaves the entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class _TextEnum(str, enum.Enum):
    """A string enum that prints as its value: ``str(JobStatus.DONE) == "done"``."""

    _value_: str

    def __str__(self) -> str:
        return self.value


class JobStatus(_TextEnum):
    """A job's state, as stored in ``soniq_jobs.status``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"
    WAITING = "waiting"  # enqueued with after=: its parents have not all finished


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.DONE, JobStatus.QUEUED, JobStatus.DEAD_LETTER, JobStatus.CANCELLED}
    ),
    JobStatus.DONE: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.DEAD_LETTER: frozenset({JobStatus.QUEUED}),
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
}


def can_move(src: JobStatus, dst: JobStatus) -> bool:
    """True if ``src -> dst`` is a legal transition."""
    return dst in TRANSITIONS[src]


class DeadReason(_TextEnum):
    """Why a job was dead-lettered."""

    MAX_RETRIES_EXCEEDED = "max_retries_exceeded"
    TIMEOUT = "timeout"
    JOB_NOT_FOUND = "job_not_found"
    NOT_RETRYABLE = "not_retryable"  # the exception is excluded by retry_on / no_retry_on


class Kind(str, enum.Enum):
    """What happened in one attempt."""

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    SNOOZE = "snooze"
    NOT_FOUND = "not_found"
    ABORTED = "aborted"  # cancel_job(abort=True) cancelled the handler


@dataclass(frozen=True)
class Outcome:
    """What a worker observed when an attempt ended."""

    kind: Kind
    error: str | None = None
    result: object = None
    snooze_seconds: float = 0.0


@dataclass(frozen=True)
class Decision:
    """The next state of a job after an attempt, and what to store."""

    status: JobStatus
    delay: float = 0.0  # seconds until due again, for QUEUED
    reason: DeadReason | None = None
    refund_attempt: bool = False  # snooze: the attempt does not count


def decide(
    outcome: Outcome,
    attempt: int,
    max_attempts: int,
    retry_delay: float,
    retryable: bool = True,
) -> Decision:
    """Map an attempt's outcome to the job's next state.

    ``attempt`` counts from 1 and includes the attempt that just ended;
    ``retry_delay`` is what the retry policy gives for this attempt; ``retryable=False``
    (an error excluded by the task's retry_on / no_retry_on) dead-letters at once.
    """
    if outcome.kind is Kind.SUCCESS:
        return Decision(JobStatus.DONE)
    if outcome.kind is Kind.SNOOZE:
        return Decision(JobStatus.QUEUED, delay=outcome.snooze_seconds, refund_attempt=True)
    if outcome.kind is Kind.ABORTED:
        return Decision(JobStatus.CANCELLED)
    if outcome.kind is Kind.NOT_FOUND:
        return Decision(JobStatus.DEAD_LETTER, reason=DeadReason.JOB_NOT_FOUND)
    if outcome.kind is Kind.ERROR and not retryable:
        return Decision(JobStatus.DEAD_LETTER, reason=DeadReason.NOT_RETRYABLE)
    if attempt < max_attempts:
        return Decision(JobStatus.QUEUED, delay=retry_delay)
    reason = DeadReason.TIMEOUT if outcome.kind is Kind.TIMEOUT else DeadReason.MAX_RETRIES_EXCEEDED
    return Decision(JobStatus.DEAD_LETTER, reason=reason)
