"""The gateway at a glance (docs/gateway.md, "Status and report"): one dict
with every figure `liftcard-gateway status` shows, read from gateway.db in ONE
read transaction, so the figures agree with each other.

`status --json` prints it, the text tables (tables.py) are drawn from it, the
web console (console.py) shows it and serves it as /status.json, and the
Prometheus collector (metrics.py) exports it: one reading of the database,
four views, the same figures. Read-only: it works on a read-only connection
(db.connect(readonly=True)) while the daemon writes. Never a card id or a key.

    {
      "generated_at": unix seconds,
      "database": {"bytes", "pages", "free_pages", "page_size", "schema_version"},
      "readers": [{reader_id, building_id, online, last_seen, status_at, acked_seq, max_seq,
                   pruned_seq, stored, backlog, wl_version, free_heap, uptime, last_error,
                   rssi, fw_version, wl_capacity, clock_synced, clock_drift_s, open_gaps,
                   legacy, legacy_refused}],
      "gaps": [{reader_id, from_seq, to_seq, noticed_at}],          # open ones
      "refusals": [{reader_id, reason, count, first_at, last_at}],  # reader 0: not a configured reader
      "upstream": null | {"backlog", "oldest_unacked_batch_at", "oldest_backlog_at",
                          "readers": [{reader_id, stored, ledger_acked, backlog, acked_batches,
                                       inflight_batch, last_ack_at, oldest_backlog_at}]},
      "cards": null | {"version", "readers": [{reader_id, building_id, held, target, state, lag,
                                               capacity, too_big}]}
    }

`rssi` (dBm), `fw_version` ("0.1.0") and `wl_capacity` (the cards the
reader's whitelist can hold) are what its last heartbeat said, null when it
did not say (older firmware, or 0: unknown). A reader's card `state` is
"too_big" while the full list it needs is held back because it has more cards
than the reader's capacity (cardservice.py); `too_big` then says {cards,
capacity, to_version, refused_at}, else null.

`legacy` counts the rides GRANTED to a bare-UID card (result 0 and flag
LEGACY_UID): the reader lets copyable cards ride; `legacy_refused` the
bare-UID taps it denied (legacy mode off, working as meant). `backlog` of a reader is what its last
heartbeat said it holds unacknowledged; the upstream's is rides stored here
that the ledger has not acknowledged.
"""

from __future__ import annotations

import os
import sqlite3
import time

from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.link import ST_CLOCK_SYNCED

from . import refusals
from .db import user_version

_READER_COLS = (
    "reader_id",
    "building_id",
    "online",
    "last_seen",
    "status_at",
    "acked_seq",
    "max_seq",
    "pruned_seq",
    "backlog",
    "wl_version",
    "free_heap",
    "uptime",
    "last_error",
    "status_flags",
    "clock_drift_s",
    "rssi",
    "fw_version",
    "wl_capacity",
)


