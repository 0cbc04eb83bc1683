"""The reference ledger's one SQL layer, on SQLite (the embedded default) or
PostgreSQL (`[ledger] database = "postgresql://..."`), docs/ledger.md.

Every statement is written once, in the SQL both understand: `?`
placeholders (turned into psycopg's `%s` for PostgreSQL), `INSERT .. ON
CONFLICT DO NOTHING` and `ON CONFLICT (..) DO UPDATE` upserts, `RETURNING`.
What differs is kept here and small:

- placeholders;
- the schema's spelling: an identity column (`INTEGER PRIMARY KEY` in SQLite,
  `GENERATED ALWAYS AS IDENTITY` in PostgreSQL), and the order of first
  storage of a ride (SQLite's rowid; PostgreSQL's `rides.id`, `Sql.order`);
- schema versions: SQLite's `PRAGMA user_version` through
  liftcard_gateway.db.migrate; in PostgreSQL a `schema_version` table,
  migrated under an advisory lock so that ledger workers starting together
  migrate once;
- transactions: SQLite's `BEGIN IMMEDIATE` (liftcard_gateway.db.transaction,
  so a full disk surfaces as itself); PostgreSQL's READ COMMITTED, where two
  workers inserting the same ride serialise on its unique key (the second
  one's ON CONFLICT DO NOTHING waits for the first's commit, then inserts
  nothing), and where a deadlock between two workers inserting overlapping
  batches in different orders is retried (`Sql.run`), as is a transaction
  cut by a dropped connection (a server restart), on a new connection.

The DSN's password never reaches a log or an error: it comes from a file
(ledger.py) and is passed to psycopg apart from the URL.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from liftcard_gateway.db import connect, run_statements
from liftcard_gateway.db import migrate as sqlite_migrate
from liftcard_gateway.db import transaction as sqlite_transaction
from liftcard_protocol.epoch import LIFTCARD_EPOCH

from . import accountbook as book

PG_URL_RE = re.compile(r"^postgres(ql)?://", re.I)
PG_MIGRATION_LOCK = 0x4C43_4C45  # pg_advisory_xact_lock key: "LCLE"
RETRIES = 8


def is_postgres_url(target) -> bool:
    return isinstance(target, str) and bool(PG_URL_RE.match(target))


class Sql:
    """One connection to SQLite or PostgreSQL (module docstring).

    sql.execute("... WHERE a=?", (1,)) -> cursor    sql.all(...), sql.one(...)
    with sql.transaction(): ...                      sql.run(fn): fn() in a transaction, retried
    """

    def __init__(self, target, password: object = None):
        if is_postgres_url(target):
            import psycopg

            self.dialect = "postgresql"
            self._pg = psycopg
            self._target, self._password = target, password
            self.conn = self._pg_connect()
            self.order = "id"
        else:
            self.dialect = "sqlite"
            self.path = Path(target)
            self.conn = connect(self.path)  # WAL, synchronous=FULL; migrate() brings the schema
            self.order = "rowid"

    def _pg_connect(self):
        kw = {"autocommit": True}
        if self._password is not None:
            kw["password"] = getattr(self._password, "value", self._password)
        try:
            return self._pg.connect(self._target, **kw)
        except self._pg.Error as e:
            # psycopg's message can quote the connection string; keep only the cause.
            raise ConnectionError("cannot connect to PostgreSQL: %s" % _first_line(e)) from None

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _q(self, sql: str) -> str:
        # psycopg reads % as a placeholder's start: a literal one (modulo, LIKE) is doubled
        return sql.replace("%", "%%").replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params=()):
        return self.conn.execute(self._q(sql), params)

    def executemany(self, sql: str, rows) -> None:
        if self.postgres:
            with self.conn.cursor() as cur:
                cur.executemany(self._q(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def all(self, sql: str, params=()) -> list[tuple]:
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def one(self, sql: str, params=()):
        r = self.execute(sql, params).fetchone()
        return None if r is None else tuple(r)

    @contextmanager
    def transaction(self) -> Iterator["Sql"]:
        if self.postgres:
            with self.conn.transaction():
                yield self
        else:
            with sqlite_transaction(self.conn):
                yield self

    def run(self, fn: Callable[[], object]):
        """fn() inside one transaction; on PostgreSQL a deadlock or a
        serialisation failure (another worker's transaction won) rolls back
        and runs fn again, and so does a connection the server dropped, on a
        new one. fn must only touch the database."""
        if not self.postgres:
            with self.transaction():
                return fn()
        transient = (self._pg.errors.DeadlockDetected, self._pg.errors.SerializationFailure)
        for attempt in range(RETRIES):
            try:
                with self.transaction():
                    return fn()
            except transient:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
            except self._pg.OperationalError:
                # The server restarted or the link broke: nothing was committed, so
                # connect again and run it again (an unreachable server raises here).
                if not self.conn.closed or attempt == RETRIES - 1:
                    raise
                self.conn = self._pg_connect()
        raise AssertionError("unreachable")

    def statements(self, template: str) -> None:
        """Run a schema template's ';'-separated statements (inside a transaction)."""
        sql = render_schema(template, self.dialect)
        if self.postgres:
            for stmt in sql.split(";\n"):
                if stmt.strip():
                    self.conn.execute(stmt)
        else:
            run_statements(self.conn, sql)

    def migrate(self, migrations) -> int:
        """Bring the schema to len(migrations); each migration is fn(sql)."""
        if not self.postgres:
            return sqlite_migrate(self.conn, [lambda _c, m=m: m(self) for m in migrations])
        target = len(migrations)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self.conn.execute("SELECT version FROM schema_version").fetchone()
            have = 0 if row is None else row[0]
            if row is None:
                self.conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            if have > target:
                raise RuntimeError(
                    "the database's schema version %d is newer than this program's %d (a newer liftcard made it)"
                    % (have, target)
                )
            for v in range(have + 1, target + 1):
                migrations[v - 1](self)
                self.conn.execute("UPDATE schema_version SET version=%s", (v,))
        return target

    def close(self) -> None:
        self.conn.close()


def db_errors() -> tuple:
    """The exceptions a database can raise at us: sqlite3's, psycopg's (when
    installed), a refused connection and a schema too new."""
    errs = [sqlite3.Error, ConnectionError, RuntimeError]
    try:
        import psycopg

        errs.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errs)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


