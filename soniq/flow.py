"""Flow control: pausing and resuming queues (docs/flow-control.md).

A pause is a row in ``soniq_paused_queues``: durable, fleet-wide, and seen by workers that
start later. Each worker keeps the (usually empty) paused set in memory and passes it to its
claim, so a fleet with no paused queue runs the plain claim statement unchanged. The set is
re-read before the next claim after a ``!queues`` NOTIFY on the wake-up channel (sent by the
pause/resume statement itself, so it arrives right after the commit), after a notifier
reconnect, and after every heartbeat as the fallback for a missed NOTIFY. A claim statement
that was already running when the pause committed may still start jobs of the queue; none
starts once the worker has seen the NOTIFY (milliseconds after ``pause_queue`` returns).
Running jobs finish; enqueueing into a paused queue still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from soniq.errors import SETTINGS_INVALID, SoniqError

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.db import Database

QUEUES_CHANGED = "!queues"  # the NOTIFY payload: re-read the paused set


def _queue_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise SoniqError(SETTINGS_INVALID, f"queue name must be a non-empty string (got {name!r})")
    return name


async def pause_queue(app: Soniq, name: str) -> bool:
    """Pause ``name``; True if it was running (False: already paused)."""
    return await (await app.database()).queue_pause(_queue_name(name))


async def resume_queue(app: Soniq, name: str) -> bool:
    """Resume ``name``; True if it was paused."""
    return await (await app.database()).queue_resume(_queue_name(name))


async def paused_queues(app: Soniq) -> dict[str, Any]:
    """Paused queue name -> paused_at."""
    rows = await (await app.database()).queue_paused_list()
    return {r["queue"]: r["paused_at"] for r in rows}


async def list_queues(app: Soniq, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (per-queue counts) with ``paused`` and ``paused_at``; a paused queue that
    has no jobs yet gets a row of zeros."""
    paused = await paused_queues(app)
    seen: set[str] = set()
    for r in rows:
        seen.add(r["queue"])
        r["paused"] = r["queue"] in paused
        r["paused_at"] = paused.get(r["queue"])
    for name in sorted(set(paused) - seen):
        zeros = dict.fromkeys(
            ("waiting", "queued", "processing", "done", "dead_letter", "cancelled"), 0
        )
        rows.append(
            {
                "queue": name,
                **zeros,
                "oldest_queued_age": None,
                "paused": True,
                "paused_at": paused[name],
            }
        )
    rows.sort(key=lambda r: r["queue"])
    return rows


class PausedSet:
    """A worker's view of the paused queues: refreshed before a claim once marked stale."""

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()
        self.stale = True

    async def refresh(self, db: Database, conn: Any) -> None:
        if self.stale:
            self.stale = False  # a NOTIFY during the read marks it stale again
            self.names = frozenset(r["queue"] for r in await db.queue_paused_list(conn))

    def claim_queues(self, queues: list[str] | None) -> tuple[list[str] | None, list[str]]:
        """(queues to claim from, paused queues to leave out). ([], []) means claim nothing:
        every queue this worker serves is paused."""
        if not self.names:
            return queues, []
        if queues:
            return [q for q in queues if q not in self.names], []
        return None, sorted(self.names)