def _has_table(conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _columns(conn, table: str) -> set:
    return {r[1] for r in conn.execute("PRAGMA table_info(%s)" % table)}


def card_state(held: int | None, target: int, too_big: bool = False) -> str:
    """A reader's whitelist against the card database: unknown (no heartbeat
    yet), current, behind, too_big (behind, and the list it needs is refused
    for its size), ahead, or "-" when the database is empty."""
    if held is None:
        return "unknown"
    if target == 0:
        return "-"
    if held == target:
        return "current"
    if held > target:
        return "ahead"
    return "too_big" if too_big else "behind"


def database_size(conn) -> dict:
    """The database's file plus its WAL, in bytes, and its pages (free pages
    are reused before the file grows)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = pages * page_size
    for _seq, name, path in conn.execute("PRAGMA database_list"):
        if name == "main" and path:
            size = 0
            for p in (path, path + "-wal"):
                try:
                    size += os.stat(p).st_size
                except OSError:
                    pass
    return {"bytes": size, "pages": pages, "free_pages": free, "page_size": page_size}


def _readers(conn) -> list[dict]:
    have = _columns(conn, "readers")
    cols = ", ".join(c if c in have else "NULL AS %s" % c for c in _READER_COLS)
    out = []
    for row in conn.execute("SELECT %s FROM readers ORDER BY reader_id" % cols).fetchall():
        r = dict(zip(_READER_COLS, row))
        flags = r.pop("status_flags")
        r["online"] = bool(r["online"])
        r["clock_synced"] = None if flags is None else bool(flags & ST_CLOCK_SYNCED)
        rid = r["reader_id"]
        r["stored"] = conn.execute("SELECT count(*) FROM rides WHERE reader_id=?", (rid,)).fetchone()[0]
        r["open_gaps"] = conn.execute(
            "SELECT count(*) FROM gaps WHERE reader_id=? AND filled_at IS NULL", (rid,)
        ).fetchone()[0]
        r["legacy"], r["legacy_refused"] = conn.execute(
            "SELECT COALESCE(sum(result=?), 0), COALESCE(sum(result!=?), 0) FROM rides "
            "WHERE reader_id=? AND (flags & ?)!=0",
            (int(Result.GRANTED), int(Result.GRANTED), rid, int(Flag.LEGACY_UID)),
        ).fetchone()
        out.append(r)
    return out


def _gaps(conn) -> list[dict]:
    cols = ("reader_id", "from_seq", "to_seq", "noticed_at")
    return [
        dict(zip(cols, r))
        for r in conn.execute(
            "SELECT reader_id, from_seq, to_seq, noticed_at FROM gaps WHERE filled_at IS NULL ORDER BY reader_id, id"
        )
    ]


def _upstream(conn, reader_ids) -> dict:
    rows = []
    if not _has_table(conn, "upstream_readers"):
        return {"backlog": 0, "oldest_unacked_batch_at": None, "oldest_backlog_at": None, "readers": rows}
    for rid in reader_ids:
        acked_rowid, acked_rides, acked_batches, last_ack = conn.execute(
            "SELECT acked_rowid, acked_rides, acked_batches, last_ack_at FROM upstream_readers WHERE reader_id=?",
            (rid,),
        ).fetchone() or (0, 0, 0, None)
        backlog, oldest = conn.execute(
            "SELECT count(*), min(received_at) FROM rides WHERE reader_id=? AND rowid>?", (rid, acked_rowid)
        ).fetchone()
        inflight = conn.execute(
            "SELECT batch_id FROM upstream_batches WHERE reader_id=? AND acked_at IS NULL", (rid,)
        ).fetchone()
        rows.append(
            {
                "reader_id": rid,
                "stored": conn.execute("SELECT count(*) FROM rides WHERE reader_id=?", (rid,)).fetchone()[0],
                "ledger_acked": acked_rides,
                "backlog": backlog,
                "acked_batches": acked_batches,
                "inflight_batch": inflight[0] if inflight else None,
                "last_ack_at": last_ack,
                "oldest_backlog_at": oldest,
            }
        )
    oldest_batch = conn.execute("SELECT min(created_at) FROM upstream_batches WHERE acked_at IS NULL").fetchone()[0]
    olds = [r["oldest_backlog_at"] for r in rows if r["oldest_backlog_at"] is not None]
    return {
        "backlog": sum(r["backlog"] for r in rows),
        "oldest_unacked_batch_at": oldest_batch,
        "oldest_backlog_at": min(olds) if olds else None,
        "readers": rows,
    }


def _cards(conn, readers: list[dict]) -> dict:
    target = 0
    if _has_table(conn, "card_meta"):
        row = conn.execute("SELECT value FROM card_meta WHERE key='version'").fetchone()
        target = row[0] if row and row[0] is not None else 0
    refused = {}
    if _has_table(conn, "whitelist_refused"):
        for rid, cards, cap, to_v, at in conn.execute(
            "SELECT reader_id, cards, capacity, to_version, refused_at FROM whitelist_refused"
        ):
            refused[rid] = {"cards": cards, "capacity": cap, "to_version": to_v, "refused_at": at}
    out = []
    for r in readers:
        held = r["wl_version"]
        too_big = refused.get(r["reader_id"])
        state = card_state(held, target, too_big is not None)
        out.append(
            {
                "reader_id": r["reader_id"],
                "building_id": r["building_id"],
                "held": held,
                "target": target,
                "state": state,
                "lag": max(0, target - held) if held is not None and target else None,
                "capacity": r["wl_capacity"],
                "too_big": too_big if state == "too_big" else None,
            }
        )
    return {"version": target, "readers": out}


def snapshot(conn, upstream: bool = True, cards: bool = True, now: float | None = None, configured=None) -> dict:
    """Every figure of the status, in one read transaction of `conn`.
    `upstream` / `cards`: the config has [upstream] / [cards] (else null).
    `configured`: the reader ids of the config, or None for every reader the
    database knows. A reader taken away (`readers remove`) keeps its row and
    rides in the database, but its login is gone, so no Last Will can mark it
    offline: its health, gaps and card state would stay frozen as they were.
    Only its rides still matter, until the ledger has them: the upstream
    section keeps every reader that has rides."""
    now = time.time() if now is None else now
    conn.execute("BEGIN")
    try:
        every = _readers(conn)
        readers = every if configured is None else [r for r in every if r["reader_id"] in configured]
        gaps = _gaps(conn)
        if configured is not None:
            gaps = [g for g in gaps if g["reader_id"] in configured]
        out = {
            "generated_at": now,
            "database": dict(database_size(conn), schema_version=user_version(conn)),
            "readers": readers,
            "gaps": gaps,
            "refusals": refusals.rows(conn),
            "upstream": _upstream(conn, [r["reader_id"] for r in every]) if upstream else None,
            "cards": _cards(conn, readers) if cards else None,
        }
    finally:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            pass
    return out


def for_config(conn, cfg, now: float | None = None) -> dict:
    """snapshot() with the sections and the readers the gateway's config has."""
    return snapshot(
        conn, upstream=cfg.upstream is not None, cards=cfg.cards is not None, now=now, configured=set(cfg.readers)
    )