_SPELLING = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY", "rides_id": "", "float": "REAL"},
    "postgresql": {
        "serial_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        # rides' order of first storage (SQLite has its rowid)
        "rides_id": "id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,",
        "float": "DOUBLE PRECISION",
    },
}


def render_schema(template: str, dialect: str) -> str:
    return template.format(**_SPELLING[dialect])


# -- the ledger's schema ----------------------------------------------------------------------

V1_RIDES = """
CREATE TABLE IF NOT EXISTS rides (
    {rides_id}
    gateway_id TEXT NOT NULL, reader_id BIGINT NOT NULL, seq BIGINT NOT NULL,
    building_id BIGINT NOT NULL, time BIGINT NOT NULL, uptime BIGINT NOT NULL, card_id TEXT NOT NULL,
    household BIGINT NOT NULL, floor INTEGER NOT NULL, fee INTEGER NOT NULL, result INTEGER NOT NULL,
    flags INTEGER NOT NULL, boot INTEGER NOT NULL, time_corrected BIGINT,
    batch_id BIGINT NOT NULL, stored_at {float} NOT NULL,
    PRIMARY KEY (gateway_id, reader_id, seq)
);
CREATE TABLE IF NOT EXISTS batches (
    gateway_id TEXT NOT NULL, batch_id BIGINT NOT NULL, reader_id BIGINT NOT NULL,
    first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, rides INTEGER NOT NULL, inserted INTEGER NOT NULL,
    first_seen {float} NOT NULL, last_seen {float} NOT NULL, received INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, batch_id)
);
"""

# The account book (accountbook.py); the charged rides of a ledger made before
# it are posted here, so its books balance from the first commit.
V2_BOOK = """
CREATE TABLE households (
    building_id BIGINT NOT NULL, household BIGINT NOT NULL,
    floor INTEGER NOT NULL CHECK (floor >= 0 AND floor <= 255), imported_at {float} NOT NULL,
    PRIMARY KEY (building_id, household)
);
CREATE TABLE costs (
    id {serial_pk}, building_id BIGINT NOT NULL, day TEXT NOT NULL, at BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0), memo TEXT NOT NULL, entered_at {float} NOT NULL
);
CREATE TABLE cost_shares (
    cost_id BIGINT NOT NULL REFERENCES costs (id), household BIGINT NOT NULL, floor INTEGER NOT NULL,
    weight BIGINT NOT NULL, share BIGINT NOT NULL CHECK (share >= 0),
    PRIMARY KEY (cost_id, household)
);
CREATE TABLE postings (
    id {serial_pk}, entry TEXT NOT NULL, building_id BIGINT NOT NULL, account TEXT NOT NULL,
    at BIGINT NOT NULL, amount BIGINT NOT NULL CHECK (amount <> 0),
    UNIQUE (entry, account)
);
CREATE INDEX postings_account_at ON postings (account, at);
CREATE INDEX postings_building_at ON postings (building_id, at);
CREATE INDEX rides_building_time ON rides (building_id, time);
INSERT INTO postings (entry, building_id, account, at, amount)
    SELECT 'ride:' || gateway_id || ':' || CAST(reader_id AS TEXT) || ':' || CAST(seq AS TEXT), building_id,
           'household:' || CAST(building_id AS TEXT) || ':' || CAST(household AS TEXT),
           %d + COALESCE(time_corrected, time), fee
    FROM rides WHERE result = 0 AND fee > 0;
INSERT INTO postings (entry, building_id, account, at, amount)
    SELECT 'ride:' || gateway_id || ':' || CAST(reader_id AS TEXT) || ':' || CAST(seq AS TEXT), building_id,
           'fund:' || CAST(building_id AS TEXT), %d + COALESCE(time_corrected, time), -fee
    FROM rides WHERE result = 0 AND fee > 0;
""" % (LIFTCARD_EPOCH, LIFTCARD_EPOCH)

