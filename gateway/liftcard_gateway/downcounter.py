"""The counters of the gateway's down messages: their AES-CTR nonces.

No counter is ever used twice under a reader's key, through restarts and
database restores (docs/uplink.md, "The nonce rule"). A counter is the
wall clock in microseconds, pushed one past the previous counter when the
clock has not moved on, and never below what the database has reserved:

- a restart continues above the reserved range, even if the clock went back;
- a database restored from a backup has forgotten recent reservations, but
  the clock has moved past every counter used since the backup;
- only both at once (an old database and a clock set back behind it) could
  repeat a counter.

Reservations run RESERVE_US ahead, so the database is written about once per
ten minutes, not per message.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

RESERVE_US = 600_000_000


def _clock_us() -> int:
    return time.time_ns() // 1000


class DownCounter:
    """Thread-safe source of down counters; `store` is a store.Store."""

    def __init__(self, store, clock_us: Callable[[], int] = _clock_us):
        self._store = store
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._last = 0
        self._reserved = 0

    def next(self) -> int:
        """A counter greater than any this database or process used before."""
        with self._lock:
            c = max(self._last + 1, self._clock_us())
            if c > self._reserved:
                c, self._reserved = self._store.reserve_down_counters(c, RESERVE_US)
            self._last = c
            return c
