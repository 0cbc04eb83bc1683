"""Writes the shared test vectors of the bank's card update (tests/vectors/cards.jsonl).

    python -m liftcard_tools.card_vectors            # (re)write the file
    python -m liftcard_tools.card_vectors --check    # exit 1 if the committed file differs

Same JSON Lines layout as liftcard_tools.vectors (a {"meta": ...} line, then
{"group": ..., "case": ...} lines; load() gives the object back). Deterministic:
a fixed Ed25519 seed (Ed25519 signatures are deterministic, RFC 8032), fixed
cards. The seed is a TEST key, published here on purpose; never a bank's key.

Groups:
- valid: {hex, kind, compound_id, version, base_version, issued, ops: [{op,
  building_id, card: {card fields} | card_id}]}: parse_update must give these.
- invalid: {hex, why, reason}: parse_update must refuse with `reason`
  (malformed / forged).
- sequence: updates applied in order to an empty card database of compound
  `compound_id`: {hex, why, result: "applied" | a refusal reason, version: the
  database version after, cards: {building_id: [card fields...]} after}.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_protocol import cardupdate as cu
from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Klass, Status
from liftcard_protocol.fields import NO_END, card_id_hex
from liftcard_tools.vectors import VECTOR_DIR, parse, render

NAME = "cards.jsonl"
SEED = hashlib.sha256(b"liftcard shared test vectors: bank card update key").digest()
OTHER_SEED = hashlib.sha256(b"liftcard shared test vectors: not the bank's key").digest()
COMPOUND = 3
ISSUED = 91_000_000
B1, B2 = 12, 13
ID_HIGH = 0x8000000000000000
ID_BELOW_HIGH = 0x7FFFFFFFFFFFFFFF
HOME5 = 0b0100001


def bank_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


def public_hex(k: Ed25519PrivateKey) -> str:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def op_fields(o: cu.CardOp) -> dict:
    if o.op == "upsert":
        return {"op": "upsert", "building_id": o.building_id, "card": o.record.to_fields()}
    return {"op": "remove", "building_id": o.building_id, "card_id": card_id_hex(o.card_id)}


def op_from_fields(d: dict) -> cu.CardOp:
    if d["op"] == "upsert":
        return cu.CardOp.upsert(d["building_id"], CardRecord.from_fields(d["card"]))
    return cu.CardOp.remove(d["building_id"], int(d["card_id"], 16))


def _cards():
    a = CardRecord(0x0123456789ABCDEF, 101, HOME5, Status.ACTIVE, Klass.RESIDENT, NO_END)
    b = CardRecord(ID_BELOW_HIGH, 102, 0b1001, Status.ACTIVE, Klass.EXEMPT, 1400)
    c = CardRecord(ID_HIGH, 103, 0b11, Status.SUSPENDED, Klass.STAFF, NO_END)
    d = CardRecord(0xFFFFFFFFFFFFFFFF, 104, 0b101, Status.ACTIVE, Klass.VISITOR, 900)
    return a, b, c, d


def _flip(b: bytes, i: int, mask: int = 0x01) -> str:
    x = bytearray(b)
    x[i] ^= mask
    return x.hex()


def _state_fields(state: dict) -> dict:
    return {str(b): [state[b][cid].to_fields() for cid in sorted(state[b])] for b in sorted(state) if state[b]}


def generate_obj() -> dict:
    k = bank_key()
    other = Ed25519PrivateKey.from_private_bytes(OTHER_SEED)
    a, b, c, d = _cards()
    snap_ops = [cu.CardOp.upsert(B1, a), cu.CardOp.upsert(B1, b), cu.CardOp.upsert(B1, c), cu.CardOp.upsert(B2, a)]
    b_lost = CardRecord(b.card_id, b.household, b.floors, Status.LOST, b.klass, b.valid_until)
    inc_ops = [cu.CardOp.upsert(B1, b_lost), cu.CardOp.remove(B1, c.card_id), cu.CardOp.upsert(B2, d)]

    def upd(kind, version, base, ops, key=k, compound=COMPOUND):
        return cu.build_update(key, kind, compound, version, base, ops, ISSUED)

    snap5 = upd(cu.SNAPSHOT, 5, 0, snap_ops)
    inc6 = upd(cu.INCREMENTAL, 6, 5, inc_ops)
    empty_snap = upd(cu.SNAPSHOT, 1, 0, [])

    def valid_case(data: bytes, why: str) -> dict:
        u = cu.parse_update(k.public_key(), data)
        return {
            "hex": data.hex(),
            "why": why,
            "kind": u.kind_name,
            "compound_id": u.compound_id,
            "version": u.version,
            "base_version": u.base_version,
            "issued": u.issued,
            "ops": [op_fields(o) for o in u.ops],
        }

    valid = [
        valid_case(snap5, "snapshot, version 5, two buildings, card ids sorted unsigned per building"),
        valid_case(inc6, "incremental 5->6: an upsert (lost), a remove, a new card in another building"),
        valid_case(empty_snap, "empty snapshot (no cards): 92 bytes"),
        valid_case(
            upd(cu.INCREMENTAL, 0xFFFFFFFF, 0xFFFFFFFE, [cu.CardOp.remove(cu.ID_MAX, 0)]),
            "largest version and building id",
        ),
    ]

    def raw(kind=cu.INCREMENTAL, version=6, base=5, ops=inc_ops, key=k, **kw):
        return cu.sign(
            key, cu.encode_unsigned(kind, kw.pop("compound", COMPOUND), version, base, ISSUED, ops, check=False, **kw)
        )

    u_inc = cu.encode_unsigned(cu.INCREMENTAL, COMPOUND, 6, 5, ISSUED, inc_ops)
    remove_with_record = bytearray(u_inc)
    off = cu.HEADER_LEN + 1 * cu.OP_LEN  # the second operation is the remove
    assert remove_with_record[off] == 2
    remove_with_record[off + 5 + 8 + 2] = 1
    bad_status = bytearray(u_inc)
    bad_status[cu.HEADER_LEN + 5 + 13] = 0x40
    bad_op = bytearray(u_inc)
    bad_op[cu.HEADER_LEN] = 3
    invalid = [
        {"hex": _flip(inc6, len(inc6) - 1), "why": "last signature byte flipped", "reason": "forged"},
        {"hex": _flip(inc6, 12 + 3), "why": "version byte flipped (6 -> 7) after signing", "reason": "forged"},
        {"hex": _flip(inc6, cu.HEADER_LEN + 5 + 10), "why": "a card record byte flipped", "reason": "forged"},
        {
            "hex": upd(cu.INCREMENTAL, 6, 5, inc_ops, key=other).hex(),
            "why": "signed by another key",
            "reason": "forged",
        },
        {"hex": (inc6[: -cu.SIG_LEN] + bytes(cu.SIG_LEN)).hex(), "why": "zero signature", "reason": "forged"},
        {"hex": inc6[:-1].hex(), "why": "truncated by one byte (signature no longer verifies)", "reason": "forged"},
        {"hex": inc6[: cu.MIN_LEN - 1].hex(), "why": "shorter than header + signature", "reason": "malformed"},
        {"hex": "", "why": "empty", "reason": "malformed"},
        {"hex": raw(magic=b"LCCX").hex(), "why": "bad magic (validly signed)", "reason": "malformed"},
        {"hex": raw(fmt=2).hex(), "why": "format 2 (validly signed)", "reason": "malformed"},
        {"hex": raw(kind=3).hex(), "why": "kind 3 (validly signed)", "reason": "malformed"},
        {"hex": raw(reserved=1).hex(), "why": "reserved field not zero (validly signed)", "reason": "malformed"},
        {"hex": raw(compound=0).hex(), "why": "compound_id 0 (validly signed)", "reason": "malformed"},
        {"hex": raw(version=5, base=5).hex(), "why": "incremental with base_version == version", "reason": "malformed"},
        {
            "hex": raw(kind=cu.SNAPSHOT, version=0, base=0, ops=snap_ops).hex(),
            "why": "version 0",
            "reason": "malformed",
        },
        {
            "hex": raw(kind=cu.SNAPSHOT, version=6, base=5, ops=snap_ops).hex(),
            "why": "snapshot with a base_version",
            "reason": "malformed",
        },
        {"hex": raw(kind=cu.SNAPSHOT, version=6, base=0).hex(), "why": "snapshot with a remove", "reason": "malformed"},
        {"hex": raw(count=4).hex(), "why": "count larger than the operations (validly signed)", "reason": "malformed"},
        {"hex": raw(count=2).hex(), "why": "count smaller than the operations (validly signed)", "reason": "malformed"},
        {
            "hex": raw(ops=list(reversed(inc_ops)), sort=False).hex(),
            "why": "operations not sorted by building",
            "reason": "malformed",
        },
        {
            "hex": raw(ops=[cu.CardOp.upsert(B1, b_lost), cu.CardOp.upsert(B1, a)], sort=False).hex(),
            "why": "card ids not sorted unsigned within a building (2^63-1 after 0x0123...)",
            "reason": "malformed",
        },
        {
            "hex": raw(ops=[cu.CardOp.upsert(B1, b), cu.CardOp.remove(B1, b.card_id)], sort=False).hex(),
            "why": "two operations on one card",
            "reason": "malformed",
        },
        {"hex": raw(ops=[cu.CardOp.remove(0, 1)]).hex(), "why": "building_id 0", "reason": "malformed"},
        {"hex": raw(ops=[cu.CardOp.remove(cu.ID_MAX + 1, 1)]).hex(), "why": "building_id 2^30", "reason": "malformed"},
        {"hex": cu.sign(k, bytes(remove_with_record)).hex(), "why": "remove carrying a record", "reason": "malformed"},
        {"hex": cu.sign(k, bytes(bad_status)).hex(), "why": "upsert with status 4", "reason": "malformed"},
        {"hex": cu.sign(k, bytes(bad_op)).hex(), "why": "unknown operation 3", "reason": "malformed"},
    ]
    for case in invalid:
        try:
            cu.parse_update(k.public_key(), bytes.fromhex(case["hex"]))
        except cu.UpdateError as e:
            assert e.reason == case["reason"], (case["why"], e.reason)
        else:  # pragma: no cover
            raise AssertionError("vector accepted: %s" % case["why"])

    # A sequence against a database (the rules of cards.CardDB.apply).
    seq_updates = [
        (inc6, "incremental before any snapshot: gap"),
        (snap5, "snapshot 5 on an empty database: applied"),
        (snap5, "the same snapshot again: stale"),
        (upd(cu.INCREMENTAL, 8, 6, inc_ops), "incremental 6->8 while at 5: gap"),
        (upd(cu.INCREMENTAL, 6, 5, inc_ops, compound=COMPOUND + 1), "for another compound: compound"),
        (upd(cu.INCREMENTAL, 6, 5, inc_ops, key=other), "signed by another key: forged"),
        (inc6, "incremental 5->6: applied"),
        (upd(cu.SNAPSHOT, 4, 0, snap_ops), "older snapshot 4: stale"),
        (upd(cu.SNAPSHOT, 9, 0, [cu.CardOp.upsert(B2, d)]), "snapshot 9 replaces everything: applied"),
    ]
    state: dict = {}
    version = 0
    sequence = []
    for data, why in seq_updates:
        result = _apply_model(k, state, version, data)
        if result == "applied":
            version = cu.parse_update(k.public_key(), data).version
        sequence.append(
            {"hex": data.hex(), "why": why, "result": result, "version": version, "cards": _state_fields(state)}
        )
        assert result == why.rsplit(": ", 1)[1], why

    return {
        "public_key": public_hex(k),
        "seed_hex_test_only": SEED.hex(),
        "compound_id": COMPOUND,
        "valid": valid,
        "invalid": invalid,
        "sequence": sequence,
    }


def _apply_model(k, state: dict, version: int, data: bytes) -> str:
    """A reference model of the database's acceptance rules (independent of SQLite)."""
    try:
        u = cu.parse_update(k.public_key(), data)
    except cu.UpdateError as e:
        return e.reason
    if u.compound_id != COMPOUND:
        return "compound"
    if u.version <= version:
        return "stale"
    if u.kind == cu.INCREMENTAL and u.base_version != version:
        return "gap"
    if u.kind == cu.SNAPSHOT:
        state.clear()
    for o in u.ops:
        b = state.setdefault(o.building_id, {})
        if o.op == "upsert":
            b[o.card_id] = o.record
        else:
            b.pop(o.card_id, None)
    return "applied"


def generate() -> str:
    return render(generate_obj())


def load(directory: Path = VECTOR_DIR) -> dict:
    return parse((directory / NAME).read_text(encoding="utf-8"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="card_vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if %s differs from a fresh run" % NAME)
    ap.add_argument("--dir", type=Path, default=VECTOR_DIR, help="vector directory (default: %(default)s)")
    args = ap.parse_args(argv)
    text = generate()
    path = args.dir / NAME
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print("card_vectors: %s is out of date (run python -m liftcard_tools.card_vectors)" % path, file=sys.stderr)
            return 1
        print("card_vectors: %s up to date" % path)
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print("card_vectors: wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