# Versions (SQLite's user_version, PostgreSQL's schema_version). Version 1 is
# also what ledgers made before versions hold: it creates only what is missing.
MIGRATIONS = (
    lambda sql: sql.statements(V1_RIDES),
    lambda sql: sql.statements(V2_BOOK),
)

RIDE_SQL = (
    "INSERT INTO rides (gateway_id, reader_id, seq, building_id, time, uptime, card_id, household, floor, fee, "
    "result, flags, boot, time_corrected, batch_id, stored_at) VALUES %s ON CONFLICT DO NOTHING RETURNING seq"
)
RIDE_VALUES = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
RIDES_PER_INSERT = 500  # 16 parameters a ride: well under SQLite's and PostgreSQL's limits


class LedgerDB:
    """The ledger's store: rides exactly once, with their postings, on SQLite
    (a path) or PostgreSQL (a postgresql:// URL; `password` apart)."""

    def __init__(self, target, password: object = None):
        self.sql = Sql(target if is_postgres_url(target) else Path(target), password)
        try:
            self.sql.migrate(MIGRATIONS)
        except BaseException:
            self.sql.close()
            raise

    @property
    def conn(self):
        """The raw connection (sqlite3 or psycopg), for tests and tools."""
        return self.sql.conn

    def close(self):
        self.sql.close()

    def store(self, b, now: float | None = None) -> int:
        """Store a verified batch and post its charged rides, in one
        transaction; returns the rides newly stored. A ride already stored
        (a duplicate, an overlapping resend, another worker's delivery)
        stores and posts nothing."""
        now = time.time() if now is None else now
        sql = self.sql

        def apply() -> int:
            new: set[int] = set()
            rows = [
                (
                    b.gateway_id,
                    b.reader_id,
                    r.seq,
                    b.building_id,
                    r.time,
                    r.uptime,
                    "%016x" % r.card_id,
                    r.household,
                    r.floor,
                    r.fee,
                    r.result,
                    r.flags,
                    r.boot,
                    r.time_corrected,
                    b.batch_id,
                    now,
                )
                for r in b.rides
            ]
            for i in range(0, len(rows), RIDES_PER_INSERT):
                chunk = rows[i : i + RIDES_PER_INSERT]
                # RETURNING names only the rides this insert inserted: those, and only those, are posted
                sql_text = RIDE_SQL % ",".join([RIDE_VALUES] * len(chunk))
                new.update(s for (s,) in sql.all(sql_text, [v for row in chunk for v in row]))
            inserted = len(new)
            postings = []
            for r in b.rides:
                legs = book.ride_legs(b.building_id, r.household, r.result, r.fee) if r.seq in new else None
                if legs:
                    at = book.ride_unix_time(r.time, r.time_corrected)
                    postings += book.posting_rows(
                        book.ride_entry(b.gateway_id, b.reader_id, r.seq), b.building_id, at, legs
                    )
            if postings:
                sql.executemany(book.POSTING_SQL, postings)
            sql.execute(
                "INSERT INTO batches (gateway_id, batch_id, reader_id, first_seq, last_seq, rides, inserted, "
                "first_seen, last_seen, received) VALUES (?,?,?,?,?,?,?,?,?,1) "
                "ON CONFLICT (gateway_id, batch_id) DO UPDATE SET last_seen=excluded.last_seen, "
                "received=batches.received+1, inserted=batches.inserted+excluded.inserted",
                (b.gateway_id, b.batch_id, b.reader_id, b.first_seq, b.last_seq, len(b.rides), inserted, now, now),
            )
            return inserted

        return sql.run(apply)

    def totals(self) -> list[dict]:
        """Per (gateway, reader): `rides` is every tap stored (granted or
        denied: the readers' log records, as before the account book), then
        charged, free and denied apart, and the fees charged."""
        return [
            {"gateway_id": g, "reader_id": r, "rides": n, "charged": c, "free": fr, "denied": d, "fees_fen": f}
            for g, r, n, c, fr, d, f in self.sql.all(
                "SELECT gateway_id, reader_id, count(*), "
                "COALESCE(sum(CASE WHEN result = 0 AND fee > 0 THEN 1 ELSE 0 END), 0), "
                "COALESCE(sum(CASE WHEN result = 0 AND fee <= 0 THEN 1 ELSE 0 END), 0), "
                "COALESCE(sum(CASE WHEN result <> 0 THEN 1 ELSE 0 END), 0), "
                "COALESCE(sum(CASE WHEN result = 0 THEN fee ELSE 0 END), 0) FROM rides "
                "GROUP BY gateway_id, reader_id ORDER BY gateway_id, reader_id"
            )
        ]

    def seqs_in_storage_order(self, gateway_id: str, reader_id: int) -> list[int]:
        return [
            s
            for (s,) in self.sql.all(
                "SELECT seq FROM rides WHERE gateway_id=? AND reader_id=? ORDER BY %s" % self.sql.order,
                (gateway_id, reader_id),
            )
        ]
