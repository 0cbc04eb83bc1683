"""Refused link messages, counted per reader and reason (docs/gateway.md,
"Status and report"): what `status`, the console and /metrics show, so a
refusal is seen without reading the journal.

The daemon logs each refusal (`refused`) and adds one to its row here. The
reader is the topic's when it names a configured reader, else 0: a topic
anyone can write must not grow the table one row per made-up reader id.
"""

from __future__ import annotations

import sqlite3
import time

from .db import transaction

UNKNOWN_READER = 0


def record(conn, reader_id: int | None, reason: str, known: bool, now: float | None = None) -> None:
    """Count one refusal of `reason` (one transaction). `known`: reader_id is
    a configured reader."""
    now = time.time() if now is None else now
    rid = reader_id if known and reader_id is not None else UNKNOWN_READER
    with transaction(conn):
        conn.execute(
            "INSERT INTO refusals (reader_id, reason, count, first_at, last_at) VALUES (?, ?, 1, ?, ?) "
            "ON CONFLICT (reader_id, reason) DO UPDATE SET count=count+1, last_at=excluded.last_at",
            (rid, str(reason), now, now),
        )


def rows(conn) -> list[dict]:
    """Every (reader_id, reason) counted: count, first_at, last_at; [] on a
    database from before the table."""
    try:
        cur = conn.execute(
            "SELECT reader_id, reason, count, first_at, last_at FROM refusals ORDER BY reader_id, reason"
        )
    except sqlite3.OperationalError:
        return []
    return [dict(zip(("reader_id", "reason", "count", "first_at", "last_at"), r)) for r in cur]
