"""Polling with a deadline: the only way the rigs wait for something."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float = 30.0, what: str = "condition", interval: float = 0.1):
    """pred()'s first truthy value, polled every `interval` s; AssertionError
    naming `what` once `timeout` s have passed (pred is tried once more at the
    deadline). Timeouts are upper bounds for a broken run, never a measure.

    The interval is gentle on purpose: a pred that asks virtual readers for
    their STATUS much more often keeps them too busy for their own uplink work
    (a reconnected reader's first heartbeat comes late)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(interval)
