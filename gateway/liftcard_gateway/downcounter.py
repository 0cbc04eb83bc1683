"""The counters of the gateway's down messages: their AES-CTR nonces.

No counter is ever used twice under a reader's key, through restarts and
database restores (docs/uplink.md, "The nonce rule"). A counter is the wall
clock in microseconds, one past the previous counter when the clock has not
moved on, and never below what the database has reserved. Counters do not run
ahead of the clock:

- reservations run only RESERVE_US ahead, and a gateway restarted within that
  window waits for the clock to pass its last reservation before its first
  counter (at most RESERVE_US, once);
- so a database restored from a backup, which has forgotten the reservations
  made since, is still safe: the clock has moved past every counter used;
- a clock set back further than RESERVE_US (a Pi without network time) starts
  above the reservation instead: counters keep growing;
- only both at once (an old database and a clock set back behind it) could
  repeat a counter.

The database is written once per RESERVE_US at most, not per message.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

RESERVE_US = 2_000_000


def _clock_us() -> int:
    return time.time_ns() // 1000


class DownCounter:
    """Thread-safe source of down counters; `store` is a store.Store."""

    def __init__(self, store, clock_us: Callable[[], int] = _clock_us, sleep: Callable[[float], None] = time.sleep):
        self._store = store
        self._clock_us = clock_us
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last = 0
        self._reserved = 0

    def next(self) -> int:
        """A counter greater than any this database or process used before."""
        with self._lock:
            c = max(self._last + 1, self._clock_us())
            if c > self._reserved:
                if not self._reserved:
                    c = self._settle(c)
                c, self._reserved = self._store.reserve_down_counters(c, RESERVE_US)
            self._last = c
            return c

    def _settle(self, c: int) -> int:
        # The first counter of this process: after a quick restart the clock
        # may still be inside the last reservation; wait it out rather than
        # run ahead of the clock. Further behind than one reservation, the
        # clock went back: reserve_down_counters starts above the reservation.
        gap = self._store.down_counter_floor() - c
        if 0 < gap <= RESERVE_US:
            self._sleep(gap / 1e6)
            c = max(c, self._clock_us())
        return c
