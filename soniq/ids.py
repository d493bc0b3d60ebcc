"""Job ids: monotonic ULIDs as UUID text, made without a ULID or UUID object per job.

One generator for every producer (enqueue, batches, scheduler ticks, replays), so ids from
one process keep increasing whichever path made them.
"""

from __future__ import annotations

import os
import random
import threading
import time

# A ULID's randomness makes ids unique; it is not a secret. A private generator seeded from
# os.urandom (and again in every forked child) costs no system call per id, and user code
# that seeds the global `random` cannot make two processes repeat each other's ids.
_RANDOM = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RANDOM.seed)


class _Ids:
    """Monotonic ULIDs (python-ulid's layout: 48 bits of milliseconds, 80 random bits) as
    canonical UUID text, without building a ULID and a UUID object for every job."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> int:
        """The first of ``n`` consecutive ids, each above every id taken before."""
        value = (time.time_ns() // 1_000_000) << 80 | _RANDOM.getrandbits(80)
        with self._lock:
            if value <= self._last:  # same millisecond: count up, as python-ulid does
                value = self._last + 1
            self._last = value + n - 1
        return value

    @staticmethod
    def text(value: int) -> str:
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def texts(self, n: int) -> list[str]:
        """``n`` consecutive new ids, as text (one ``take`` for the whole block)."""
        first = self.take(n)
        return [
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            for h in map("{:032x}".format, range(first, first + n))
        ]


_IDS = _Ids()


def new_id() -> str:
    """One new job id as UUID text."""
    return _IDS.text(_IDS.take())
