"""The gateway's card database and whitelist distribution (docs/cards.md).

- `CardDB`: the card tables in the gateway's SQLite file (WAL), fed by the
  bank's signed card updates (liftcard_protocol.cardupdate). `apply()` verifies an update
  (signature, compound, version: no stale, no gap) and applies it in ONE
  transaction, keeping a change history for the last `history_versions`
  updates so deltas can be computed.
- `CardService`: what the daemon uses. `apply_update(payload)` is the entry
  point for updates from the bank (the upstream module calls it; the CLI
  `liftcard-gateway cards import` does the same through CardDB);
  `on_status(reader_id, building_id, held_version, send)` is called at every
  verified STATUS and sends the reader a DELTA or the full list in WHITELIST
  chunks when it is behind the database's version.
- `main_cards(args, cfg)`: the `cards import` / `cards status` subcommands.

Logs (JsonLog): card_update_applied, card_update_refused (reason: malformed,
forged, compound, stale, gap), whitelist_sent, whitelist_ahead. Never a card
id, key, MAC or signature.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from liftcard_protocol import link
from liftcard_protocol.cardupdate import (
    INCREMENTAL,
    KIND_NAMES,
    R_COMPOUND,
    R_GAP,
    R_STALE,
    SNAPSHOT,
    CardUpdate,
    UpdateError,
    parse_update,
)
from liftcard_protocol.card import CardRecord
from liftcard_protocol.delta import build_delta
from liftcard_protocol.epoch import epoch_from_unix
from liftcard_protocol.fields import card_id_hex
from liftcard_protocol.whitelist import build_whitelist
from .store import ago, render_table

MAX_DELTA_OPS = (link.MAX_BLOB - link.MIN_DELTA) // 17  # 238: one LCWD in one DELTA message
assert MAX_DELTA_OPS == 238
DEFAULT_FULL_LIST_AFTER_OPS = MAX_DELTA_OPS
DEFAULT_RESEND_AFTER_S = 120.0
DEFAULT_HISTORY_VERSIONS = 64
_REC_COLS = ("household", "floors", "status", "klass", "valid_until")


@dataclass(frozen=True)
class ApplyResult:
    """What became of one card update. applied: the database is now at `version`.
    Otherwise `reason` says why it was refused (the database did not change);
    duplicate: a stale update identical to the one applied at its version (a
    redelivery, harmless)."""

    applied: bool
    version: int            # the database's version after this call
    reason: str | None = None
    message: str = ""       # one line, no card ids
    kind: str | None = None
    update_version: int | None = None
    ops: int = 0            # operations in the update
    changed: int = 0        # cards actually changed
    duplicate: bool = False

    def __bool__(self) -> bool:
        return self.applied


@dataclass(frozen=True)
class Plan:
    """What a reader needs: how = "delta" (ops from from_version) or "full" (cards)."""

    how: str
    from_version: int
    to_version: int
    ops: tuple = ()
    cards: tuple = ()

    def __repr__(self) -> str:
        return "Plan(%s %d->%d, ops=%d, cards=%d)" % (self.how, self.from_version, self.to_version,
                                                     len(self.ops), len(self.cards))


def verify_update(public_key: bytes, compound_id: int, payload: bytes) -> CardUpdate:
    """The update if its signature verifies and it is for this compound;
    raises UpdateError."""
    u = parse_update(public_key, payload)
    if u.compound_id != compound_id:
        raise UpdateError(R_COMPOUND, "card update is for compound %d, this gateway is compound %d"
                          % (u.compound_id, compound_id))
    return u


def _row_record(card_hex: str, row) -> CardRecord:
    return CardRecord(int(card_hex, 16), *row)


class CardDB:
    """The card tables (docs/cards.md, "The database"). Thread-safe: one
    connection, one lock (the daemon's paho thread and an upstream thread)."""

    def __init__(self, path, public_key: bytes, compound_id: int,
                 history_versions: int = DEFAULT_HISTORY_VERSIONS):
        self.path = Path(path)
        self.public_key = bytes(public_key)
        self.compound_id = compound_id
        self.history_versions = history_versions
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.RLock()
        self._create()

    def __repr__(self) -> str:
        return "CardDB(%s)" % self.path

    def _create(self) -> None:
        db = self.db
        names = set(db.table_names())
        if "card_meta" not in names:
            db["card_meta"].create({"key": str, "value": int}, pk="key")
        if "cards" not in names:
            db["cards"].create({"building_id": int, "card_id": str, "household": int, "floors": int,
                                "status": int, "klass": int, "valid_until": int, "version": int},
                               pk=("building_id", "card_id"), not_null={"building_id", "card_id"})
        if "card_history" not in names:
            # op: "upsert" (the record fields are the new record) or "remove" (NULL fields).
            db["card_history"].create({"building_id": int, "version": int, "card_id": str, "op": str,
                                       "household": int, "floors": int, "status": int, "klass": int,
                                       "valid_until": int},
                                      pk=("building_id", "version", "card_id"))
            db["card_history"].create_index(["version"], index_name="card_history_version")
        if "card_updates" not in names:
            db["card_updates"].create({"version": int, "kind": str, "base_version": int, "issued": int,
                                       "ops": int, "changed": int, "applied_at": float, "sha256": str},
                                      pk="version")
        if "card_sends" not in names:
            db["card_sends"].create({"reader_id": int, "building_id": int, "from_version": int,
                                     "to_version": int, "how": str, "bytes": int, "sent_at": float},
                                    pk="reader_id")

    def close(self) -> None:
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass

    # -- reading ------------------------------------------------------------------
    def _meta(self, key: str) -> int:
        row = self.conn.execute("SELECT value FROM card_meta WHERE key=?", (key,)).fetchone()
        return row[0] if row and row[0] is not None else 0

    def version(self) -> int:
        """The database's version (0: no update applied yet). Cheap."""
        with self._lock:
            return self._meta("version")

    def history_floor(self) -> int:
        """The history covers the changes of every version in (floor, version]."""
        with self._lock:
            return self._meta("history_floor")

    def cards(self, building_id: int) -> list[CardRecord]:
        with self._lock:
            return self._cards(building_id)

    def _cards(self, building_id: int) -> list[CardRecord]:
        rows = self.conn.execute("SELECT card_id, %s FROM cards WHERE building_id=? ORDER BY card_id"
                                 % ", ".join(_REC_COLS), (building_id,))
        # card_id is 16 lowercase hex digits: text order is unsigned numeric order.
        return [_row_record(r[0], r[1:]) for r in rows]

    def counts(self) -> dict[int, int]:
        with self._lock:
            return {b: n for b, n in self.conn.execute(
                "SELECT building_id, count(*) FROM cards GROUP BY building_id ORDER BY building_id")}

    def updates(self, limit: int = 10) -> list[dict]:
        with self._lock:
            cols = ("version", "kind", "base_version", "ops", "changed", "applied_at")
            return [dict(zip(cols, r)) for r in self.conn.execute(
                "SELECT %s FROM card_updates ORDER BY version DESC LIMIT ?" % ", ".join(cols), (limit,))]

    # -- applying -----------------------------------------------------------------
    def apply(self, payload: bytes, now: float | None = None,
              verified: CardUpdate | None = None) -> tuple[CardUpdate, int]:
        """Verify and apply one signed update in one transaction. Returns
        (update, cards changed); raises UpdateError (database unchanged).
        `verified`: what verify_update already made of this payload."""
        u = verified or verify_update(self.public_key, self.compound_id, payload)
        digest = hashlib.sha256(bytes(payload)).hexdigest()
        now = time.time() if now is None else now
        with self._lock:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                cur = self._meta("version")
                if u.version <= cur:
                    row = c.execute("SELECT sha256 FROM card_updates WHERE version=?", (u.version,)).fetchone()
                    err = UpdateError(R_STALE, "card update version %d is not newer than the database's %d"
                                      % (u.version, cur))
                    err.duplicate = bool(row and row[0] == digest)
                    raise err
                if u.kind == INCREMENTAL and u.base_version != cur:
                    raise UpdateError(R_GAP, "incremental card update %d->%d does not follow the database's "
                                      "version %d (the bank must send a snapshot)" % (u.base_version, u.version, cur))
                changed = self._apply_ops(u, cur)
                c.execute("INSERT INTO card_updates (version, kind, base_version, issued, ops, changed, "
                          "applied_at, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (u.version, u.kind_name, u.base_version, u.issued, len(u.ops), changed, now, digest))
                c.execute("INSERT OR REPLACE INTO card_meta (key, value) VALUES ('version', ?)", (u.version,))
                self._prune(cur == 0, u.version)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return u, changed

    def _apply_ops(self, u: CardUpdate, cur: int) -> int:
        c = self.conn
        record_history = cur != 0  # nobody can hold a version before the first one
        changes = []  # (building, card hex, new record tuple or None)
        if u.kind == SNAPSHOT:
            old = {}
            for r in c.execute("SELECT building_id, card_id, %s FROM cards" % ", ".join(_REC_COLS)):
                old[(r[0], r[1])] = tuple(r[2:])
            seen = set()
            for o in u.ops:
                k = (o.building_id, card_id_hex(o.card_id))
                seen.add(k)
                rec = _rec_tuple(o.record)
                if old.get(k) != rec:
                    changes.append((k[0], k[1], rec))
            for k in old:
                if k not in seen:
                    changes.append((k[0], k[1], None))
        else:
            for o in u.ops:
                k = (o.building_id, card_id_hex(o.card_id))
                row = c.execute("SELECT %s FROM cards WHERE building_id=? AND card_id=?"
                                % ", ".join(_REC_COLS), k).fetchone()
                have = tuple(row) if row else None
                rec = _rec_tuple(o.record) if o.op == "upsert" else None
                if have != rec:
                    changes.append((k[0], k[1], rec))
        ups = [(b, h) + rec + (u.version,) for b, h, rec in changes if rec is not None]
        rems = [(b, h) for b, h, rec in changes if rec is None]
        c.executemany("INSERT OR REPLACE INTO cards (building_id, card_id, %s, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                      % ", ".join(_REC_COLS), ups)
        c.executemany("DELETE FROM cards WHERE building_id=? AND card_id=?", rems)
        if record_history:
            c.executemany("INSERT INTO card_history (building_id, version, card_id, op, %s) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)" % ", ".join(_REC_COLS),
                          [(b, u.version, h, "upsert" if rec else "remove") + (rec or (None,) * 5)
                           for b, h, rec in changes])
        return len(changes)

    def _prune(self, first: bool, version: int) -> None:
        c = self.conn
        floor = self._meta("history_floor")
        if first:
            floor = version
        else:
            row = c.execute("SELECT version FROM card_updates ORDER BY version DESC LIMIT 1 OFFSET ?",
                            (self.history_versions,)).fetchone()
            if row and row[0] > floor:
                floor = row[0]
        c.execute("INSERT OR REPLACE INTO card_meta (key, value) VALUES ('history_floor', ?)", (floor,))
        c.execute("DELETE FROM card_history WHERE version <= ?", (floor,))

    # -- per reader ---------------------------------------------------------------
    def plan(self, building_id: int, held: int, max_ops: int = MAX_DELTA_OPS) -> Plan | None:
        """What a reader of this building holding version `held` needs to reach
        the database's version: None (current, ahead, or no database yet), a
        delta when the history covers (held, version] and the changed cards
        number at most max_ops, else the full list. One read transaction, so
        an import running meanwhile is either wholly in or wholly out."""
        max_ops = min(max_ops, MAX_DELTA_OPS)
        with self._lock:
            c = self.conn
            c.execute("BEGIN")
            try:
                cur = self._meta("version")
                if cur == 0 or held >= cur:
                    return None
                covered = (held > 0 and held >= self._meta("history_floor")
                           and c.execute("SELECT 1 FROM card_updates WHERE version=?", (held,)).fetchone())
                if covered:
                    ids = [r[0] for r in c.execute(
                        "SELECT DISTINCT card_id FROM card_history WHERE building_id=? AND version>? "
                        "AND version<=? ORDER BY card_id LIMIT ?", (building_id, held, cur, max_ops + 1))]
                    if len(ids) <= max_ops:
                        ops = []
                        for h in ids:
                            row = c.execute("SELECT %s FROM cards WHERE building_id=? AND card_id=?"
                                            % ", ".join(_REC_COLS), (building_id, h)).fetchone()
                            ops.append(("upsert", _row_record(h, row)) if row else ("remove", int(h, 16)))
                        return Plan("delta", held, cur, ops=tuple(ops))
                return Plan("full", held, cur, cards=tuple(self._cards(building_id)))
            finally:
                c.execute("COMMIT")

    def record_send(self, reader_id: int, building_id: int, plan: Plan, nbytes: int,
                    now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self.conn.execute("INSERT OR REPLACE INTO card_sends (reader_id, building_id, from_version, "
                              "to_version, how, bytes, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (reader_id, building_id, plan.from_version, plan.to_version, plan.how, nbytes, now))

    def sends(self) -> dict[int, dict]:
        with self._lock:
            cols = ("reader_id", "from_version", "to_version", "how", "bytes", "sent_at")
            return {r[0]: dict(zip(cols, r)) for r in self.conn.execute(
                "SELECT %s FROM card_sends" % ", ".join(cols))}


def _rec_tuple(rec: CardRecord) -> tuple:
    return (rec.household, rec.floors, rec.status, rec.klass, rec.valid_until)


class CardService:
    """The daemon's side: apply bank updates, bring readers up to date.

    cfg: a GatewayConfig whose `cards` is set. log: a JsonLog-like callable.
    clock: monotonic seconds (tests pass their own)."""

    def __init__(self, cfg, log, clock=time.monotonic):
        cc = cfg.cards
        self.cfg = cfg
        self.log = log
        self.clock = clock
        self.max_ops = min(cc.full_list_after_ops, MAX_DELTA_OPS)
        self.resend_after_s = cc.resend_after_s
        self.db = CardDB(cfg.db_path, cc.bank_public_key, cc.compound_id, cc.history_versions)
        self._keys = {rid: r.key.value for rid, r in cfg.readers.items()}
        self._sent: dict[int, tuple] = {}     # reader -> (from, to, how, monotonic time)
        self._ahead: dict[int, tuple] = {}    # reader -> (held, version) last logged as ahead
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- from the bank ---------------------------------------------------------------
    def apply_update(self, payload: bytes) -> ApplyResult:
        """Apply one signed card update (bytes as the bank sent them). Never
        raises for bad input: returns an ApplyResult and logs
        card_update_applied or card_update_refused."""
        return apply_and_log(self.db, payload, self.log)

    # -- to the readers ---------------------------------------------------------------
    def on_status(self, reader_id: int, building_id: int, held: int, send) -> Plan | None:
        """Called at each verified STATUS of a configured reader with the
        whitelist version it reports. send(make) publishes one down message:
        make(counter) returns its bytes. Returns the plan sent, or None."""
        with self._lock:
            now = self.clock()
            plan = self.db.plan(building_id, held, self.max_ops)
            if plan is None:
                self._sent.pop(reader_id, None)
                cur = self.db.version()
                if held > cur and self._ahead.get(reader_id) != (held, cur):
                    self._ahead[reader_id] = (held, cur)
                    self.log("whitelist_ahead", reader_id=reader_id, held_version=held, version=cur)
                return None
            prev = self._sent.get(reader_id)
            if prev is not None:
                p_from, p_to, p_how, at = prev
                waiting = p_from == held and now - at < self.resend_after_s
                # The reader has not yet reported what was sent from this version:
                # wait for the timeout, unless a small delta is outdated by a newer version.
                if waiting and (p_to == plan.to_version or p_how == "full"):
                    return None
            key = self._keys[reader_id]
            if plan.how == "delta":
                blob = build_delta(key, reader_id, building_id, plan.from_version, plan.to_version, plan.ops)
                send(lambda counter: link.build_delta(key, reader_id, building_id, counter, blob))
                nbytes = link.MIN_MSG + len(blob)
            else:
                blob = build_whitelist(key, reader_id, building_id, plan.to_version, plan.cards,
                                       issued=max(0, min(epoch_from_unix(int(time.time())), 0xFFFFFFFF)))
                nbytes = 0
                for off, data in link.whitelist_chunks(blob):
                    send(lambda counter, off=off, data=data: link.build_whitelist_chunk(
                        key, reader_id, building_id, counter, plan.to_version, len(blob), off, data))
                    nbytes += link.MIN_MSG + link.WLCHUNK_HEADER_LEN + len(data)
            self._sent[reader_id] = (plan.from_version, plan.to_version, plan.how, now)
            self.db.record_send(reader_id, building_id, plan, nbytes)
            self.log("whitelist_sent", reader_id=reader_id, from_version=plan.from_version,
                     to_version=plan.to_version, how=plan.how, bytes=nbytes)
            return plan


def apply_and_log(db: CardDB, payload: bytes, log) -> ApplyResult:
    try:
        u, changed = db.apply(payload)
    except UpdateError as e:
        cur = db.version()
        dup = bool(getattr(e, "duplicate", False))
        log("card_update_refused", reason=e.reason, detail=str(e), version=cur, duplicate=dup)
        return ApplyResult(False, cur, e.reason, str(e), duplicate=dup)
    log("card_update_applied", version=u.version, kind=u.kind_name, base_version=u.base_version,
        ops=len(u.ops), changed=changed)
    return ApplyResult(True, u.version, None, "", u.kind_name, u.version, len(u.ops), changed)


# ---------------------------------------------------------------------------
# CLI: liftcard-gateway cards import FILE | cards status
# ---------------------------------------------------------------------------

MAX_FILE = 256 * 1024 * 1024


def _err(msg: str) -> int:
    print("liftcard-gateway: %s" % msg, file=sys.stderr)
    return 1


def _held_versions(db_path: Path) -> dict[int, int | None]:
    con = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        return {r[0]: r[1] for r in con.execute("SELECT reader_id, wl_version FROM readers")}
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def main_cards(args, cfg) -> int:
    """`cards import FILE` / `cards status`. Exit 0 done, 1 refused or failed, 2 config."""
    cc = cfg.cards
    if cc is None:
        print("liftcard-gateway: config error: cards: no [cards] section in %s (no card database)" % cfg.path,
              file=sys.stderr)
        return 2
    pub = cc.bank_public_key
    if args.cards_cmd == "import":
        path = Path(args.file)
        try:
            with open(path, "rb") as f:
                payload = f.read(MAX_FILE + 1)
        except OSError as e:
            return _err("cannot read %s: %s" % (path, e.strerror or type(e).__name__))
        # Verify before touching (or creating) the database.
        try:
            u = verify_update(pub, cc.compound_id, payload)
            if not cfg.db_path.exists() and u.kind == INCREMENTAL:
                raise UpdateError(R_GAP, "incremental card update %d->%d, but there is no card database yet "
                                  "(import a snapshot first)" % (u.base_version, u.version))
        except UpdateError as e:
            return _err("card update refused (%s): %s" % (e.reason, e))
        try:
            db = CardDB(cfg.db_path, pub, cc.compound_id, cc.history_versions)
        except (OSError, sqlite3.Error) as e:
            return _err("cannot open the database %s: %s" % (cfg.db_path, getattr(e, "strerror", None) or e))
        try:
            try:
                u, changed = db.apply(payload, verified=u)
            except UpdateError as e:
                return _err("card update refused (%s): %s" % (e.reason, e))
            counts = db.counts()
        finally:
            db.close()
        print("card database at version %d (%s, %d operations, %d cards changed; %d cards in %d buildings)"
              % (u.version, KIND_NAMES[u.kind], len(u.ops), changed, sum(counts.values()), len(counts)))
        return 0
    # status
    if not cfg.db_path.exists():
        return _err("no database yet at %s (import a card update or run the daemon first)" % cfg.db_path)
    db = CardDB(cfg.db_path, pub, cc.compound_id, cc.history_versions)
    try:
        print(format_cards_status(db, cfg, _held_versions(cfg.db_path)))
    finally:
        db.close()
    return 0


def format_cards_status(db: CardDB, cfg, held: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    ver = db.version()
    ups = db.updates(1)
    out = []
    if ver == 0:
        out.append("card database: empty (version 0): import a snapshot")
    else:
        u = ups[0] if ups else {}
        out.append("card database: version %d (last update: %s, applied %s); deltas from version %d on"
                   % (ver, u.get("kind", "?"), ago(u.get("applied_at"), now, "-"), db.history_floor()))
    counts = db.counts()
    buildings = sorted(set(counts) | {r.building_id for r in cfg.readers.values()})
    out.append("")
    out.append(render_table(["building", "cards"], [[str(b), str(counts.get(b, 0))] for b in buildings]))
    sends = db.sends()
    rows = []
    for rid in sorted(cfg.readers):
        r = cfg.readers[rid]
        h = held.get(rid)
        if h is None:
            state = "unknown"
        elif ver == 0:
            state = "-"
        elif h == ver:
            state = "current"
        elif h > ver:
            state = "ahead"
        else:
            state = "behind"
        s = sends.get(rid)
        last = "-" if not s else "%s %d->%d %s" % (s["how"], s["from_version"], s["to_version"],
                                                     ago(s["sent_at"], now, "-"))
        rows.append([str(rid), str(r.building_id), "-" if h is None else str(h), str(ver), state, last])
    out.append("")
    out.append(render_table(["reader", "building", "held", "target", "state", "last sent"], rows))
    return "\n".join(out)
