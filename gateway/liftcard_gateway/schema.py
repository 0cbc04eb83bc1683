"""The tables of the gateway's database, `<data_dir>/gateway.db`, as schema
versions (db.migrate; `PRAGMA user_version`).

One file holds the store's tables (store.py: rides, readers, gaps, meta,
sun_counters), the card database's (carddb.py) and the upstream's
(upstream.py), so it has ONE list of migrations, and whoever opens the file
first (the daemon, `liftcard-gateway cards import`, `status`) brings all of
it up to date. What each column means is in the module that uses it and in
docs/gateway.md, docs/cards.md, docs/upstream.md.

Versions 1 to 4 are what gateways made before the schema had a version (their
databases say 0): each of them creates only what is missing and adds only
the columns a table lacks, so a database of any earlier gateway ends at
version 4 with every table and column. A migration added from now on is
appended to MIGRATIONS, runs exactly once per database, and never changes
one that is already released.
"""

from __future__ import annotations

from .db import add_missing_columns, open_db, run_statements


def _v1_store(conn) -> None:
    """The store's tables (store.py)."""
    run_statements(
        conn,
        """
CREATE TABLE IF NOT EXISTS rides (
    reader_id INTEGER NOT NULL, seq INTEGER NOT NULL, time INTEGER, uptime INTEGER, card_id TEXT,
    household INTEGER, floor INTEGER, fee INTEGER, result INTEGER, flags INTEGER, boot INTEGER,
    received_at REAL, up_counter INTEGER, time_corrected INTEGER, time_ref_seq INTEGER,
    PRIMARY KEY (reader_id, seq)
);
CREATE TABLE IF NOT EXISTS readers (
    reader_id INTEGER PRIMARY KEY, building_id INTEGER, first_seq INTEGER, acked_seq INTEGER,
    max_seq INTEGER, last_up_counter INTEGER, last_seen REAL, online INTEGER,
    uptime INTEGER, free_heap INTEGER, backlog INTEGER, wl_version INTEGER, unrecorded INTEGER,
    last_error INTEGER, status_flags INTEGER, boot INTEGER, status_at REAL,
    time_sent_at REAL, time_sent_epoch INTEGER, clock_drift_s INTEGER, clock_at REAL
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY, reader_id INTEGER, from_seq INTEGER, to_seq INTEGER,
    noticed_at REAL, filled_at REAL
);
CREATE INDEX IF NOT EXISTS idx_gaps_reader_id_filled_at ON gaps (reader_id, filled_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER);
CREATE TABLE IF NOT EXISTS sun_counters (
    building_id INTEGER NOT NULL, card_id TEXT NOT NULL, counter INTEGER NOT NULL, updated_at REAL,
    PRIMARY KEY (building_id, card_id)
);
CREATE INDEX IF NOT EXISTS sun_recent ON sun_counters (building_id, updated_at);
""",
    )


def _v2_store_columns(conn) -> None:
    """Columns the store's tables gained after their first release (NULL in
    older rows: not corrected, no TIME sent, no drift measured), and the index
    the unsynced-ride correction reads."""
    add_missing_columns(conn, "rides", {"time_corrected": "INTEGER", "time_ref_seq": "INTEGER"})
    add_missing_columns(
        conn,
        "readers",
        {"time_sent_at": "REAL", "time_sent_epoch": "INTEGER", "clock_drift_s": "INTEGER", "clock_at": "REAL"},
    )
    conn.execute("CREATE INDEX IF NOT EXISTS rides_boot ON rides (reader_id, boot, seq)")


def _v3_cards(conn) -> None:
    """The card database (carddb.py)."""
    run_statements(
        conn,
        """
CREATE TABLE IF NOT EXISTS card_meta (key TEXT PRIMARY KEY, value INTEGER);
CREATE TABLE IF NOT EXISTS cards (
    building_id INTEGER NOT NULL, card_id TEXT NOT NULL, household INTEGER, floors INTEGER,
    status INTEGER, klass INTEGER, valid_until INTEGER, version INTEGER,
    PRIMARY KEY (building_id, card_id)
);
CREATE TABLE IF NOT EXISTS card_history (
    building_id INTEGER, version INTEGER, card_id TEXT, op TEXT,
    household INTEGER, floors INTEGER, status INTEGER, klass INTEGER, valid_until INTEGER,
    PRIMARY KEY (building_id, version, card_id)
);
CREATE INDEX IF NOT EXISTS card_history_version ON card_history (version);
CREATE TABLE IF NOT EXISTS card_updates (
    version INTEGER PRIMARY KEY, kind TEXT, base_version INTEGER, issued INTEGER, ops INTEGER,
    changed INTEGER, applied_at REAL, sha256 TEXT
);
CREATE TABLE IF NOT EXISTS card_sends (
    reader_id INTEGER PRIMARY KEY, building_id INTEGER, from_version INTEGER, to_version INTEGER,
    how TEXT, bytes INTEGER, sent_at REAL
);
""",
    )


