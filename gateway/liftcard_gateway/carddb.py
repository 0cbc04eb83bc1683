"""The card database (docs/cards.md, "The database"): the card tables of the
gateway's SQLite file (schema.py), fed by the bank's signed card updates
(liftcard_protocol.cardupdate).

`CardDB.apply()` verifies an update (signature, compound, version: no stale,
no gap) and applies it in ONE transaction, keeping a change history for the
last `history_versions` updates; `CardDB.plan()` says what a reader holding a
given version needs: a delta from that history or the full list.
`verify_update()` is the signature and compound check alone (the CLI runs it
before it opens, or creates, the database).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol import link
from liftcard_protocol.card import CardRecord
from liftcard_protocol.cardupdate import (
    INCREMENTAL,
    R_COMPOUND,
    R_GAP,
    R_STALE,
    SNAPSHOT,
    CardUpdate,
    UpdateError,
    parse_update,
)
from liftcard_protocol.fields import card_id_hex

from .db import transaction
from .schema import open_gateway_db

MAX_DELTA_OPS = (link.MAX_BLOB - link.MIN_DELTA) // 17  # 238: one LCWD in one DELTA message
assert MAX_DELTA_OPS == 238
DEFAULT_HISTORY_VERSIONS = 64
_REC_COLS = ("household", "floors", "status", "klass", "valid_until")


@dataclass(frozen=True)
class Plan:
    """What a reader needs: how = "delta" (ops from from_version) or "full" (cards)."""

    how: str
    from_version: int
    to_version: int
    ops: tuple = ()
    cards: tuple = ()

    def __repr__(self) -> str:
        return "Plan(%s %d->%d, ops=%d, cards=%d)" % (
            self.how,
            self.from_version,
            self.to_version,
            len(self.ops),
            len(self.cards),
        )


def verify_update(public_key: bytes, compound_id: int, payload: bytes) -> CardUpdate:
    """The update if its signature verifies and it is for this compound;
    raises UpdateError."""
    u = parse_update(public_key, payload)
    if u.compound_id != compound_id:
        raise UpdateError(
            R_COMPOUND, "card update is for compound %d, this gateway is compound %d" % (u.compound_id, compound_id)
        )
    return u


def _row_record(card_hex: str, row) -> CardRecord:
    return CardRecord(int(card_hex, 16), *row)


class CardDB:
    """The card tables (docs/cards.md, "The database"). Thread-safe: one
    connection, one lock (the daemon's ingest thread, the CLI, tests)."""

    def __init__(self, path, public_key: bytes, compound_id: int, history_versions: int = DEFAULT_HISTORY_VERSIONS):
        self.path = Path(path)
        self.public_key = bytes(public_key)
        self.compound_id = compound_id
        self.history_versions = history_versions
        self.conn = open_gateway_db(self.path)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return "CardDB(%s)" % self.path

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
        rows = self.conn.execute(
            "SELECT card_id, %s FROM cards WHERE building_id=? ORDER BY card_id" % ", ".join(_REC_COLS), (building_id,)
        )
        # card_id is 16 lowercase hex digits: text order is unsigned numeric order.
        return [_row_record(r[0], r[1:]) for r in rows]

    def counts(self) -> dict[int, int]:
        with self._lock:
            return {
                b: n
                for b, n in self.conn.execute(
                    "SELECT building_id, count(*) FROM cards GROUP BY building_id ORDER BY building_id"
                )
            }

    def updates(self, limit: int = 10) -> list[dict]:
        with self._lock:
            cols = ("version", "kind", "base_version", "ops", "changed", "applied_at")
            return [
                dict(zip(cols, r))
                for r in self.conn.execute(
                    "SELECT %s FROM card_updates ORDER BY version DESC LIMIT ?" % ", ".join(cols), (limit,)
                )
            ]

    # -- applying -----------------------------------------------------------------
    def apply(
        self, payload: bytes, now: float | None = None, verified: CardUpdate | None = None
    ) -> tuple[CardUpdate, int]:
        """Verify and apply one signed update in one transaction. Returns
        (update, cards changed); raises UpdateError (database unchanged).
        `verified`: what verify_update already made of this payload."""
        u = verified or verify_update(self.public_key, self.compound_id, payload)
        digest = hashlib.sha256(bytes(payload)).hexdigest()
        now = time.time() if now is None else now
        with self._lock:
            c = self.conn
            with transaction(c):
                cur = self._meta("version")
                if u.version <= cur:
                    row = c.execute("SELECT sha256 FROM card_updates WHERE version=?", (u.version,)).fetchone()
                    err = UpdateError(
                        R_STALE, "card update version %d is not newer than the database's %d" % (u.version, cur)
                    )
                    err.duplicate = bool(row and row[0] == digest)
                    raise err
                if u.kind == INCREMENTAL and u.base_version != cur:
                    raise UpdateError(
                        R_GAP,
                        "incremental card update %d->%d does not follow the database's "
                        "version %d (the bank must send a snapshot)" % (u.base_version, u.version, cur),
                    )
                changed = self._apply_ops(u, cur)
                c.execute(
                    "INSERT INTO card_updates (version, kind, base_version, issued, ops, changed, "
                    "applied_at, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (u.version, u.kind_name, u.base_version, u.issued, len(u.ops), changed, now, digest),
                )
                c.execute("INSERT OR REPLACE INTO card_meta (key, value) VALUES ('version', ?)", (u.version,))
                self._prune(cur == 0, u.version)
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
                row = c.execute(
                    "SELECT %s FROM cards WHERE building_id=? AND card_id=?" % ", ".join(_REC_COLS), k
                ).fetchone()
                have = tuple(row) if row else None
                rec = _rec_tuple(o.record) if o.op == "upsert" else None
                if have != rec:
                    changes.append((k[0], k[1], rec))
        ups = [(b, h) + rec + (u.version,) for b, h, rec in changes if rec is not None]
        rems = [(b, h) for b, h, rec in changes if rec is None]
        c.executemany(
            "INSERT OR REPLACE INTO cards (building_id, card_id, %s, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            % ", ".join(_REC_COLS),
            ups,
        )
        c.executemany("DELETE FROM cards WHERE building_id=? AND card_id=?", rems)
        if record_history:
            c.executemany(
                "INSERT INTO card_history (building_id, version, card_id, op, %s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)" % ", ".join(_REC_COLS),
                [(b, u.version, h, "upsert" if rec else "remove") + (rec or (None,) * 5) for b, h, rec in changes],
            )
        return len(changes)

    def _prune(self, first: bool, version: int) -> None:
        c = self.conn
        floor = self._meta("history_floor")
        if first:
            floor = version
        else:
            row = c.execute(
                "SELECT version FROM card_updates ORDER BY version DESC LIMIT 1 OFFSET ?", (self.history_versions,)
            ).fetchone()
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
            with transaction(c, "DEFERRED"):  # a read transaction
                cur = self._meta("version")
                if cur == 0 or held >= cur:
                    return None
                covered = (
                    held > 0
                    and held >= self._meta("history_floor")
                    and c.execute("SELECT 1 FROM card_updates WHERE version=?", (held,)).fetchone()
                )
                if covered:
                    ids = [
                        r[0]
                        for r in c.execute(
                            "SELECT DISTINCT card_id FROM card_history WHERE building_id=? AND version>? "
                            "AND version<=? ORDER BY card_id LIMIT ?",
                            (building_id, held, cur, max_ops + 1),
                        )
                    ]
                    if len(ids) <= max_ops:
                        ops = []
                        for h in ids:
                            row = c.execute(
                                "SELECT %s FROM cards WHERE building_id=? AND card_id=?" % ", ".join(_REC_COLS),
                                (building_id, h),
                            ).fetchone()
                            ops.append(("upsert", _row_record(h, row)) if row else ("remove", int(h, 16)))
                        return Plan("delta", held, cur, ops=tuple(ops))
                return Plan("full", held, cur, cards=tuple(self._cards(building_id)))

    def record_send(self, reader_id: int, building_id: int, plan: Plan, nbytes: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self.conn.execute(
                "INSERT OR REPLACE INTO card_sends (reader_id, building_id, from_version, "
                "to_version, how, bytes, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (reader_id, building_id, plan.from_version, plan.to_version, plan.how, nbytes, now),
            )

    def sends(self) -> dict[int, dict]:
        with self._lock:
            cols = ("reader_id", "from_version", "to_version", "how", "bytes", "sent_at")
            return {r[0]: dict(zip(cols, r)) for r in self.conn.execute("SELECT %s FROM card_sends" % ", ".join(cols))}


def _rec_tuple(rec: CardRecord) -> tuple:
    return (rec.household, rec.floors, rec.status, rec.klass, rec.valid_until)
