"""What an app has registered: tasks, schedules, hooks, middlewares and observers.

Kept apart from the app so the enqueue rules, the scheduler and the worker read one plain
object instead of reaching into ``Soniq``.
"""

from __future__ import annotations

from typing import Any

from soniq.errors import TASK_INVALID, SoniqError
from soniq.jobs import Hook, Task
from soniq.schedules import Schedule


class Registry:
    """The registrations of one ``Soniq`` instance (``app.registry``)."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        self.before_job_hooks: list[Hook] = []
        self.after_job_hooks: list[Hook] = []
        self.on_error_hooks: list[Hook] = []
        self.middlewares: list[Hook] = []
        # Objects told about enqueues and job outcomes (e.g. soniq.contrib.metrics).
        self.observers: list[Any] = []

    def add_task(self, task: Task[Any, Any]) -> None:
        """Register ``task``; a module imported twice may register the same function again,
        but another function under a taken name is refused."""
        existing = self.tasks.get(task.name)
        fn = task.fn
        if (
            existing is not None
            and existing.fn is not fn
            and (
                getattr(existing.fn, "__qualname__", None) != getattr(fn, "__qualname__", None)
                or getattr(existing.fn, "__module__", None) != getattr(fn, "__module__", None)
            )
        ):
            raise SoniqError(
                TASK_INVALID,
                f"task name {task.name!r} is already registered to another function; "
                "give one of them a different name=",
            )
        self.tasks[task.name] = task

    def add_schedule(self, schedule: Schedule) -> None:
        self.schedules[schedule.name] = schedule
