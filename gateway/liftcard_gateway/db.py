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
- `explain(path, err)`: what an SQLite error at opening or writing `path`
  means in one line naming the file and the cause (a read-only `-wal`/`-shm`
  or database file with its mode, a read-only directory, a full disk), or
  None; SQLite itself says only "attempt to write a readonly database" or
  "disk I/O error", naming no file.
- `repair_modes(path)`: SQLite's own `-wal` and `-shm` files of `path` made
  writable again (0600) when this user owns them and they are not (a start
  that failed half-way, or a tool run with another umask, can leave them
  read-only; their content is SQLite's and their mode nobody's choice).
  Returns what it changed; a file of another owner is left to explain().
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

BUSY_TIMEOUT_S = 30.0
# Below this much free space on the database's file system an SQLite error is
# put down to a full disk (a WAL checkpoint or the -shm needs some room).
LOW_SPACE_BYTES = 1 << 20

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


# -- what an error means -----------------------------------------------------------------


def sidecars(path) -> list[Path]:
    """The database file, then its -wal and -shm."""
    path = Path(path)
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def repair_modes(path) -> list[str]:
    """Make the -wal and -shm of `path` writable (0600) when this user owns them
    and cannot write them (module docstring); returns one line per change."""
    done = []
    for f in sidecars(path)[1:]:
        try:
            st = os.stat(f)
        except OSError:
            continue
        if st.st_uid == os.geteuid() and not os.access(f, os.W_OK):
            os.chmod(f, 0o600)
            done.append("%s was read-only (mode %04o): made it 0600" % (f, stat.S_IMODE(st.st_mode)))
    return done


def explain(path, err: BaseException) -> str | None:
    """One line naming the file and the cause of an SQLite error on `path`, or
    None when none of the known causes applies (module docstring)."""
    path = Path(path)
    for f in sidecars(path):
        try:
            st = os.stat(f)
        except OSError:
            continue
        if not os.access(f, os.W_OK):
            me = _owner(os.geteuid())
            fix = "chmod 600 %s" % f
            if st.st_uid != os.geteuid():
                fix = "chown %s %s && %s" % (me, f, fix)
            return "cannot open %s: read-only (mode %04o, owner %s; this is %s); %s" % (
                f,
                stat.S_IMODE(st.st_mode),
                _owner(st.st_uid),
                me,
                fix,
            )
    d = path.parent
    if d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
        return "cannot open %s: its directory %s is read-only for %s (SQLite needs to create %s-wal there)" % (
            path,
            d,
            _owner(os.geteuid()),
            path.name,
        )
    try:
        vfs = os.statvfs(d)
    except OSError:
        return None
    free = vfs.f_bavail * vfs.f_frsize
    if free < LOW_SPACE_BYTES:
        return "cannot write %s: the disk is full (%d bytes free on %s; SQLite: %s); free some space there" % (
            path,
            free,
            d,
            err,
        )
    return None