def _v4_upstream(conn) -> None:
    """The upstream's batches and per-reader positions (upstream.py), and the
    index it reads a reader's rides through in storage (rowid) order."""
    run_statements(
        conn,
        """
CREATE TABLE IF NOT EXISTS upstream_batches (
    batch_id INTEGER PRIMARY KEY,
    reader_id INTEGER NOT NULL,
    building_id INTEGER NOT NULL,
    first_rowid INTEGER NOT NULL,
    last_rowid INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    rides INTEGER NOT NULL,
    created_at REAL NOT NULL,
    acked_at REAL,
    payload BLOB
);
CREATE INDEX IF NOT EXISTS upstream_batches_open ON upstream_batches(reader_id) WHERE acked_at IS NULL;
CREATE TABLE IF NOT EXISTS upstream_readers (
    reader_id INTEGER PRIMARY KEY,
    sent_rowid INTEGER NOT NULL DEFAULT 0,
    acked_rowid INTEGER NOT NULL DEFAULT 0,
    acked_rides INTEGER NOT NULL DEFAULT 0,
    acked_batches INTEGER NOT NULL DEFAULT 0,
    last_ack_at REAL
);
CREATE INDEX IF NOT EXISTS upstream_rides_reader ON rides(reader_id);
""",
    )


def _v5_refusals_retention(conn) -> None:
    """Refused link messages counted per reader and reason (refusals.py; reader
    0: a topic naming no configured reader), what retention.py pruned per
    reader and result (rides, charged rides, fees in fen: the totals stay
    whole after pruning), and readers.pruned_seq: every seq up to it was
    stored and pruned, so a resent one is a duplicate (store.py)."""
    run_statements(
        conn,
        """
CREATE TABLE IF NOT EXISTS refusals (
    reader_id INTEGER NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,
    first_at REAL, last_at REAL,
    PRIMARY KEY (reader_id, reason)
);
CREATE TABLE IF NOT EXISTS pruned_rides (
    reader_id INTEGER NOT NULL, result INTEGER NOT NULL,
    rides INTEGER NOT NULL, charged INTEGER NOT NULL, fees INTEGER NOT NULL,
    PRIMARY KEY (reader_id, result)
);
""",
    )
    add_missing_columns(conn, "readers", {"pruned_seq": "INTEGER"})


def _v6_lost_gaps(conn) -> None:
    """gaps.lost_at: when the reader said it no longer holds the gap's rides
    (a database restored from a backup lacks rides the reader had been
    acknowledged for and has reclaimed since: store.Store.reader_ahead). The
    ack runs past such a gap; the gap stays, unfilled, in the table."""
    add_missing_columns(conn, "gaps", {"lost_at": "REAL"})


def _v7_reader_device(conn) -> None:
    """What the heartbeat says of the reader itself (docs/uplink.md, STATUS):
    readers.rssi (dBm), fw_version ("0.1.0") and wl_capacity (the cards its
    whitelist can hold), NULL when unknown or from older firmware; and
    whitelist_refused, the full list cardservice.py did not send a reader
    because it cannot fit (one row per reader, gone once a list or a delta is
    sent to it or it is current)."""
    add_missing_columns(conn, "readers", {"rssi": "INTEGER", "fw_version": "TEXT", "wl_capacity": "INTEGER"})
    run_statements(
        conn,
        """
CREATE TABLE IF NOT EXISTS whitelist_refused (
    reader_id INTEGER PRIMARY KEY, building_id INTEGER NOT NULL, held_version INTEGER NOT NULL,
    to_version INTEGER NOT NULL, cards INTEGER NOT NULL, capacity INTEGER NOT NULL, refused_at REAL NOT NULL
);
""",
    )


MIGRATIONS = (
    _v1_store,
    _v2_store_columns,
    _v3_cards,
    _v4_upstream,
    _v5_refusals_retention,
    _v6_lost_gaps,
    _v7_reader_device,
)


def open_gateway_db(path):
    """A connection to gateway.db (db.connect's pragmas) with every table up to date."""
    return open_db(path, MIGRATIONS)
