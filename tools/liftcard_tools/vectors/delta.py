"""Vectors for the whitelist delta (LCWD) and overlay (LCWO)."""

from __future__ import annotations


from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Klass, Status
from liftcard_protocol.delta import WO_MAGIC, apply_ops, build_delta, parse_delta, seal_delta
from liftcard_protocol.fields import card_id_hex
from liftcard_protocol.whitelist import build_whitelist
from .common import BUILDING_ID, HOME5, ID_BELOW_HIGH, ID_HIGH, ID_MAX, KEY, OTHER_KEY, READER_ID, card_fields, flip
from .whitelist import small_list


def ops_json(ops):
    out = []
    for kind, arg in ops:
        if kind == "upsert":
            out.append({"op": "upsert", "card": arg.to_fields()})
        else:
            out.append({"op": "remove", "card_id": card_id_hex(arg)})
    return out


def raw_op(code: int, rec: bytes) -> bytes:
    return bytes((code,)) + rec


def gen_delta():
    base_cards = sorted(small_list())
    base_version = 5
    base_hex = build_whitelist(KEY, READER_ID, BUILDING_ID, base_version, base_cards, 0)
    by_id = {c.card_id: c for c in base_cards}

    # 5 -> 6: one upsert (the household stopped paying).
    ops56 = [("upsert", CardRecord(ID_BELOW_HIGH, 101, HOME5, Status.SUSPENDED))]
    # 6 -> 7: one remove and two upserts (a new card, and a card moving floors).
    ops67 = [
        ("remove", ID_HIGH),
        ("upsert", CardRecord(0x0000000004A21B9C, 105, 0b1000001)),
        ("upsert", CardRecord(ID_MAX, 101, 0b0001001, klass=Klass.VISITOR, valid_until=1100)),
    ]
    valid = []
    held = base_version
    cards = base_cards
    for new, ops in ((6, ops56), (7, ops67)):
        data = build_delta(KEY, READER_ID, BUILDING_ID, held, new, ops)
        d = parse_delta(KEY, data, READER_ID, BUILDING_ID, held)
        cards = apply_ops(cards, d.ops)
        valid.append(
            {
                "base_version": held,
                "new_version": new,
                "held_version": held,
                "ops": ops_json(d.ops),
                "hex": data.hex(),
                "cards_after": card_fields(cards),
            }
        )
        held = new
    d56 = bytes.fromhex(valid[0]["hex"])
    d67 = bytes.fromhex(valid[1]["hex"])

    up = CardRecord(0x0000000004A21B9C, 105, 0b1000001).pack()
    up2 = by_id[ID_MAX].pack()
    rm = ID_HIGH.to_bytes(8, "big") + bytes(8)

    def sealed(raw_ops, base=5, new=6, **kw):
        return seal_delta(
            KEY, kw.pop("reader_id", READER_ID), kw.pop("building_id", BUILDING_ID), base, new, raw_ops, **kw
        ).hex()

    bad_status = bytearray(up)
    bad_status[13] = 0x50
    inv = [
        (flip(d56, len(d56) - 1), "bad MAC (last MAC byte flipped)", "mac", 5),
        (flip(d56, 24 + 5), "flipped operation byte", "mac", 5),
        (
            build_delta(OTHER_KEY, READER_ID, BUILDING_ID, 5, 6, ops56).hex(),
            "MAC'd with another reader's key",
            "mac",
            5,
        ),
        (d56.hex(), "stale new_version: delta 5->6 replayed while holding 6", "stale", 6),
        (
            build_delta(KEY, READER_ID, BUILDING_ID, 4, 5, ops56).hex(),
            "stale new_version: delta 4->5 while holding 5",
            "stale",
            5,
        ),
        (d67.hex(), "gap: delta 6->7 while holding 5", "gap", 5),
        (build_delta(KEY, READER_ID, BUILDING_ID, 3, 6, ops56).hex(), "gap: delta 3->6 while holding 5", "gap", 5),
        (
            sealed([raw_op(2, ID_HIGH.to_bytes(8, "big") + bytes(7) + b"\x01")]),
            "remove with nonzero payload (valid MAC)",
            "field",
            5,
        ),
        (
            sealed([raw_op(2, ID_HIGH.to_bytes(8, "big") + b"\x80" + bytes(7))]),
            "remove with nonzero first payload byte (valid MAC)",
            "field",
            5,
        ),
        (
            sealed([raw_op(2, ID_HIGH.to_bytes(8, "big") + by_id[ID_HIGH].pack()[8:])]),
            "remove carrying a full record (valid MAC)",
            "field",
            5,
        ),
        (sealed([raw_op(1, up2), raw_op(1, up)]), "unsorted ops (valid MAC)", "order", 5),
        (sealed([raw_op(2, rm), raw_op(1, up)]), "unsorted ops: 2**63 before a small id (valid MAC)", "order", 5),
        (sealed([raw_op(1, up), raw_op(2, up[:8] + bytes(8))]), "two ops on one card id (valid MAC)", "order", 5),
        (sealed([raw_op(3, up)]), "unknown op byte 3 (valid MAC)", "op", 5),
        (sealed([raw_op(0, up)]), "unknown op byte 0 (valid MAC)", "op", 5),
        (sealed([raw_op(1, bytes(bad_status))]), "upsert with status nibble 5 (valid MAC)", "field", 5),
        (sealed([raw_op(1, up)], base=5, new=5), "new_version equal to base_version (valid MAC)", "version", 5),
        (sealed([raw_op(1, up)], base=5, new=4), "new_version below base_version (valid MAC)", "version", 5),
        (sealed([raw_op(1, up)], reader_id=READER_ID + 1), "other reader id (valid MAC)", "reader", 5),
        (sealed([raw_op(1, up)], building_id=BUILDING_ID + 1), "other building id (valid MAC)", "building", 5),
        (sealed([raw_op(1, up)], magic=WO_MAGIC), "overlay magic LCWO (valid MAC)", "magic", 5),
        (sealed([raw_op(1, up)], magic=b"LCWL"), "whitelist magic LCWL (valid MAC)", "magic", 5),
        (sealed([raw_op(1, up)], fmt=2), "format 2 (valid MAC)", "format", 5),
        (sealed([raw_op(1, up)], record_size=17), "record size 17 (valid MAC)", "record_size", 5),
        (sealed([raw_op(1, up)], count=2), "count larger than the operations present (valid MAC)", "size", 5),
        (d56[:-1].hex(), "truncated by one byte", "size", 5),
        ((d56 + b"\x00").hex(), "one extra byte", "size", 5),
        (d56[:30].hex(), "shorter than header + MAC", "size", 5),
    ]
    invalid = [{"hex": h, "why": w, "reason": r, "held_version": held} for h, w, r, held in inv]
    return {
        "key": KEY.hex(),
        "reader_id": READER_ID,
        "building_id": BUILDING_ID,
        "base": {"version": base_version, "cards": card_fields(base_cards), "hex": base_hex.hex()},
        "valid": valid,
        "invalid": invalid,
    }
