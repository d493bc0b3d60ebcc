"""Continuations (``enqueue(after=...)``, ``continue_with``) and workflows (a DAG of jobs
enqueued in one statement). The release of children is done by the database (migration 008:
a trigger on the parent's final status), so this module only writes and reads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import asyncpg

from soniq.db import Conn, parse_uuid
from soniq.enqueue import NewJob, new_job
from soniq.errors import ENQUEUE_INVALID, SoniqError, schema_missing
from soniq.foreign import as_asyncpg
from soniq.ids import new_id
from soniq.limits import limited

if TYPE_CHECKING:
    from soniq.app import Soniq

MAX_PARENTS = 1000
WORKFLOW_STATUSES = ("running", "done", "failed", "cancelled")


class Step:
    """One step of a ``Workflow``: ``id`` is its job id (known before anything is written),
    ``name`` its unique name in the workflow."""

    __slots__ = ("id", "name", "workflow")

    def __init__(self, job_id: str, name: str, workflow: Workflow) -> None:
        self.id = job_id
        self.name = name
        self.workflow = workflow

    def __repr__(self) -> str:
        return f"Step(name={self.name!r}, id={self.id!r})"


def parse_after(after: Any) -> list[str]:
    """``after=``: a job id or a list of job ids, as canonical UUID text, without repeats.
    Malformed ids or more than ``MAX_PARENTS`` parents: ``SONIQ_ENQUEUE_INVALID``."""
    items = [after] if isinstance(after, (str, uuid.UUID, Step)) else after
    if not isinstance(items, Iterable) or isinstance(items, (bytes, dict)):
        raise SoniqError(
            ENQUEUE_INVALID, f"after= takes a job id or a list of job ids, got {after!r}"
        )
    out: dict[str, None] = {}
    for item in items:
        if isinstance(item, Step):
            raise SoniqError(
                ENQUEUE_INVALID,
                f"after= got {item!r}: a workflow step is a parent only inside its workflow "
                "(wf.add(..., after=[step])); pass its .id once the workflow is enqueued",
            )
        uid = parse_uuid(item)
        if uid is None:
            raise SoniqError(
                ENQUEUE_INVALID, f"after=: {item!r} is not a job id (a UUID as enqueue returns)"
            )
        out[str(uid)] = None
    if len(out) > MAX_PARENTS:
        raise SoniqError(
            ENQUEUE_INVALID,
            f"after= lists {len(out)} parents; at most {MAX_PARENTS} are allowed "
            "(join through an intermediate job for more)",
        )
    return list(out)


class _Dag:
    """The parameters of one ``job_insert_dag`` statement."""

    def __init__(self) -> None:
        self.jobs: list[tuple[NewJob, str | None]] = []
        self.external: dict[str, None] = {}
        self.edges: list[tuple[str, str, str]] = []  # parent, child, alias

    def add(self, job: NewJob, step: str | None, parents: list[tuple[str, str, bool]]) -> None:
        """``parents``: (id, alias, existing job?) each."""
        self.jobs.append((job, step))
        for pid, alias, existing in parents:
            if existing:
                self.external[pid] = None
            self.edges.append((pid, job.id, alias))

    def params(self, wf_id: str | None, wf_name: str | None) -> list[Any]:
        jobs = [j for j, _ in self.jobs]
        return [
            "{" + ",".join(j.id for j in jobs) + "}",
            [j.job_name for j in jobs],
            [j.queue for j in jobs],
            [j.priority for j in jobs],
            "[" + ",".join(j.args for j in jobs) + "]",
            [j.max_attempts for j in jobs],
            [j.scheduled_at for j in jobs],
            [s for _, s in self.jobs],
            None if wf_id is None else uuid.UUID(wf_id),
            wf_name,
            [uuid.UUID(p) for p in self.external],
            [uuid.UUID(p) for p, _, _ in self.edges],
            [uuid.UUID(c) for _, c, _ in self.edges],
            [a for _, _, a in self.edges],
        ]

    async def insert(
        self, app: Soniq, connection: Conn | None, wf_id: str | None, wf_name: str | None
    ) -> dict[str, str]:
        """Write everything in one statement; the status each new job got, by id."""
        if app.testing is not None:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"after= and workflows need the database: Soniq(testing={app.testing!r}) "
                "does not run them; test them against PostgreSQL",
            )
        db = await app.database()
        if connection is not None:
            connection = await as_asyncpg(connection)
        try:
            row = await db.job_insert_dag(connection, self.params(wf_id, wf_name))
        except asyncpg.UndefinedTableError:
            raise schema_missing(app.schema) from None
        except asyncpg.UndefinedColumnError:
            raise schema_missing(app.schema) from None
        if not row["ok"]:
            found = await db.job_existing([uuid.UUID(p) for p in self.external])
            missing = [p for p in self.external if p not in found]
            raise SoniqError(
                ENQUEUE_INVALID,
                f"after=: no job with id {', '.join(missing)} (a parent must exist; nothing "
                "was enqueued)",
            )
        for job, _ in self.jobs:
            for observer in app.observers:
                observer.job_enqueued(job.queue, job.job_name, 1)
        statuses = row["statuses"]
        return dict(json.loads(statuses) if isinstance(statuses, str) else statuses)


async def enqueue_after(app: Soniq, job: NewJob, after: Any, connection: Conn | None) -> str:
    """``enqueue(..., after=...)``: the job waits for its parents (checked in the statement
    that inserts it)."""
    parents = parse_after(after)
    if not parents:
        raise SoniqError(ENQUEUE_INVALID, "after= is empty: give at least one parent job id")
    dag = _Dag()
    dag.add(job, None, [(p, p, True) for p in parents])
    await dag.insert(app, connection, None, None)
    return job.id


class Workflow:
    """A DAG of jobs built with ``add`` and written at once by ``enqueue``."""

    def __init__(self, app: Soniq, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise SoniqError(
                ENQUEUE_INVALID, f"workflow name must be a non-empty string, got {name!r}"
            )
        self.app = app
        self.name = name
        self.id = new_id()
        self._dag = _Dag()
        self._steps: dict[str, Step] = {}
        self._enqueued = False

    @property
    def steps(self) -> list[Step]:
        return list(self._steps.values())

    def add(
        self,
        target: Any,
        *,
        name: str | None = None,
        after: Any = (),
        args: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> Step:
        """Add a step (arguments checked now); ``after`` takes steps of this workflow or ids
        of existing jobs. Returns the ``Step``."""
        if self._enqueued:
            raise SoniqError(ENQUEUE_INVALID, "this workflow was already enqueued; build a new one")
        job = new_job(self.app.registry, self.app.settings, target, args, kwargs, queue, priority)
        task = self.app.registry.tasks.get(job.job_name)
        if limited(task):
            raise SoniqError(
                ENQUEUE_INVALID,
                f"{job.job_name} has flow-control limits (concurrency, rate or window); workflow "
                "steps cannot carry them in this version. Fix: enqueue it on its own, or use a "
                "task without them",
            )
        step_name = job.job_name if name is None else name
        if not isinstance(step_name, str) or not step_name:
            raise SoniqError(ENQUEUE_INVALID, f"step name must be a non-empty string, got {name!r}")
        if step_name in self._steps:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"workflow already has a step named {step_name!r}: give name= a unique value",
            )
        if after is None:
            after = ()
        if isinstance(after, (str, uuid.UUID, Step)):
            items = [after]
        elif isinstance(after, (list, tuple, set, frozenset)):
            items = list(after)
        else:
            raise SoniqError(
                ENQUEUE_INVALID, f"after= takes steps or job ids (or a list of them), got {after!r}"
            )
        parents: dict[str, tuple[str, str, bool]] = {}
        for item in items:
            if isinstance(item, Step):
                if item.workflow is not self:
                    raise SoniqError(
                        ENQUEUE_INVALID,
                        f"after= got {item!r}, a step of another workflow: use steps of this "
                        "workflow, or job ids",
                    )
                parents[item.id] = (item.id, item.name, False)
            else:
                for pid in parse_after(item):
                    parents[pid] = (pid, pid, True)
        if len(parents) > MAX_PARENTS:
            raise SoniqError(ENQUEUE_INVALID, f"a step may have at most {MAX_PARENTS} parents")
        step = Step(job.id, step_name, self)
        self._dag.add(job, step_name, list(parents.values()))
        self._steps[step_name] = step
        return step

    async def enqueue(self, connection: Any = None) -> dict[str, str]:
        """Write every step in one statement (inside ``connection``'s transaction if given);
        returns ``{step name: job id}``."""
        if not self._steps:
            raise SoniqError(ENQUEUE_INVALID, "the workflow has no steps: add some with wf.add()")
        if self._enqueued:
            raise SoniqError(ENQUEUE_INVALID, "this workflow was already enqueued")
        await self._dag.insert(self.app, connection, self.id, self.name)
        self._enqueued = True
        return {name: step.id for name, step in self._steps.items()}


def workflow_status(counts: dict[str, int]) -> str:
    """A workflow's status from its steps' status counts."""
    if counts.get("dead_letter"):
        return "failed"
    if any(counts.get(s) for s in ("waiting", "queued", "processing")):
        return "running"
    if counts.get("cancelled"):
        return "cancelled"
    return "done"


async def get_workflow(app: Soniq, workflow_id: str) -> dict[str, Any] | None:
    """``app.get_workflow``."""
    uid = parse_uuid(workflow_id)
    if uid is None:
        return None
    db = await app.database()
    head = await db.workflow_get(uid)
    if head is None:
        return None
    steps = [app._job_dict(r) for r in await db.workflow_steps(uid)]
    counts: dict[str, int] = {}
    for s in steps:
        counts[str(s["status"])] = counts.get(str(s["status"]), 0) + 1
    status = workflow_status(counts)
    ends = [s["finished_at"] for s in steps if s["finished_at"] is not None]
    return {
        "id": str(head["id"]),
        "name": head["name"],
        "status": status,
        "created_at": head["created_at"],
        "finished_at": max(ends) if status != "running" and ends else None,
        "steps": steps,
    }


async def list_workflows(
    app: Soniq, *, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Workflows, newest first: ``id``, ``name``, ``status``, ``created_at``,
    ``finished_at``, ``steps`` (how many) and ``counts`` (steps per status)."""
    if status is not None and status not in WORKFLOW_STATUSES:
        raise SoniqError(
            ENQUEUE_INVALID, f"status must be one of {', '.join(WORKFLOW_STATUSES)}, got {status!r}"
        )
    rows = await (await app.database()).workflow_list(status, limit)
    out = []
    for r in rows:
        counts = r["counts"]
        counts = dict(json.loads(counts) if isinstance(counts, str) else counts or {})
        out.append(
            {
                "id": str(r["id"]),
                "name": r["name"],
                "status": r["status"],
                "created_at": r["created_at"],
                "finished_at": r["finished_at"] if r["status"] != "running" else None,
                "steps": int(r["steps"]),
                "counts": {k: int(v) for k, v in counts.items()},
            }
        )
    return out


async def cancel_workflow(app: Soniq, workflow_id: str, abort: bool) -> int:
    """``app.cancel_workflow``: how many steps this moved to ``cancelled``."""
    uid = parse_uuid(workflow_id)
    if uid is None:
        return 0
    return await (await app.database()).workflow_cancel(uid, abort)
