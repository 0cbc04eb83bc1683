"""Retention (docs/gateway.md, "Retention"): rides the bank ledger has
acknowledged are deleted from gateway.db once they are `acked_ride_days` old
([retention] in the config), so the database stops growing at a steady load.

What may go, per reader: rides received more than acked_ride_days ago, that
the ledger acknowledged (rowid <= upstream_readers.acked_rowid: the upstream
sends a reader's rides in rowid order), and that lie in the reader's
contiguous run (seq <= readers.acked_seq). Only a prefix of the reader's seqs
is pruned: everything up to the first ride that must stay. That prefix's end
becomes readers.pruned_seq, the high-water mark store.py checks, so a resent
ride at or below it is a duplicate, exactly as if it were still stored; and
since the prefix never reaches past acked_seq, an open gap is never under it.
Nothing the ledger has not acknowledged, nothing not yet forwarded, and no
reader without an [upstream] is ever pruned.

Two more rows stay whatever their age: the ride with the highest rowid (SQLite
numbers a new row max(rowid) + 1, and the upstream's positions are rowids: a
deleted top row would hand its number to a new ride that the upstream would
then take for acknowledged) and the upstream batch with the highest batch_id
(the next batch's number comes from it).

What is deleted is first added to pruned_rides (per reader and result: taps,
charged rides, fees in fen), so totals and counters stay whole. Deletes go in
chunks of CHUNK rides, each its own transaction, so the daemon's writes wait
for one chunk at most. Free pages are reused by new rides: the file stops
growing without a VACUUM.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from liftcard_protocol.codes import Result

from .db import transaction
from .logs import events
from .schema import open_gateway_db

DAY_S = 86400
CHUNK = 2000
LOGGER = "liftcard.retention"


@dataclass
class PruneResult:
    rides: int = 0
    batches: int = 0
    readers: dict = field(default_factory=dict)  # reader_id -> pruned_seq now


def _prunable_through(conn, reader_id: int, acked_seq, acked_rowid: int, cutoff: float, top_rowid) -> int | None:
    """The highest seq S such that every ride of the reader with seq <= S may go."""
    if acked_seq is None or not acked_rowid:
        return None
    first_keep = conn.execute(
        "SELECT min(seq) FROM rides WHERE reader_id=? AND (rowid>? OR received_at IS NULL OR received_at>=? "
        "OR rowid=?)",
        (reader_id, acked_rowid, cutoff, top_rowid),
    ).fetchone()[0]
    return acked_seq if first_keep is None else min(acked_seq, first_keep - 1)


def _prune_reader(conn, reader_id: int, through: int, chunk: int) -> int:
    """Delete the reader's rides with seq <= through, chunk by chunk; returns how many."""
    g = int(Result.GRANTED)
    n = 0
    while True:
        with transaction(conn):
            hi = conn.execute(
                "SELECT seq FROM rides WHERE reader_id=? AND seq<=? ORDER BY seq LIMIT 1 OFFSET ?",
                (reader_id, through, chunk - 1),
            ).fetchone()
            hi = through if hi is None else hi[0]
            conn.execute(
                "INSERT INTO pruned_rides (reader_id, result, rides, charged, fees) "
                "SELECT reader_id, result, count(*), sum(result=? AND fee>0), "
                "COALESCE(sum(CASE WHEN result=? THEN fee ELSE 0 END), 0) "
                "FROM rides WHERE reader_id=? AND seq<=? GROUP BY result "
                "ON CONFLICT (reader_id, result) DO UPDATE SET rides=rides+excluded.rides, "
                "charged=charged+excluded.charged, fees=fees+excluded.fees",
                (g, g, reader_id, hi),
            )
            before = conn.total_changes
            conn.execute("DELETE FROM rides WHERE reader_id=? AND seq<=?", (reader_id, hi))
            n += conn.total_changes - before
            conn.execute(
                "UPDATE readers SET pruned_seq=? WHERE reader_id=? AND (pruned_seq IS NULL OR pruned_seq<?)",
                (hi, reader_id, hi),
            )
        if hi >= through:
            return n


def prune(conn, acked_ride_days: int, now: float | None = None, chunk: int = CHUNK) -> PruneResult:
    """One pass of retention on a read-write connection (module docstring)."""
    now = time.time() if now is None else now
    cutoff = now - acked_ride_days * DAY_S
    res = PruneResult()
    top_rowid = conn.execute("SELECT max(rowid) FROM rides").fetchone()[0]
    if top_rowid is None:
        return res
    acked = dict(conn.execute("SELECT reader_id, acked_rowid FROM upstream_readers"))
    for reader_id, acked_seq, pruned in conn.execute(
        "SELECT reader_id, acked_seq, pruned_seq FROM readers ORDER BY reader_id"
    ).fetchall():
        through = _prunable_through(conn, reader_id, acked_seq, acked.get(reader_id, 0), cutoff, top_rowid)
        if through is None or (pruned is not None and through <= pruned):
            continue
        res.rides += _prune_reader(conn, reader_id, through, chunk)
        res.readers[reader_id] = through
    while True:
        with transaction(conn):
            before = conn.total_changes
            conn.execute(
                "DELETE FROM upstream_batches WHERE batch_id IN (SELECT batch_id FROM upstream_batches "
                "WHERE acked_at IS NOT NULL AND acked_at<? AND batch_id<(SELECT max(batch_id) FROM upstream_batches) "
                "LIMIT ?)",
                (cutoff, chunk),
            )
            done = conn.total_changes - before
        res.batches += done
        if done < chunk:
            return res


class Retention:
    """The daemon's timer: prune() at start, then every conf.every_s, on its
    own connection in its own thread. conf: config.RetentionConf."""

    def __init__(self, conf, db_path, log=None):
        self.conf = conf
        self.db_path = Path(db_path)
        self.log = events(log or LOGGER)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Retention":
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()
        return self

    def run_once(self) -> PruneResult:
        conn = open_gateway_db(self.db_path)
        try:
            res = prune(conn, self.conf.acked_ride_days)
        finally:
            conn.close()
        if res.rides or res.batches:
            self.log("pruned", rides=res.rides, batches=res.batches, readers=sorted(res.readers))
        return res

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as e:  # a busy or full disk: try again at the next turn
                self.log("error", where="retention", error=type(e).__name__, message=str(e))
            self._stop.wait(self.conf.every_s)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
