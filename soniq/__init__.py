"""soniq: background jobs on the PostgreSQL you already run."""

from soniq.app import Soniq
from soniq.errors import SoniqError
from soniq.jobs import JobContext, Snooze, TaskRef, task_ref
from soniq.ratelimit import RateLimit
from soniq.schedules import cron, every
from soniq.states import JobStatus

__all__ = [
    "JobContext",
    "JobStatus",
    "RateLimit",
    "Snooze",
    "Soniq",
    "SoniqError",
    "TaskRef",
    "cron",
    "every",
    "task_ref",
]

__version__ = "0.1.0"
