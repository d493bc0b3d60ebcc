"""Job ids: ULIDs (python-ulid's layout) in UUID text, monotonic, and not repeated by
processes that seed the global ``random`` alike or were forked from one parent."""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from ulid import ULID

from soniq.ids import _IDS, _RANDOM


def _draw(conn: object) -> None:
    random.seed(1234)  # user code seeding the global generator
    conn.send([_IDS.text(_IDS.take()) for _ in range(50)])  # type: ignore[attr-defined]


def test_ids_are_ulids_in_uuid_text_and_increase() -> None:
    start = datetime.now(timezone.utc)
    ids = [_IDS.text(_IDS.take()) for _ in range(2000)]
    end = datetime.now(timezone.utc)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for job_id in ids[::100]:
        assert str(uuid.UUID(job_id)) == job_id
        made = ULID.from_uuid(uuid.UUID(job_id)).datetime
        assert start - timedelta(milliseconds=1) <= made <= end + timedelta(milliseconds=1)


def test_a_block_of_ids_is_consecutive() -> None:
    first = _IDS.take(10)
    assert _IDS.take() > first + 9


def test_seeding_global_random_does_not_repeat_ids() -> None:
    random.seed(7)
    a = _RANDOM.getrandbits(80)
    random.seed(7)
    b = _RANDOM.getrandbits(80)
    assert a != b


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_forked_children_seeded_alike_draw_different_ids() -> None:
    ctx = multiprocessing.get_context("fork")
    results = []
    for _ in range(2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_draw, args=(child,))
        proc.start()
        assert parent.poll(30), "child did not answer"
        results.append(parent.recv())
        proc.join(30)
        assert proc.exitcode == 0
    low = [{int(uuid.UUID(i)) & (2**80 - 1) for i in r} for r in results]
    assert not (low[0] & low[1])
