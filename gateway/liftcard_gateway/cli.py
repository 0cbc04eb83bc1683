"""liftcard-gateway: `run`, `status [--json]`, `report`, `cards import FILE |
cards status`, `import FILE` (a harvest file), `backup FILE` (backup.py), each with `--config gw.toml`
(docs/gateway.md, docs/cards.md); the set-up verbs `init`, `broker` (opsetup.py)
and `readers add | remove | rotate-key | list` (readerverbs.py)
(docs/operations.md).

Exit status: 0 done; 1 refused or failed (one line on stderr); 2 a bad config
or a bad command line, or a harvest file refused (`import`). `run` logs JSON lines to stderr (logs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sqlite3
import sys
from pathlib import Path

from liftcard_protocol.cardupdate import INCREMENTAL, KIND_NAMES, R_GAP, UpdateError

from . import backup, logs, overview, report
from .carddb import CardDB, verify_update
from .config import GatewayConfigError, load_config
from .daemon import Gateway
from .db import connect, explain
from .importer import ImportRefused, describe, import_harvest, read_harvest
from . import opsetup, readerverbs
from .store import Store
from .schema import open_gateway_db
from .tables import format_cards_status, format_overview

PROG = "liftcard-gateway"
MAX_CARD_UPDATE_FILE = 256 * 1024 * 1024


def _fail(msg: str, status: int = 1) -> int:
    print("%s: %s" % (PROG, msg), file=sys.stderr)
    return status


class _CannotOpen(Exception):
    pass


def _open(cfg, make):
    """make() (a store on cfg.db_path), or _CannotOpen with the one-line reason."""
    try:
        return make()
    except (OSError, sqlite3.Error) as e:
        raise _CannotOpen(
            "cannot open the database %s: %s" % (cfg.db_path, getattr(e, "strerror", None) or e)
        ) from None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="liftcard Raspberry Pi gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (
        ("run", "run the daemon (until SIGTERM/SIGINT)"),
        ("status", "print the readers table (and the upstream backlog) from the database"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="the gateway's TOML config")
        if name == "status":  # docs/gateway.md, "Status and report"
            p.add_argument("--json", action="store_true", help="one JSON object (the same figures) for scripts")
    report.add_parser(sub)
    # docs/cards.md: the card database fed by the bank's signed card updates
    pc = sub.add_parser("cards", help="the card database: import a signed card update, show versions")
    csub = pc.add_subparsers(dest="cards_cmd", required=True)
    pi = csub.add_parser("import", help="apply a signed card update file to the database")
    pi.add_argument("file", help="the signed update (liftcard-bank update --out ...); - reads it from stdin")
    pi.add_argument("--config", required=True, help="the gateway's TOML config")
    ps = csub.add_parser("status", help="database version, cards per building, readers' versions")
    ps.add_argument("--config", required=True, help="the gateway's TOML config")
    # docs/gateway.md, "Importing a harvest": rides rescued over USB from a reader
    ph = sub.add_parser("import", help="store the rides of a harvest file (liftcard-provision harvest)")
    ph.add_argument("file", help="the harvest file (.lchv)")
    ph.add_argument("--config", required=True, help="the gateway's TOML config")
    # docs/operations.md: setting the gateway up (opsetup.py, readerverbs.py)
    opsetup.add_parsers(sub)
    readerverbs.add_parser(sub)
    backup.add_parser(sub)
    return ap


def _owner_hint(path) -> str:
    """' (... run it as OWNER ...)' when the config is kept from this user by
    its owner's modes (the guide's 0700 /etc/liftcard of the liftcard user),
    else ''. The first path up the tree this user can stat names the owner."""
    p = Path(path).absolute()
    if os.access(p, os.R_OK):
        return ""
    for q in (p, *p.parents):
        try:
            uid = os.stat(q).st_uid
        except PermissionError:
            continue
        except OSError:
            return ""
        if uid == os.geteuid():
            return ""
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return " (it belongs to %s: run the command as that user, sudo -u %s %s ...)" % (name, name, PROG)
    return ""


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "init":  # before there is a config to load
        return opsetup.run(lambda: opsetup.init(args))
    try:
        cfg = load_config(args.config)
    except GatewayConfigError as e:
        return _fail("config error: %s%s" % (e, _owner_hint(args.config)), 2)
    if args.cmd == "broker":
        return opsetup.run(lambda: opsetup.broker_command(cfg))
    if args.cmd == "readers":
        return opsetup.run(lambda: readerverbs.command(cfg, args))
    try:
        if args.cmd == "cards":
            if cfg.cards is None:
                return _fail("config error: cards: no [cards] section in %s (no card database)" % cfg.path, 2)
            if args.cards_cmd == "import":
                return cards_import(cfg, Path(args.file))
            return cards_status(cfg)
        if args.cmd == "status":
            return status(cfg, args.json)
        if args.cmd == "report":
            return report.command(cfg, args)
        if args.cmd == "import":
            return harvest_import(cfg, Path(args.file))
        if args.cmd == "backup":
            return backup.command(cfg, args)
        return run(cfg)
    except (_CannotOpen, backup.BackupError) as e:
        return _fail(str(e))


def run(cfg) -> int:
    logs.setup()
    try:
        gw = Gateway(cfg)
    except OSError as e:
        return _fail("cannot open the data directory %s: %s" % (cfg.data_dir, e.strerror))
    except sqlite3.Error as e:
        # SQLite names neither the file nor why ("attempt to write a readonly
        # database"): a read-only -shm or a full disk is said as such.
        return _fail(explain(cfg.db_path, e) or "cannot open the database %s: %s" % (cfg.db_path, e))
    return gw.run()


def status(cfg, as_json: bool = False) -> int:
    """The readers table, open gaps, refusals, then (with [upstream]) what the
    ledger has not acknowledged yet: overview.py's figures, as text or JSON."""
    if not cfg.db_path.exists():
        return _fail("no database yet at %s (run the daemon first)" % cfg.db_path)
    conn = _open(cfg, lambda: open_gateway_db(cfg.db_path))
    try:
        snap = overview.for_config(conn, cfg)
    finally:
        conn.close()
    print(json.dumps(snap, indent=1) if as_json else format_overview(snap))
    return 0


