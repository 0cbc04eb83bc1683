"""The gateway's SQLite store (docs/gateway.md): rides, readers, gaps.

SQLite opened by db.py (WAL mode, synchronous=FULL: an ack promises the rides
survive a power cut, so a commit must be on disk before it returns); the
tables and their schema versions are in schema.py. Every write is one
db.transaction().

Tables:

- rides (reader_id, seq) primary key: the ride record fields of
  formats.RideRecord (card_id as 16 hex digits: a u64 does not fit SQLite's
  signed integer), received_at, up_counter (the link counter of the message
  that brought it first; NULL when a harvest file brought it, import_rides),
  time_corrected and time_ref_seq (see below).
- readers (reader_id pk): building_id, first_seq (where the contiguous run
  starts), acked_seq (highest seq such that every seq first_seq..acked_seq is
  stored; what the ACK says), max_seq, last_up_counter (replay state: the last
  link counter accepted, recorded in the same transaction as the batch),
  last_seen and the last STATUS fields, online; clock_drift_s (the reader's
  clock minus the gateway's at the receipt of the last STATUS, signed whole
  seconds; NULL when that STATUS was not CLOCK_SYNCED) and clock_at (when the
  last drift was measured: the receipt of the last synced STATUS).
- gaps (reader_id, from_seq, to_seq, noticed_at, filled_at, lost_at): a batch
  whose seqs jump past the highest stored + 1 records the missing range; it is
  marked filled once every seq in it is stored. Never hidden, never deleted.
  lost_at: the reader said it no longer holds them (reader_ahead: a restored
  backup); the contiguous run, and so the ack, goes past such a gap.
- meta (key pk, value): 'down_reserved', the highest down counter reserved
  (downcounter.py).
- sun_counters (building_id, card_id) primary key: the highest NTAG 424 SUN
  counter (SDMReadCtr, u24) any reader of the building reported for the card
  (card_id as 16 hex digits), and updated_at (when it last went up). Only ever
  raised (max-merge), one transaction per SUNCTR message with the reader's
  link counter (docs/uplink.md, SUNCTR).

Unsynced rides (docs/gateway.md, "Clock"): a ride with flag CLOCK_UNSYNCED
keeps its `time` as the reader logged it; once a synced ride of the same reader
and boot is stored, the unsynced rides of that boot logged before it (lower seq,
uptime not above the reference's) get time_corrected = ref.time - (ref.uptime -
ride.uptime) and time_ref_seq = ref.seq, where ref is the synced ride of that
boot with the lowest seq. NULL in both: not corrected. Done inside store_batch's
transaction, whichever of the two arrives first.

`store_batch` does everything for one RIDES message in ONE transaction;
`store_batches` does the same for several messages in one transaction (one
fsync), each in its own savepoint (the daemon's group commit).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.epoch import epoch_from_unix
from liftcard_protocol.link import ST_CLOCK_SYNCED
from liftcard_protocol.ride import RideRecord

from .db import repair_modes, savepoint, transaction
from .schema import open_gateway_db


class StoreError(RuntimeError):
    pass


class ReplayError(StoreError):
    """The counter is not greater than the last one accepted from the reader."""


class UnknownReader(StoreError):
    pass


@dataclass(frozen=True)
class BatchResult:
    ack_seq: int  # highest contiguous seq stored (0: none yet)
    inserted: int  # new rides stored
    duplicates: int  # rides already held (resent after a lost ack)
    new_gaps: tuple  # ((from_seq, to_seq), ...) noticed by this batch
    corrected: int = 0  # unsynced rides whose time_corrected this batch set


def _now() -> float:
    return time.time()


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # A -wal/-shm of ours left read-only would stop every write: made
        # writable first (db.repair_modes); the daemon logs what was done.
        self.repaired = repair_modes(self.path)
        # The daemon's ingest thread writes; the main thread closes after joining it.
        self.conn = open_gateway_db(self.path)
        self.db = sqlite_utils.Database(self.conn)  # dict rows for reader() and status_rows()

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    # -- readers ------------------------------------------------------------
    def ensure_reader(self, reader_id: int, building_id: int, first_seq: int | None = None) -> None:
        """Register a reader from the config (keeps its state if known).
        first_seq, when given and nothing is stored yet, fixes where the run starts."""
        c = self.conn
        with transaction(c):
            row = c.execute("SELECT first_seq, max_seq FROM readers WHERE reader_id=?", (reader_id,)).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO readers (reader_id, building_id, first_seq, acked_seq, max_seq, "
                    "last_up_counter, online) VALUES (?, ?, ?, ?, NULL, 0, 0)",
                    (reader_id, building_id, first_seq, None if first_seq is None else first_seq - 1),
                )
            else:
                c.execute("UPDATE readers SET building_id=? WHERE reader_id=?", (building_id, reader_id))
                if first_seq is not None and row[1] is None:
                    c.execute(
                        "UPDATE readers SET first_seq=?, acked_seq=? WHERE reader_id=?",
                        (first_seq, first_seq - 1, reader_id),
                    )

    def last_counter(self, reader_id: int) -> int:
        row = self.conn.execute("SELECT last_up_counter FROM readers WHERE reader_id=?", (reader_id,)).fetchone()
        if row is None:
            raise UnknownReader("reader %d is not registered" % reader_id)
        return row[0] or 0

    def _check_counter(self, reader_id: int, counter: int) -> None:
        """UnknownReader, or ReplayError unless counter is above the last one
        accepted from the reader (inside the transaction that records it)."""
        if counter <= self.last_counter(reader_id):
            raise ReplayError("counter is not greater than the last accepted for reader %d" % reader_id)

    def acked_seq(self, reader_id: int) -> int:
        row = self.conn.execute("SELECT acked_seq FROM readers WHERE reader_id=?", (reader_id,)).fetchone()
        return (row[0] or 0) if row else 0

    def reader(self, reader_id: int) -> dict | None:
        try:
            return self.db["readers"].get(reader_id)
        except sqlite_utils.db.NotFoundError:
            return None

    # -- the batch ----------------------------------------------------------
    def store_batch(self, reader_id: int, counter: int, rides, now: float | None = None) -> BatchResult:
        """Store one verified RIDES message in ONE transaction: insert the rides
        (duplicates on (reader_id, seq) ignored), record the link counter
        (replay state), record gaps, advance and return the contiguous ack.
        Raises ReplayError or UnknownReader, with nothing changed."""
        res = self.store_batches([(reader_id, counter, rides)], now)[0]
        if isinstance(res, StoreError):
            raise res
        return res

    def import_rides(self, reader_id: int, rides, now: float | None = None) -> BatchResult:
        """Rides that came without the link (a harvest file, importer.py):
        stored exactly as a RIDES message's, deduplicated on (reader_id, seq),
        gaps and the contiguous ack advanced, in ONE transaction; up_counter is
        NULL, and the reader's link counter, last_seen and online are left as
        they are. Raises UnknownReader, with nothing changed."""
        res = self.store_batches([(reader_id, None, rides)], now)[0]
        if isinstance(res, StoreError):
            raise res
        return res

    def store_batches(self, items, now: float | None = None) -> list:
        """Several verified RIDES messages, each (reader_id, counter, rides), in
        ONE transaction: one commit, one fsync, for all of them (group commit:
        the daemon's throughput). Each message is stored as store_batch would,
        inside its own savepoint, in the order given, so a refused one (a
        replayed counter, an unknown reader) leaves the others in. Returns, per
        message, its BatchResult or the StoreError that refused it; nothing is
        acknowledgeable before this returns."""
        now = _now() if now is None else now
        c = self.conn
        out = []
        with transaction(c):
            for reader_id, counter, rides in items:
                try:
                    with savepoint(c, "msg"):
                        out.append(self._store_one(reader_id, counter, list(rides), now))
                except StoreError as e:  # this message refused, undone alone
                    out.append(e)
        return out

    def _store_one(self, reader_id: int, counter: int, rides: list, now: float) -> BatchResult:
        """One message, inside the caller's transaction."""
        c = self.conn
        row = c.execute(
            "SELECT first_seq, acked_seq, max_seq, last_up_counter, pruned_seq FROM readers WHERE reader_id=?",
            (reader_id,),
        ).fetchone()
        if row is None:
            raise UnknownReader("reader %d is not registered" % reader_id)
        first_seq, acked, max_seq, last_counter, pruned = row
        if counter is not None and counter <= (last_counter or 0):
            raise ReplayError("counter is not greater than the last accepted for reader %d" % reader_id)
        sent = len(rides)
        if pruned is not None:  # retention.py deleted these after the ledger had them: a resend is a duplicate
            rides = [r for r in rides if r.seq > pruned]
        seqs = sorted({r.seq for r in rides})
        if first_seq is None and seqs:
            # Nothing stored yet: the first batch's first seq starts the run
            # (records reclaimed before this gateway existed are not ours).
            first_seq = seqs[0]
            acked = first_seq - 1
        before = c.total_changes
        c.executemany(
            "INSERT OR IGNORE INTO rides (reader_id, seq, time, uptime, card_id, household, floor, fee, "
            "result, flags, boot, received_at, up_counter) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    reader_id,
                    r.seq,
                    r.time,
                    r.uptime,
                    "%016x" % r.card_id,
                    r.household,
                    r.floor,
                    r.fee,
                    r.result,
                    r.flags,
                    r.boot,
                    now,
                    counter,
                )
                for r in rides
            ],
        )
        inserted = c.total_changes - before
        # Gaps: a seq beyond the highest stored + 1 leaves a hole; record it.
        new_gaps = []
        hi = max_seq if max_seq is not None else (first_seq - 1 if first_seq is not None else None)
        for s in seqs:
            if hi is not None and s > hi + 1:
                new_gaps.append((hi + 1, s - 1))
            if hi is None or s > hi:
                hi = s
        for g in new_gaps:
            c.execute(
                "INSERT INTO gaps (reader_id, from_seq, to_seq, noticed_at) VALUES (?,?,?,?)",
                (reader_id, g[0], g[1], now),
            )
        # Advance the contiguous run.
        if acked is not None:
            acked = self._run_end(reader_id, acked)
        # Close gaps whose every seq is now stored.
        for gid, f, t in c.execute(
            "SELECT id, from_seq, to_seq FROM gaps WHERE reader_id=? AND filled_at IS NULL", (reader_id,)
        ).fetchall():
            n = c.execute(
                "SELECT count(*) FROM rides WHERE reader_id=? AND seq BETWEEN ? AND ?", (reader_id, f, t)
            ).fetchone()[0]
            if n == t - f + 1:
                c.execute("UPDATE gaps SET filled_at=? WHERE id=?", (now, gid))
        corrected = self._correct_unsynced(reader_id, {r.boot for r in rides})
        if counter is None:  # imported (import_rides): the link's replay state and presence untouched
            c.execute(
                "UPDATE readers SET first_seq=?, acked_seq=?, max_seq=? WHERE reader_id=?",
                (first_seq, acked, hi, reader_id),
            )
        else:
            c.execute(
                "UPDATE readers SET first_seq=?, acked_seq=?, max_seq=?, last_up_counter=?, "
                "last_seen=?, online=1 WHERE reader_id=?",
                (first_seq, acked, hi, counter, now, reader_id),
            )
        return BatchResult(acked or 0, inserted, sent - inserted, tuple(new_gaps), corrected)

    def _run_end(self, reader_id: int, acked: int) -> int:
        """The end of the contiguous run from acked + 1 (inside a transaction):
        every seq stored, or in a gap the reader said it no longer holds
        (lost_at: nothing can fill it, and holding the ack back behind it would
        stall the reader until its log is full)."""
        c = self.conn
        lost = c.execute(
            "SELECT from_seq, to_seq FROM gaps WHERE reader_id=? AND lost_at IS NOT NULL AND to_seq>? ORDER BY from_seq",
            (reader_id, acked),
        ).fetchall()

        def past_lost(n: int) -> int:
            for f, t in lost:
                if f <= n <= t:
                    n = t + 1
            return n

        nxt = past_lost(acked + 1)
        for (s,) in c.execute("SELECT seq FROM rides WHERE reader_id=? AND seq>? ORDER BY seq", (reader_id, acked)):
            if s < nxt:
                continue
            if s != nxt:
                break
            nxt = past_lost(nxt + 1)
        return nxt - 1

    def reader_ahead(self, reader_id: int, reader_acked: int, oldest_seq: int, now: float | None = None):
        """A heartbeat says the reader has been acknowledged up to reader_acked
        and still holds every record from oldest_seq on. When that is ahead of
        this database's ack (a database restored from a backup, or replaced),
        in ONE transaction: the seqs the database lacks below oldest_seq are
        recorded as a gap the reader can no longer fill (lost_at; reported,
        never invented), and the ack runs past it. Returns None when the
        reader is not ahead, else (from_seq, lost, acked): the first seq to ask
        the reader to send again (None: nothing it holds is missing), the lost
        (from_seq, to_seq) or None, and the ack now."""
        now = _now() if now is None else now
        c = self.conn
        row = c.execute("SELECT acked_seq FROM readers WHERE reader_id=?", (reader_id,)).fetchone()
        if row is not None and row[0] is not None and reader_acked <= row[0]:
            return None  # the common case, at every heartbeat: no write lock taken
        with transaction(c):
            row = c.execute("SELECT acked_seq FROM readers WHERE reader_id=?", (reader_id,)).fetchone()
            if row is None:
                raise UnknownReader("reader %d is not registered" % reader_id)
            acked = row[0]
            if acked is None:
                # No run known here (nothing stored from this reader): its
                # first resent batch starts the run; nothing to call lost.
                return (1, None, 0) if reader_acked > 0 else None
            if reader_acked <= acked:
                return None
            lost = None
            hi = min(oldest_seq - 1, reader_acked)
            if hi > acked:
                # Any part of it stored (a later batch) is no gap: record only
                # the missing runs, and close the open gaps they cover.
                lost_from = acked + 1
                held = [
                    s
                    for (s,) in c.execute(
                        "SELECT seq FROM rides WHERE reader_id=? AND seq BETWEEN ? AND ? ORDER BY seq",
                        (reader_id, lost_from, hi),
                    )
                ]
                runs, f = [], lost_from
                for s in held + [hi + 1]:
                    if s > f:
                        runs.append((f, s - 1))
                    f = s + 1
                for f, t in runs:
                    # The open gaps inside it are lost with it; the run gets
                    # its own row unless one of them is exactly it.
                    c.execute(
                        "UPDATE gaps SET lost_at=? WHERE reader_id=? AND filled_at IS NULL AND lost_at IS NULL "
                        "AND from_seq>=? AND to_seq<=?",
                        (now, reader_id, f, t),
                    )
                    same = c.execute(
                        "SELECT 1 FROM gaps WHERE reader_id=? AND from_seq=? AND to_seq=? AND lost_at IS NOT NULL",
                        (reader_id, f, t),
                    ).fetchone()
                    if same is None:
                        c.execute(
                            "INSERT INTO gaps (reader_id, from_seq, to_seq, noticed_at, lost_at) VALUES (?,?,?,?,?)",
                            (reader_id, f, t, now, now),
                        )
                lost = (lost_from, hi) if runs else None
                new_acked = self._run_end(reader_id, acked)
                c.execute("UPDATE readers SET acked_seq=? WHERE reader_id=?", (new_acked, reader_id))
                acked = new_acked
            return (acked + 1 if acked < reader_acked else None), lost, acked

    def _correct_unsynced(self, reader_id: int, boots) -> int:
        """Inside store_batch's transaction: for each boot touched by the batch,
        correct the not yet corrected unsynced rides from the boot's first synced
        ride (module docstring). Returns the number of rides corrected."""
        c = self.conn
        n = 0
        for boot in sorted(boots):
            ref = c.execute(
                "SELECT seq, time, uptime FROM rides WHERE reader_id=? AND boot=? "
                "AND (flags & ?)=0 ORDER BY seq LIMIT 1",
                (reader_id, boot, int(Flag.CLOCK_UNSYNCED)),
            ).fetchone()
            if ref is None:
                continue
            ref_seq, ref_time, ref_uptime = ref
            before = c.total_changes
            c.execute(
                "UPDATE rides SET time_corrected=? - (? - uptime), time_ref_seq=? "
                "WHERE reader_id=? AND boot=? AND (flags & ?)!=0 AND time_corrected IS NULL "
                "AND seq<? AND uptime<=? AND ? - (? - uptime) >= 0",
                (
                    ref_time,
                    ref_uptime,
                    ref_seq,
                    reader_id,
                    boot,
                    int(Flag.CLOCK_UNSYNCED),
                    ref_seq,
                    ref_uptime,
                    ref_time,
                    ref_uptime,
                ),
            )
            n += c.total_changes - before
        return n

    def store_status(self, reader_id: int, counter: int, status, now: float | None = None) -> None:
        """Record a verified STATUS and its link counter in one transaction.

        The reader's clock drift: its STATUS time minus the gateway's clock at
        receipt (`now`, Unix seconds), both in whole liftcard-epoch seconds;
        NULL unless the reader says CLOCK_SYNCED (an unsynced clock is a
        guess, not a drift). clock_at keeps when the last drift was measured.
        rssi, fw_version and wl_capacity: NULL when the reader says 0 (unknown)
        or its firmware's heartbeat does not carry them."""
        now = _now() if now is None else now
        drift = None
        if status.flags & ST_CLOCK_SYNCED:
            drift = int(status.time) - epoch_from_unix(int(now))
        c = self.conn
        with transaction(c):
            self._check_counter(reader_id, counter)
            c.execute(
                "UPDATE readers SET last_up_counter=?, last_seen=?, status_at=?, online=1, uptime=?, "
                "free_heap=?, backlog=?, wl_version=?, unrecorded=?, last_error=?, status_flags=?, boot=?, "
                "clock_drift_s=?, clock_at=CASE WHEN ? IS NULL THEN clock_at ELSE ? END, "
                "rssi=?, fw_version=?, wl_capacity=? "
                "WHERE reader_id=?",
                (
                    counter,
                    now,
                    now,
                    status.uptime,
                    status.free_heap,
                    status.backlog,
                    status.wl_version,
                    status.unrecorded,
                    status.last_error,
                    status.flags,
                    status.boot,
                    drift,
                    drift,
                    now,
                    status.rssi or None,
                    status.firmware,
                    status.wl_capacity or None,
                    reader_id,
                ),
            )

    def merge_sun(self, reader_id: int, building_id: int, counter: int, entries, now: float | None = None) -> list:
        """Max-merge the (card_id, counter) entries of a verified SUNCTR from
        the reader into its building's sun_counters, and record the message's
        link counter, in ONE transaction. Returns the entries that raised a
        counter (or were new), in message order, at most one per card."""
        now = _now() if now is None else now
        c = self.conn
        raised: dict[int, int] = {}
        with transaction(c):
            self._check_counter(reader_id, counter)
            for card_id, ctr in entries:
                cid = "%016x" % card_id
                cur = c.execute(
                    "SELECT counter FROM sun_counters WHERE building_id=? AND card_id=?", (building_id, cid)
                ).fetchone()
                if cur is not None and ctr <= cur[0]:
                    continue
                c.execute(
                    "INSERT INTO sun_counters (building_id, card_id, counter, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (building_id, card_id) DO UPDATE SET counter=excluded.counter, "
                    "updated_at=excluded.updated_at",
                    (building_id, cid, ctr, now),
                )
                raised[card_id] = ctr
            c.execute("UPDATE readers SET last_up_counter=?, last_seen=? WHERE reader_id=?", (counter, now, reader_id))
        return list(raised.items())

    def sun_counters(self, building_id: int, limit: int | None = None) -> list:
        """(card_id, counter) of the building, the most recently raised first."""
        sql = "SELECT card_id, counter FROM sun_counters WHERE building_id=? ORDER BY updated_at DESC, card_id"
        args: tuple = (building_id,)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        return [(int(cid, 16), ctr) for cid, ctr in self.conn.execute(sql, args)]

    def record_time_sent(self, reader_id: int, epoch_s: int, now: float | None = None) -> None:
        """Note that a TIME with epoch_s was published to the reader."""
        now = _now() if now is None else now
        self.conn.execute(
            "UPDATE readers SET time_sent_at=?, time_sent_epoch=? WHERE reader_id=?", (now, epoch_s, reader_id)
        )

    def mark_offline(self, reader_id: int) -> None:
        self.conn.execute("UPDATE readers SET online=0 WHERE reader_id=?", (reader_id,))

    # -- the gateway's own down counter ---------------------------------------
    def down_counter_floor(self) -> int:
        """The lowest down counter not reserved before in this database."""
        got = dict(self.conn.execute("SELECT key, value FROM meta WHERE key IN ('down_reserved', 'boot')"))
        # 'boot': databases from before reservations counted (boot << 32) | n.
        return max(got.get("down_reserved", 0) + 1, (got["boot"] + 1) << 32 if "boot" in got else 0)

    def reserve_down_counters(self, at_least: int, ahead: int) -> tuple[int, int]:
        """Reserve down counters (docs/uplink.md, "The nonce rule"): returns
        (first, last), first >= at_least and above every counter reserved
        before in this database, last = first + ahead; committed before it
        returns, so a counter is on disk before it is used."""
        c = self.conn
        with transaction(c):
            first = max(at_least, self.down_counter_floor())
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('down_reserved', ?)", (first + ahead,))
        return first, first + ahead

    # -- reading ------------------------------------------------------------
    def rides(self, reader_id: int) -> list[RideRecord]:
        out = []
        for row in self.conn.execute(
            "SELECT seq, time, uptime, card_id, household, floor, fee, result, flags, "
            "boot FROM rides WHERE reader_id=? ORDER BY seq",
            (reader_id,),
        ):
            vals = list(row)
            vals[3] = int(vals[3], 16)
            out.append(RideRecord(*vals))
        return out

    def ride_times(self, reader_id: int) -> list[dict]:
        """seq, time (as logged), time_corrected, time_ref_seq, flags, boot, uptime per ride."""
        cols = ("seq", "time", "time_corrected", "time_ref_seq", "flags", "boot", "uptime")
        return [
            dict(zip(cols, r))
            for r in self.conn.execute(
                "SELECT %s FROM rides WHERE reader_id=? ORDER BY seq" % ", ".join(cols), (reader_id,)
            )
        ]

    def ride_count(self, reader_id: int | None = None) -> int:
        if reader_id is None:
            return self.conn.execute("SELECT count(*) FROM rides").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM rides WHERE reader_id=?", (reader_id,)).fetchone()[0]

    def gaps(self, reader_id: int, open_only: bool = False) -> list[dict]:
        q = "SELECT from_seq, to_seq, noticed_at, filled_at FROM gaps WHERE reader_id=?"
        if open_only:
            q += " AND filled_at IS NULL"
        return [
            dict(zip(("from_seq", "to_seq", "noticed_at", "filled_at"), r))
            for r in self.conn.execute(q + " ORDER BY id", (reader_id,))
        ]

    def status_rows(self) -> list[dict]:
        rows = []
        for r in self.db.query(
            "SELECT r.*, (SELECT count(*) FROM gaps g WHERE g.reader_id=r.reader_id AND g.filled_at IS NULL) "
            "AS open_gaps, (SELECT count(*) FROM rides x WHERE x.reader_id=r.reader_id) AS stored, "
            "(SELECT count(*) FROM rides y WHERE y.reader_id=r.reader_id AND (y.flags & ?)!=0 AND y.result=?) "
            "AS legacy, (SELECT count(*) FROM rides z WHERE z.reader_id=r.reader_id AND (z.flags & ?)!=0 "
            "AND z.result!=?) AS legacy_refused FROM readers r ORDER BY r.reader_id",
            (int(Flag.LEGACY_UID), int(Result.GRANTED), int(Flag.LEGACY_UID), int(Result.GRANTED)),
        ):
            rows.append(r)
        return rows
