"""SQLite for every store: the gateway's database (store.py, carddb.py,
upstream.py; its tables are in schema.py) and the reference ledger's.

- `connect(path)`: WAL, `synchronous=FULL` (a commit is on disk when it
  returns: an ack promises that), a 30 s busy timeout (the daemon, the
  upstream and the CLI share one file), autocommit mode (`isolation_level=None`:
  every transaction is explicit, through `transaction()`), and usable from
  any thread (`check_same_thread=False`; each store serialises its own use).
  `readonly=True`: a read-only connection that creates and changes nothing.
- `transaction(conn)`: BEGIN IMMEDIATE .. COMMIT; any exception rolls back and
  propagates. A rollback that fails itself never hides the error that caused
  it: that error propagates, with the rollback's failure added as a note. (On
  a full disk SQLite has already rolled the transaction back, and a bare
  ROLLBACK would replace "database or disk is full" by "cannot rollback - no
  transaction is active".)
- `savepoint(conn, name)`: a nested part of a transaction that an exception
  undoes alone.
- `migrate(conn, migrations)`: schema versions in `PRAGMA user_version`. A
  database at version v gets migrations[v:] applied, in order, in ONE
  transaction with the new version, so a crash leaves it at v or at the end.
  A database newer than the program is refused (`SchemaError`).
- `open_db(path, migrations)`: connect, then migrate.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

BUSY_TIMEOUT_S = 30.0

# A migration: a function that changes the schema of a connection inside
# migrate()'s transaction. It must not commit (no executescript()).
Migration = Callable[[sqlite3.Connection], None]


class SchemaError(sqlite3.DatabaseError):
    """The database's schema version is not one this program can use."""


def connect(path, readonly: bool = False, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection with the pragmas every store relies on (module docstring).
    Creates the parent directory (not for readonly)."""
    path = Path(path)
    if readonly:
        return sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro",
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=%d" % int(timeout * 1000))
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def _undo(conn, sql: str, cause: BaseException) -> None:
    """Run a rollback statement after `cause`; if it fails, note that on `cause`
    (which the caller re-raises) instead of raising."""
    try:
        conn.execute(sql)
    except Exception as e:
        cause.add_note("(%s failed too: %s: %s)" % (sql.split()[0], type(e).__name__, e))


@contextmanager
def transaction(conn, mode: str = "IMMEDIATE") -> Iterator:
    """BEGIN <mode> .. COMMIT. On any exception (in the body or at COMMIT) the
    transaction is rolled back, if SQLite has not already done so, and the
    exception propagates; a failing rollback never replaces it."""
    conn.execute("BEGIN %s" % mode)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            _undo(conn, "ROLLBACK", e)
        raise


@contextmanager
def savepoint(conn, name: str) -> Iterator:
    """SAVEPOINT name .. RELEASE name, inside a transaction. An exception in the
    body undoes what the body did (ROLLBACK TO), releases the savepoint and
    propagates; the enclosing transaction goes on if the caller catches it.

    When SQLite has already rolled the whole transaction back (a full disk)
    there is nothing to undo, and the body's error propagates as it is. If
    the undo itself fails, the transaction no longer holds what the caller
    thinks: that failure propagates (the body's exception is its context),
    so a caller that catches the body's refusals cannot go on, and the
    enclosing transaction() rolls back."""
    conn.execute("SAVEPOINT %s" % name)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO %s" % name)
            conn.execute("RELEASE %s" % name)
        raise
    conn.execute("RELEASE %s" % name)


def user_version(conn) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn, migrations: Sequence[Migration]) -> int:
    """Bring the schema to version len(migrations) (module docstring); returns it."""
    target = len(migrations)
    if user_version(conn) == target:  # the common case: no write lock needed
        return target
    with transaction(conn):
        have = user_version(conn)  # again, under the lock: another process may have migrated
        if have > target:
            raise SchemaError(
                "the database's schema version %d is newer than this program's %d "
                "(a newer liftcard made it)" % (have, target)
            )
        for version in range(have + 1, target + 1):
            migrations[version - 1](conn)
            conn.execute("PRAGMA user_version=%d" % version)
    return target


def open_db(path, migrations: Sequence[Migration], timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """connect(path) with its schema brought up to date."""
    conn = connect(path, timeout=timeout)
    try:
        migrate(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


# -- helpers for migrations -------------------------------------------------------------


def run_statements(conn, sql: str) -> None:
    """Execute the ';'-separated statements of sql one by one (inside the
    caller's transaction; executescript() would commit it)."""
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError("incomplete SQL statement: %r" % buf.strip()[:60])


def columns(conn, table: str) -> list[str]:
    return [r[1] for r in conn.execute("PRAGMA table_info(%s)" % table)]


def add_missing_columns(conn, table: str, cols: dict[str, str]) -> None:
    """ALTER TABLE .. ADD COLUMN for each name -> SQL type the table lacks (NULL
    in existing rows): the migrations of databases made before schema versions."""
    have = set(columns(conn, table))
    for name, typ in cols.items():
        if name not in have:
            conn.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, name, typ))