def cards_import(cfg, path: Path) -> int:
    """Verify a signed card update file, then apply it; the database is not
    touched (nor created) for a refused one."""
    cc = cfg.cards
    try:
        if str(path) == "-":  # the operator's shell opens a file the liftcard user may not read
            payload = sys.stdin.buffer.read(MAX_CARD_UPDATE_FILE + 1)
        else:
            with open(path, "rb") as f:
                payload = f.read(MAX_CARD_UPDATE_FILE + 1)
    except PermissionError as e:
        return _fail("cannot read %s: %s (give it on stdin: cards import - < %s)" % (path, e.strerror, path))
    except OSError as e:
        return _fail("cannot read %s: %s" % (path, e.strerror or type(e).__name__))
    try:
        u = verify_update(cc.bank_public_key, cc.compound_id, payload)
        if not cfg.db_path.exists() and u.kind == INCREMENTAL:
            raise UpdateError(
                R_GAP,
                "incremental card update %d->%d, but there is no card database yet "
                "(import a snapshot first)" % (u.base_version, u.version),
            )
    except UpdateError as e:
        return _fail("card update refused (%s): %s" % (e.reason, e))
    db = _open(cfg, lambda: CardDB(cfg.db_path, cc.bank_public_key, cc.compound_id, cc.history_versions))
    try:
        try:
            u, changed = db.apply(payload, verified=u)
        except UpdateError as e:
            return _fail("card update refused (%s): %s" % (e.reason, e))
        counts = db.counts()
    finally:
        db.close()
    print(
        "card database at version %d (%s, %d operations, %d cards changed; %d cards in %d buildings)"
        % (u.version, KIND_NAMES[u.kind], len(u.ops), changed, sum(counts.values()), len(counts))
    )
    return 0


def harvest_import(cfg, path: Path) -> int:
    """Store a harvest file's rides (importer.py); a refused file touches no
    database: one line, exit 2."""
    try:
        h = read_harvest(path, cfg.readers)
    except ImportRefused as e:
        return _fail("import refused: %s" % e, 2)
    st = _open(cfg, lambda: Store(cfg.db_path))
    try:
        r = import_harvest(st, h, cfg.readers[h.reader_id])
    finally:
        st.close()
    print(describe(path, r))
    return 0


def cards_status(cfg) -> int:
    cc = cfg.cards
    if not cfg.db_path.exists():
        return _fail("no database yet at %s (import a card update or run the daemon first)" % cfg.db_path)
    db = _open(cfg, lambda: CardDB(cfg.db_path, cc.bank_public_key, cc.compound_id, cc.history_versions))
    try:
        print(format_cards_status(db, cfg, _held_versions(cfg.db_path)))
    finally:
        db.close()
    return 0


def _held_versions(db_path) -> dict:
    """reader_id -> the whitelist version of its last heartbeat (store.py's readers table)."""
    con = connect(db_path, readonly=True)
    try:
        return dict(con.execute("SELECT reader_id, wl_version FROM readers"))
    finally:
        con.close()
