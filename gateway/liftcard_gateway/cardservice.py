"""The card service (docs/cards.md): what the daemon does with the card
database (carddb.py).

- `apply_update(payload)`: a signed card update from the bank (the upstream
  hands it over, through the daemon's ingest thread); never raises for bad
  input, returns an `ApplyResult` and logs `card_update_applied` or
  `card_update_refused` (reason: malformed, forged, compound, stale, gap).
- `on_status(reader_id, building_id, held_version, send)`: at every verified
  STATUS, a reader behind the database's version gets a DELTA or its full
  list in WHITELIST chunks (`whitelist_sent`), without a resend storm; a
  reader ahead of it is logged once (`whitelist_ahead`). A full list with
  more cards than the capacity the reader reported in its heartbeat is not
  sent: its chunks would fail on the reader's flash. `whitelist_too_big` is
  logged once (cards, capacity, reason) and the refusal is kept in
  gateway.db's whitelist_refused for `status` and the console, until a list
  or a delta goes to that reader or it is current. A reader that reported no
  capacity (0, older firmware) gets its list as before; a delta is never held
  back for the size (it may carry a revocation, and the overlay it goes to
  has a fixed size).

Events go to the logger `liftcard.cards` (logs.py), or the one given. Never a
card id, key, MAC or signature.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from liftcard_protocol import link
from liftcard_protocol.capacity import too_big
from liftcard_protocol.cardupdate import UpdateError
from liftcard_protocol.delta import build_delta
from liftcard_protocol.epoch import epoch_from_unix
from liftcard_protocol.fields import U32
from liftcard_protocol.whitelist import build_whitelist

from .carddb import MAX_DELTA_OPS, CardDB, Plan
from .db import transaction
from .schema import open_gateway_db
from .logs import EventLog, events

LOGGER = "liftcard.cards"
DEFAULT_FULL_LIST_AFTER_OPS = MAX_DELTA_OPS
DEFAULT_RESEND_AFTER_S = 120.0


@dataclass(frozen=True)
class ApplyResult:
    """What became of one card update. applied: the database is now at `version`.
    Otherwise `reason` says why it was refused (the database did not change);
    duplicate: a stale update identical to the one applied at its version (a
    redelivery, harmless)."""

    applied: bool
    version: int  # the database's version after this call
    reason: str | None = None
    message: str = ""  # one line, no card ids
    kind: str | None = None
    update_version: int | None = None
    ops: int = 0  # operations in the update
    changed: int = 0  # cards actually changed
    duplicate: bool = False

    def __bool__(self) -> bool:
        return self.applied


class CardService:
    """The daemon's side: apply bank updates, bring readers up to date.

    cfg: a GatewayConfig whose `cards` is set. log: the logger for its events
    (default `liftcard.cards`). clock: monotonic seconds (tests pass their own)."""

    def __init__(self, cfg, log: logging.Logger | None = None, clock=time.monotonic):
        cc = cfg.cards
        self.cfg = cfg
        self.log = events(log or LOGGER)
        self.clock = clock
        self.max_ops = min(cc.full_list_after_ops, MAX_DELTA_OPS)
        self.resend_after_s = cc.resend_after_s
        self.db = CardDB(cfg.db_path, cc.bank_public_key, cc.compound_id, cc.history_versions)
        self._keys = {rid: r.key.value for rid, r in cfg.readers.items()}
        self._sent: dict[int, tuple] = {}  # reader -> (from, to, how, monotonic time)
        self._ahead: dict[int, tuple] = {}  # reader -> (held, version) last logged as ahead
        self._capacity: dict[int, int] = {}  # reader -> the cards its last heartbeat said it can hold
        self._refused_db = open_gateway_db(cfg.db_path)  # whitelist_refused, for status and the console
        # reader -> (to_version, cards, capacity) refused and not yet superseded (kept across restarts)
        self._too_big: dict[int, tuple] = {
            r[0]: tuple(r[1:])
            for r in self._refused_db.execute("SELECT reader_id, to_version, cards, capacity FROM whitelist_refused")
        }
        self._lock = threading.Lock()

    def use_readers(self, readers: dict, forget=()) -> None:
        """A reloaded config's readers (reader_id -> config.ReaderConf): their
        keys from now on. What was sent to the readers in `forget` (removed,
        re-keyed, moved) is forgotten, as at a restart: a re-keyed reader gets
        its list again, under its new key, at its next heartbeat."""
        with self._lock:
            self._keys = {rid: r.key.value for rid, r in readers.items()}
            for rid in forget:
                self._sent.pop(rid, None)
                self._ahead.pop(rid, None)
                self._capacity.pop(rid, None)

    def close(self) -> None:
        self.db.close()
        self._refused_db.close()

    def _refuse_too_big(self, reader_id: int, building_id: int, held: int, plan: Plan, capacity: int, why: str):
        key = (plan.to_version, len(plan.cards), capacity)
        if self._too_big.get(reader_id) == key:
            return  # logged at an earlier heartbeat: one event per refusal, not one a minute
        self._too_big[reader_id] = key
        with transaction(self._refused_db) as c:
            c.execute(
                "INSERT OR REPLACE INTO whitelist_refused (reader_id, building_id, held_version, to_version, "
                "cards, capacity, refused_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (reader_id, building_id, held, plan.to_version, len(plan.cards), capacity, time.time()),
            )
        self.log(
            "whitelist_too_big",
            reader_id=reader_id,
            held_version=held,
            to_version=plan.to_version,
            cards=len(plan.cards),
            capacity=capacity,
            reason=why,
        )

    def _clear_too_big(self, reader_id: int) -> None:
        if self._too_big.pop(reader_id, None) is not None:
            with transaction(self._refused_db) as c:
                c.execute("DELETE FROM whitelist_refused WHERE reader_id=?", (reader_id,))

    # -- from the bank ---------------------------------------------------------------
    def apply_update(self, payload: bytes) -> ApplyResult:
        """Apply one signed card update (bytes as the bank sent them). Never
        raises for bad input: returns an ApplyResult and logs
        card_update_applied or card_update_refused."""
        return apply_and_log(self.db, payload, self.log)

    # -- to the readers ---------------------------------------------------------------
    def on_status(self, reader_id: int, building_id: int, held: int, send, capacity: int | None = None) -> Plan | None:
        """Called at each verified STATUS of a configured reader with the
        whitelist version it reports. send(make) publishes one down message:
        make(counter) returns its bytes. capacity: the cards its whitelist can
        hold, from that heartbeat (0: unknown; None: the last one it
        reported, for a card update between heartbeats). Returns the plan
        sent, or None."""
        with self._lock:
            if capacity is not None:
                self._capacity[reader_id] = capacity
            capacity = self._capacity.get(reader_id, 0)
            now = self.clock()
            plan = self.db.plan(building_id, held, self.max_ops)
            if plan is None:
                self._clear_too_big(reader_id)
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
            why = too_big(len(plan.cards), capacity) if plan.how == "full" else None
            if why is not None:
                self._refuse_too_big(reader_id, building_id, held, plan, capacity, why)
                return None
            self._clear_too_big(reader_id)
            key = self._keys[reader_id]
            if plan.how == "delta":
                blob = build_delta(key, reader_id, building_id, plan.from_version, plan.to_version, plan.ops)
                send(lambda counter: link.build_delta(key, reader_id, building_id, counter, blob))
                nbytes = link.MIN_MSG + len(blob)
            else:
                blob = build_whitelist(
                    key,
                    reader_id,
                    building_id,
                    plan.to_version,
                    plan.cards,
                    issued=max(0, min(epoch_from_unix(int(time.time())), U32)),
                )
                nbytes = 0
                for off, data in link.whitelist_chunks(blob):
                    send(
                        lambda counter, off=off, data=data: link.build_whitelist_chunk(
                            key, reader_id, building_id, counter, plan.to_version, len(blob), off, data
                        )
                    )
                    nbytes += link.MIN_MSG + link.WLCHUNK_HEADER_LEN + len(data)
            self._sent[reader_id] = (plan.from_version, plan.to_version, plan.how, now)
            self.db.record_send(reader_id, building_id, plan, nbytes)
            self.log(
                "whitelist_sent",
                reader_id=reader_id,
                from_version=plan.from_version,
                to_version=plan.to_version,
                how=plan.how,
                bytes=nbytes,
            )
            return plan


def apply_and_log(db: CardDB, payload: bytes, log: "logging.Logger | EventLog") -> ApplyResult:
    """db.apply(payload), logged (card_update_applied / card_update_refused) on
    `log`; an UpdateError becomes a refused ApplyResult."""
    log = events(log)
    try:
        u, changed = db.apply(payload)
    except UpdateError as e:
        cur = db.version()
        dup = bool(getattr(e, "duplicate", False))
        log("card_update_refused", reason=e.reason, detail=str(e), version=cur, duplicate=dup)
        return ApplyResult(False, cur, e.reason, str(e), duplicate=dup)
    log(
        "card_update_applied",
        version=u.version,
        kind=u.kind_name,
        base_version=u.base_version,
        ops=len(u.ops),
        changed=changed,
    )
    return ApplyResult(True, u.version, None, "", u.kind_name, u.version, len(u.ops), changed)
