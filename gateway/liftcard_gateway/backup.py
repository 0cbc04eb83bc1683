"""`liftcard-gateway backup FILE`: a copy of gateway.db taken while the daemon
runs (docs/operations.md, "Backups, moving the Pi").

SQLite's online backup (the page copy the `sqlite3` shell's `.backup` does)
from a read-only connection, so the daemon goes on storing rides and nothing
on the Pi changes. The copy holds card ids: it is created 0600, never over an
existing file, and is one self-contained file (rollback journal, not WAL:
no `-wal` beside it to forget), checked with `PRAGMA quick_check` before it
is reported written. A copy that failed half-way is removed. Restoring it
is by hand (operations.md): stop the daemon, put it in place, start.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .db import connect


class BackupError(Exception):
    """One line: why no backup was written."""


def _rides(conn) -> int:
    try:
        return conn.execute("SELECT count(*) FROM rides").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def backup(db_path: Path, out: Path) -> int:
    """Copy db_path into the new file out (0600); the rides in the copy."""
    if not db_path.exists():
        raise BackupError("no database yet at %s (run the daemon first)" % db_path)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError("%s exists: name a new file (a backup never replaces one)" % out) from None
    except OSError as e:
        raise BackupError("cannot create %s: %s" % (out, e.strerror)) from None
    os.close(fd)
    done = False
    try:
        try:
            src = connect(db_path, readonly=True)
        except (OSError, sqlite3.Error) as e:
            raise BackupError(
                "cannot open the database %s: %s" % (db_path, getattr(e, "strerror", None) or e)
            ) from None
        try:
            dst = sqlite3.connect(out, isolation_level=None)
            try:
                src.backup(dst)
                # The copy carries the source's WAL flag; a lone file is what a backup should be.
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise BackupError("the copy in %s does not check: %s" % (out, check))
                rides = _rides(dst)
            finally:
                dst.close()
        except sqlite3.Error as e:
            raise BackupError("backup of %s into %s failed: %s" % (db_path, out, e)) from None
        finally:
            src.close()
        done = True
        return rides
    finally:
        if not done:
            for p in (out, Path(str(out) + "-journal"), Path(str(out) + "-wal"), Path(str(out) + "-shm")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass


def add_parser(sub) -> None:
    p = sub.add_parser("backup", help="copy the database into a new file (0600) while the daemon runs")
    p.add_argument("file", help="the new file (it holds card ids: encrypt it before it leaves the Pi)")
    p.add_argument("--config", required=True, help="the gateway's TOML config")


def command(cfg, args) -> int:
    out = Path(args.file)
    rides = backup(cfg.db_path, out)
    print("wrote %s (0600, %d rides): it holds card ids, encrypt it before it leaves the Pi" % (out, rides))
    return 0
