"""Writes the shared test vectors (tests/vectors/*.jsonl) from the CPython codecs.

    liftcard-vectors            # (re)write the files
    liftcard-vectors --check    # exit 1 if the committed files differ from a fresh run

Both the CPython tests and the firmware tests read these files, so the two
implementations of docs/formats.md cannot drift apart. The output is fully
deterministic: fixed keys, and "random" card lists drawn from SHA-256 in counter
mode (the same on every Python version and platform), never from `random`.

Each file is JSON Lines, so the firmware tests can read one case at a time in
a 192K heap: a list is one item per line; an object is a first line
{"meta": {...}} with its scalar and object fields, then one line
{"group": <field>, "case": {...}} per item of each of its list fields.
load() gives back the original object.

Conventions in every file: byte strings are lowercase hex; a card id in JSON is
16 hex digits; card fields are {"card_id", "household", "floors", "status",
"klass", "valid_until"}; times ("epoch_s", "issued", ride "time") are u32
seconds since the liftcard epoch 2024-01-01T00:00:00Z; amounts are integer fen.
Every "invalid" entry carries "why" (a human description) and, for binary
formats, "reason": the FormatError reason the CPython codec raises (see
liftcard_protocol.errors.REASONS); for config, "key" names the offending key.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path

from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Flag, Klass, Result, Status
from liftcard_protocol.delta import WO_MAGIC, apply_ops, build_delta, parse_delta, seal_delta
from liftcard_protocol.epoch import LIFTCARD_EPOCH, local_day
from liftcard_protocol.fields import CARD_LEN, NO_END, NO_FLOOR, card_id_hex, crc16, mac16
from liftcard_protocol.readerconfig import validate_config
from liftcard_protocol.ride import EMPTY_SLOT, RideRecord
from liftcard_protocol.whitelist import build_whitelist, parse_whitelist, seal_whitelist
from liftcard_tools.feemodel import FeeModel

VECTOR_DIR = Path(__file__).resolve().parents[2] / "tests" / "vectors"

KEY = hashlib.sha256(b"liftcard shared test vectors: reader key").digest()
OTHER_KEY = hashlib.sha256(b"liftcard shared test vectors: another reader's key").digest()
READER_ID = 1017
BUILDING_ID = 12

# Card ids chosen to exercise the unsigned, big-endian comparison.
ID_ZERO = 0
ID_MAX = 0xFFFFFFFFFFFFFFFF
ID_HIGH = 0x8000000000000000       # 2**63: negative as a signed i64
ID_BELOW_HIGH = 0x7FFFFFFFFFFFFFFF  # 2**63 - 1: sorts just before ID_HIGH
HOME5 = 0b0100001                   # ground + floor 5


class _Det:
    """Deterministic pseudo-random integers: SHA-256(label || counter)."""

    def __init__(self, label: str):
        self._label = label.encode()
        self._n = 0

    def bits(self, n: int) -> int:
        nbytes = (n + 7) // 8
        out = b""
        while len(out) < nbytes:
            out += hashlib.sha256(self._label + self._n.to_bytes(8, "big")).digest()
            self._n += 1
        return int.from_bytes(out[:nbytes], "big") >> (8 * nbytes - n)

    def below(self, n: int) -> int:
        return self.bits(64) % n  # the bias is irrelevant for test data


def local_epoch(y, mo, d, h=0, mi=0, s=0, offset_min=480) -> int:
    """Liftcard-epoch seconds of a local wall time at a UTC offset."""
    tz = datetime.timezone(datetime.timedelta(minutes=offset_min))
    return int(datetime.datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()) - LIFTCARD_EPOCH


def _fields(cards):
    return [c.to_fields() for c in sorted(cards, key=lambda c: c.card_id)]


def _flip(b: bytes, i: int, mask: int = 0x01) -> str:
    x = bytearray(b)
    x[i] ^= mask
    return x.hex()


# ---------------------------------------------------------------------------
# crc16, mac16
# ---------------------------------------------------------------------------


def gen_crc16():
    datas = [
        b"123456789",  # the CRC-16/CCITT-FALSE check value 0x29B1
        b"",
        b"\x00",
        b"\xff",
        b"A",
        b"\xff" * 30,   # the body of an erased ride slot
        bytes(range(256)),
        RideRecord(1, 91000000, 12, ID_MAX, 101, 5, 40, 0, 0, 1).pack()[:30],
    ]
    out = [{"data": d.hex(), "crc": crc16(d)} for d in datas]
    assert out[0]["crc"] == 0x29B1 and out[1]["crc"] == 0xFFFF
    return out


def gen_mac16():
    cases = [
        (b"Jefe", b"what do ya want for nothing?"),  # RFC 4231 test case 2
        (KEY, b""),
        (KEY, b"123456789"),
        (KEY, b"LCWL" + bytes(28)),
        (KEY, bytes(range(256)) * 2),        # several SHA-256 blocks
        (bytes(range(64)), b"block-size key"),
        (bytes(range(65)), b"key longer than a block is hashed first"),
        (b"", b"empty key"),
    ]
    out = [{"key": k.hex(), "msg": m.hex(), "mac": mac16(k, m).hex()} for k, m in cases]
    assert out[0]["mac"] == "5bdcc146bf60754e6a042426089575c7"
    return out


# ---------------------------------------------------------------------------
# Card record
# ---------------------------------------------------------------------------


def gen_card_record():
    valid = [
        CardRecord(ID_ZERO, 0, 0, Status.ACTIVE, Klass.RESIDENT, 0),
        CardRecord(ID_MAX, 0xFFFFFF, 0xFFFF, Status.EXPIRED, Klass.VISITOR, NO_END),
        CardRecord(ID_HIGH, 101, HOME5, Status.ACTIVE, Klass.RESIDENT, NO_END),
        CardRecord(ID_BELOW_HIGH, 102, 0b1001, Status.SUSPENDED, Klass.EXEMPT, 1400),
        CardRecord(0x0000000004A21B9C, 103, 0b11, Status.LOST, Klass.STAFF, 0xFFFE),
    ]
    good = valid[2].pack()

    def with_sc(sc):
        return (good[:13] + bytes((sc,)) + good[14:]).hex()

    invalid = [
        {"hex": with_sc(0x40), "why": "status nibble 4", "reason": "field"},
        {"hex": with_sc(0xF0), "why": "status nibble 15", "reason": "field"},
        {"hex": with_sc(0x04), "why": "class nibble 4", "reason": "field"},
        {"hex": with_sc(0x0F), "why": "class nibble 15", "reason": "field"},
        {"hex": good[:15].hex(), "why": "15 bytes", "reason": "size"},
        {"hex": (good + b"\x00").hex(), "why": "17 bytes", "reason": "size"},
        {"hex": "", "why": "empty", "reason": "size"},
    ]
    return {"valid": [{"fields": c.to_fields(), "hex": c.pack().hex()} for c in valid], "invalid": invalid}


# ---------------------------------------------------------------------------
# Whitelist
# ---------------------------------------------------------------------------


def _random_cards(label: str, n: int):
    r = _Det(label)
    ids = {ID_ZERO, ID_MAX, ID_HIGH, ID_BELOW_HIGH, 1}
    while len(ids) < n:
        ids.add(r.bits(64))
    cards = []
    for cid in sorted(ids):
        cards.append(CardRecord(
            card_id=cid,
            household=r.bits(24),
            floors=r.bits(16),
            status=r.below(4),
            klass=r.below(4),
            valid_until=NO_END if r.below(3) == 0 else r.bits(16),
        ))
    return cards


def _small_list():
    return [
        CardRecord(ID_BELOW_HIGH, 101, HOME5),
        CardRecord(ID_HIGH, 102, 0b1001, Status.SUSPENDED),
        CardRecord(0x0123456789ABCDEF, 103, HOME5, klass=Klass.EXEMPT),
        CardRecord(ID_MAX, 101, HOME5, klass=Klass.VISITOR, valid_until=1100),
        CardRecord(0xC0FFEE0000000001, 104, 0b1111111, Status.LOST),
    ]


def gen_whitelist():
    t_issued = local_epoch(2026, 11, 10, 8, 0, 0)
    lists = [
        (1, 0, []),
        (2, t_issued, [CardRecord(ID_MAX, 0xFFFFFF, HOME5)]),
        (3, t_issued + 3600, _random_cards("whitelist-50", 50)),
    ]
    valid = []
    for version, issued, cards in lists:
        data = build_whitelist(KEY, READER_ID, BUILDING_ID, version, cards, issued)
        valid.append({"version": version, "issued": issued, "cards": _fields(cards), "hex": data.hex()})

    cards = sorted(_small_list())
    recs = [c.pack() for c in cards]
    version = 7
    good = build_whitelist(KEY, READER_ID, BUILDING_ID, version, cards, t_issued)

    def sealed(records=recs, **kw):
        args = dict(reader_id=READER_ID, building_id=BUILDING_ID, version=version, issued=t_issued)
        args.update(kw)
        return seal_whitelist(KEY, args.pop("reader_id"), args.pop("building_id"), args.pop("version"),
                               records, args.pop("issued"), **args).hex()

    unsorted = [recs[1], recs[0]] + recs[2:]
    duplicate = recs[:2] + [recs[1]] + recs[3:]
    bad_status = list(recs)
    bad_status[2] = recs[2][:13] + bytes((0x40 | recs[2][13] & 15,)) + recs[2][14:]
    bad_class = list(recs)
    bad_class[2] = recs[2][:13] + bytes((recs[2][13] & 0xF0 | 0x05,)) + recs[2][14:]
    first_rec = 32
    inv = [
        (good[:-1].hex(), "truncated by one byte", "size", None),
        (good[: 32 + 16 + 7].hex(), "truncated inside a record", "size", None),
        (good[:20].hex(), "shorter than a header", "size", None),
        ((good + b"\x00").hex(), "one extra byte", "size", None),
        (sealed(count=len(recs) + 1), "count larger than the records present (valid MAC)", "size", None),
        (b"LCWX".hex() + good[4:].hex(), "bad magic", "magic", None),
        (sealed(magic=b"LCWD"), "delta magic on a full list (valid MAC)", "magic", None),
        (sealed(fmt=2), "format 2 (valid MAC)", "format", None),
        (sealed(record_size=17), "record size 17 (valid MAC)", "record_size", None),
        (sealed(flags=1), "nonzero reserved flags (valid MAC)", "header", None),
        (sealed(reserved=1), "nonzero reserved word at offset 28 (valid MAC)", "header", None),
        (_flip(good, len(good) - 1), "bad MAC (last MAC byte flipped)", "mac", None),
        (_flip(good, first_rec + 16 * 2 + 3), "flipped record byte", "mac", None),
        (_flip(good, 17), "flipped version byte", "mac", None),
        (build_whitelist(OTHER_KEY, READER_ID, BUILDING_ID, version, cards, t_issued).hex(),
         "MAC'd with another reader's key", "mac", None),
        (sealed(unsorted), "records not sorted (valid MAC)", "order", None),
        (sealed(duplicate), "duplicate card id (valid MAC)", "order", None),
        (sealed(reader_id=READER_ID + 1), "other reader id (valid MAC)", "reader", None),
        (sealed(building_id=BUILDING_ID + 1), "other building id (valid MAC)", "building", None),
        (sealed(bad_status), "bad status nibble 4 (valid MAC)", "field", None),
        (sealed(bad_class), "bad class nibble 5 (valid MAC)", "field", None),
        (good.hex(), "stale: version 7 while holding 7 (replay)", "stale", 7),
        (good.hex(), "stale: version 7 while holding 9 (rollback)", "stale", 9),
    ]
    invalid = [{"hex": h, "why": w, "reason": r, "held_version": held} for h, w, r, held in inv]
    return {"key": KEY.hex(), "reader_id": READER_ID, "building_id": BUILDING_ID,
            "valid": valid, "invalid": invalid}


# ---------------------------------------------------------------------------
# Delta
# ---------------------------------------------------------------------------


def _ops_json(ops):
    out = []
    for kind, arg in ops:
        if kind == "upsert":
            out.append({"op": "upsert", "card": arg.to_fields()})
        else:
            out.append({"op": "remove", "card_id": card_id_hex(arg)})
    return out


def _raw_op(code: int, rec: bytes) -> bytes:
    return bytes((code,)) + rec


def gen_delta():
    base_cards = sorted(_small_list())
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
        valid.append({"base_version": held, "new_version": new, "held_version": held,
                      "ops": _ops_json(d.ops), "hex": data.hex(), "cards_after": _fields(cards)})
        held = new
    d56 = bytes.fromhex(valid[0]["hex"])
    d67 = bytes.fromhex(valid[1]["hex"])

    up = CardRecord(0x0000000004A21B9C, 105, 0b1000001).pack()
    up2 = by_id[ID_MAX].pack()
    rm = ID_HIGH.to_bytes(8, "big") + bytes(8)

    def sealed(raw_ops, base=5, new=6, **kw):
        return seal_delta(KEY, kw.pop("reader_id", READER_ID), kw.pop("building_id", BUILDING_ID),
                           base, new, raw_ops, **kw).hex()

    bad_status = bytearray(up)
    bad_status[13] = 0x50
    inv = [
        (_flip(d56, len(d56) - 1), "bad MAC (last MAC byte flipped)", "mac", 5),
        (_flip(d56, 24 + 5), "flipped operation byte", "mac", 5),
        (build_delta(OTHER_KEY, READER_ID, BUILDING_ID, 5, 6, ops56).hex(), "MAC'd with another reader's key", "mac", 5),
        (d56.hex(), "stale new_version: delta 5->6 replayed while holding 6", "stale", 6),
        (build_delta(KEY, READER_ID, BUILDING_ID, 4, 5, ops56).hex(), "stale new_version: delta 4->5 while holding 5", "stale", 5),
        (d67.hex(), "gap: delta 6->7 while holding 5", "gap", 5),
        (build_delta(KEY, READER_ID, BUILDING_ID, 3, 6, ops56).hex(), "gap: delta 3->6 while holding 5", "gap", 5),
        (sealed([_raw_op(2, ID_HIGH.to_bytes(8, "big") + bytes(7) + b"\x01")]),
         "remove with nonzero payload (valid MAC)", "field", 5),
        (sealed([_raw_op(2, ID_HIGH.to_bytes(8, "big") + b"\x80" + bytes(7))]),
         "remove with nonzero first payload byte (valid MAC)", "field", 5),
        (sealed([_raw_op(2, ID_HIGH.to_bytes(8, "big") + by_id[ID_HIGH].pack()[8:])]),
         "remove carrying a full record (valid MAC)", "field", 5),
        (sealed([_raw_op(1, up2), _raw_op(1, up)]), "unsorted ops (valid MAC)", "order", 5),
        (sealed([_raw_op(2, rm), _raw_op(1, up)]), "unsorted ops: 2**63 before a small id (valid MAC)", "order", 5),
        (sealed([_raw_op(1, up), _raw_op(2, up[:8] + bytes(8))]), "two ops on one card id (valid MAC)", "order", 5),
        (sealed([_raw_op(3, up)]), "unknown op byte 3 (valid MAC)", "op", 5),
        (sealed([_raw_op(0, up)]), "unknown op byte 0 (valid MAC)", "op", 5),
        (sealed([_raw_op(1, bytes(bad_status))]), "upsert with status nibble 5 (valid MAC)", "field", 5),
        (sealed([_raw_op(1, up)], base=5, new=5), "new_version equal to base_version (valid MAC)", "version", 5),
        (sealed([_raw_op(1, up)], base=5, new=4), "new_version below base_version (valid MAC)", "version", 5),
        (sealed([_raw_op(1, up)], reader_id=READER_ID + 1), "other reader id (valid MAC)", "reader", 5),
        (sealed([_raw_op(1, up)], building_id=BUILDING_ID + 1), "other building id (valid MAC)", "building", 5),
        (sealed([_raw_op(1, up)], magic=WO_MAGIC), "overlay magic LCWO (valid MAC)", "magic", 5),
        (sealed([_raw_op(1, up)], magic=b"LCWL"), "whitelist magic LCWL (valid MAC)", "magic", 5),
        (sealed([_raw_op(1, up)], fmt=2), "format 2 (valid MAC)", "format", 5),
        (sealed([_raw_op(1, up)], record_size=17), "record size 17 (valid MAC)", "record_size", 5),
        (sealed([_raw_op(1, up)], count=2), "count larger than the operations present (valid MAC)", "size", 5),
        (d56[:-1].hex(), "truncated by one byte", "size", 5),
        ((d56 + b"\x00").hex(), "one extra byte", "size", 5),
        (d56[:30].hex(), "shorter than header + MAC", "size", 5),
    ]
    invalid = [{"hex": h, "why": w, "reason": r, "held_version": held} for h, w, r, held in inv]
    return {"key": KEY.hex(), "reader_id": READER_ID, "building_id": BUILDING_ID,
            "base": {"version": base_version, "cards": _fields(base_cards), "hex": base_hex.hex()},
            "valid": valid, "invalid": invalid}


# ---------------------------------------------------------------------------
# Ride record
# ---------------------------------------------------------------------------


def gen_ride_record():
    t = local_epoch(2026, 11, 10, 8, 0, 0)
    recs = [
        RideRecord(1, t, 12, ID_MAX, 101, 5, 40, Result.GRANTED, 0, 1),
        RideRecord(2, t + 9, 21, ID_MAX, 101, 5, 0, Result.GRANTED, Flag.DEBOUNCED, 1),
        RideRecord(3, 17, 17, ID_BELOW_HIGH, 0, NO_FLOOR, 0, Result.UNKNOWN_CARD, Flag.CLOCK_UNSYNCED, 2),
        RideRecord(4, t + 60, 80, 0x0000000004A21B9C, 0xFFFFFF, 3, 7, Result.GRANTED,
                   Flag.CLOCK_UNSYNCED | Flag.LEGACY_UID | Flag.CAPPED, 0xFFFF),
        RideRecord(5, t + 61, 81, ID_HIGH, 102, 0, 0, Result.GRANTED, Flag.FREE_CLASS, 3),
        RideRecord(6, t + 62, 82, ID_HIGH, 102, NO_FLOOR, 0, Result.AUTH_FAILED, 0, 3),
        RideRecord(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        RideRecord(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, ID_MAX, 0xFFFFFF, 0xFE, 0xFFFF,
                   Result.LEGACY_DISABLED, 0x3F, 0xFFFF),
    ]
    good = recs[0].pack()
    torn = good[:16] + b"\xff" * 16
    invalid = [
        {"hex": _flip(good, 31), "why": "bad CRC (low CRC byte flipped)", "reason": "crc"},
        {"hex": _flip(good, 25), "why": "fee byte flipped", "reason": "crc"},
        {"hex": torn.hex(), "why": "torn: first 16 bytes programmed, the rest still 0xFF", "reason": "crc"},
        {"hex": good[:31].hex(), "why": "31 bytes", "reason": "size"},
        {"hex": (good + b"\xff").hex(), "why": "33 bytes", "reason": "size"},
        {"hex": "", "why": "empty string", "reason": "size"},
    ]
    return {"valid": [{"fields": r.to_fields(), "hex": r.pack().hex()} for r in recs],
            "invalid": invalid, "empty": EMPTY_SLOT.hex()}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


def base_config(**tariff) -> dict:
    """The doc's example config with the vector key; tariff keys overridable."""
    t = {"fee_fen": [0, 0, 10, 20, 30, 40, 50], "free_classes": ["exempt", "staff"],
         "monthly_cap_fen": 3000, "debounce_s": 30}
    t.update(tariff)
    return {
        "reader_id": READER_ID,
        "building_id": BUILDING_ID,
        "floors": len(t["fee_fen"]),
        "ground_floor": 0,
        "key": KEY.hex(),
        "tariff": t,
        "legacy_uid": False,
        "relay_ms": 4000,
        "utc_offset_min": 480,
    }


def _with(cfg: dict, path: str, value) -> dict:
    out = json.loads(json.dumps(cfg))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


def _without(cfg: dict, path: str) -> dict:
    out = json.loads(json.dumps(cfg))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[last]
    return out


def gen_config():
    base = base_config()
    defaults = {k: v for k, v in base.items() if k not in ("legacy_uid", "relay_ms", "utc_offset_min")}
    low = base_config(fee_fen=[0, 65535], free_classes=[], monthly_cap_fen=0, debounce_s=0)
    low.update(reader_id=1, building_id=1, ground_floor=1, legacy_uid=True, relay_ms=100, utc_offset_min=-720)
    high = base_config(fee_fen=list(range(0, 16 * 4096, 4096)), free_classes=list(("resident", "exempt", "staff", "visitor")),
                       monthly_cap_fen=10_000_000, debounce_s=3600)
    high.update(reader_id=(1 << 30) - 1, building_id=(1 << 30) - 1, ground_floor=15, relay_ms=60000,
                utc_offset_min=840, key=KEY.hex().upper())
    linked = dict(base, uplink={"host": "192.168.4.1", "port": 1883, "password": "s3cret pass~word", "keepalive_s": 60})
    valid = [base, defaults, low, high, linked]
    for v in valid:
        validate_config(v)

    key = KEY.hex()
    bad = [
        ("reader_id", 0), ("reader_id", 1 << 30), ("reader_id", -1), ("reader_id", "1017"),
        ("reader_id", True), ("reader_id", 1017.0), ("reader_id", None),
        ("building_id", 0), ("building_id", 1 << 30), ("building_id", "12"),
        ("floors", 1), ("floors", 17), ("floors", "7"),
        ("ground_floor", -1), ("ground_floor", 7), ("ground_floor", 0.5),
        ("key", key[:63]), ("key", key + "0"), ("key", "g" + key[1:]), ("key", "+f" * 32),
        ("key", " " + key[1:]), ("key", "0x" + key[2:]), ("key", 12345), ("key", None),
        ("tariff", None), ("tariff", [0, 10]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40]), ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, 50, 60]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, 65536]), ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, -1]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, 50.0]), ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, "50"]),
        ("tariff.fee_fen", 50),
        ("tariff.free_classes", ["vip"]), ("tariff.free_classes", ["Exempt"]), ("tariff.free_classes", "exempt"),
        ("tariff.free_classes", [1]),
        ("tariff.monthly_cap_fen", -1), ("tariff.monthly_cap_fen", 10_000_001), ("tariff.monthly_cap_fen", 30.5),
        ("tariff.debounce_s", -1), ("tariff.debounce_s", 3601), ("tariff.debounce_s", "30"),
        ("legacy_uid", 0), ("legacy_uid", "false"), ("legacy_uid", None),
        ("relay_ms", 99), ("relay_ms", 60001), ("relay_ms", "4000"),
        ("utc_offset_min", -721), ("utc_offset_min", 841), ("utc_offset_min", 480.0),
    ]
    invalid = [{"config": _with(base, k, v), "key": k} for k, v in bad]
    bad_uplink = [
        ("uplink", "192.168.4.1"), ("uplink", None),
        ("uplink.host", ""), ("uplink.host", "gate way"), ("uplink.host", "h" * 254), ("uplink.host", None),
        ("uplink.port", 0), ("uplink.port", 65536), ("uplink.port", "1883"),
        ("uplink.password", ""), ("uplink.password", "p" * 129), ("uplink.password", "line\nbreak"),
        ("uplink.password", None),
        ("uplink.keepalive_s", 3), ("uplink.keepalive_s", 3601), ("uplink.keepalive_s", 60.0),
    ]
    invalid += [{"config": _with(linked, k, v), "key": k} for k, v in bad_uplink]
    for k in ("reader_id", "building_id", "floors", "ground_floor", "key", "tariff", "tariff.fee_fen",
              "tariff.free_classes", "tariff.monthly_cap_fen", "tariff.debounce_s"):
        invalid.append({"config": _without(base, k), "key": k})
    # ground_floor is checked against this config's own floor count.
    invalid.append({"config": _with(base_config(fee_fen=[0, 10, 20]), "ground_floor", 3), "key": "ground_floor"})
    return {"valid": valid, "invalid": invalid}


# ---------------------------------------------------------------------------
# Fee rules
# ---------------------------------------------------------------------------


class _Taps:
    """Collects the taps of one scenario on two independent clocks: mono_ms (the
    reader's monotonic clock, the debounce clock) and epoch_s (wall time, for
    expiry and the month). mono_ms follows wall time but advances at most an
    hour per tap, so it stays below 2**29 (a ticks_ms-based reader can replay
    it without wrapping)."""

    MONO_LIMIT = 1 << 29

    def __init__(self, start_epoch: int, start_mono: int = 1000):
        self.mono = start_mono
        self.epoch = start_epoch
        self.taps = []

    def tap(self, card_id, at, note, gap_s=60, mono=None, epoch=None):
        # Default: 60 s after the previous tap (outside every debounce window
        # used here). mono / epoch: set that clock; the other one follows.
        if epoch is None:
            epoch = self.epoch + (gap_s if mono is None else (mono - self.mono) // 1000)
        if mono is None:
            mono = self.mono + min(epoch - self.epoch, 3600) * 1000
        assert mono >= self.mono and epoch >= self.epoch and mono < self.MONO_LIMIT
        self.mono, self.epoch = mono, epoch
        self.taps.append((card_id, at, mono, epoch, note))


def _scenario(name, config, cards, taps: _Taps):
    cfg = validate_config(config)
    model = FeeModel(cfg, {c.card_id: c for c in cards})
    out = []
    for card_id, at, mono, epoch, note in taps.taps:
        d = model.tap(card_id, at, mono, epoch)
        out.append({"card_id": card_id_hex(card_id), "at": at, "mono_ms": mono, "epoch_s": epoch,
                    "note": note, "expect": d.to_fields()})
    return {"name": name, "config": cfg, "cards": _fields(cards), "taps": out}


def gen_fees():
    t0 = local_epoch(2026, 11, 10, 8, 0, 0)
    today = local_day(t0, 480)
    scenarios = []

    # -- lookup, statuses, expiry by valid_until (UTC+8 local days) --
    A, SUSP, LOST, EXPST, ENDS, ENDED, LOSTEND = (
        ID_MAX, ID_HIGH, 0x9E3779B97F4A7C15, 0x3C6EF372FE94F82A, 0xDAA66D2C7DDF743F, 1, 0x78DDE6E5FD29F054)
    cards = [
        CardRecord(A, 101, HOME5),
        CardRecord(SUSP, 102, HOME5, Status.SUSPENDED),
        CardRecord(LOST, 103, HOME5, Status.LOST),
        CardRecord(EXPST, 104, HOME5, Status.EXPIRED),
        CardRecord(ENDS, 105, HOME5, valid_until=today),
        CardRecord(ENDED, 106, HOME5, valid_until=0),
        CardRecord(LOSTEND, 107, HOME5, Status.LOST, valid_until=0),
    ]
    t = _Taps(t0)
    t.tap(ID_BELOW_HIGH, 0, "unknown card 2**63-1 (2**63, next to it, is on the list)")
    t.tap(ID_ZERO, 0, "unknown card id 0")
    t.tap(0xFFFFFFFFFFFFFFFE, 0, "unknown card id 2**64-2")
    t.tap(A, 0, "active resident, card id 2**64-1: up to floor 5, 40 fen")
    t.tap(SUSP, 0, "suspended (household unpaid)")
    t.tap(LOST, 0, "lost")
    t.tap(EXPST, 0, "status expired, no end date")
    t.tap(ENDS, 0, "valid_until is today: still valid")
    t.tap(ENDS, 0, "23:59:59 local on its last day: still valid", epoch=local_epoch(2026, 11, 10, 23, 59, 59))
    t.tap(ENDS, 0, "00:00:00 local the next day: expired", epoch=local_epoch(2026, 11, 11, 0, 0, 0))
    t.tap(ENDED, 0, "valid_until 0 (2024-01-01) is long past")
    t.tap(LOSTEND, 0, "lost and past valid_until: status wins")
    scenarios.append(_scenario("lookup_status_expiry", base_config(), cards, t))

    # -- destination rule and fee by destination floor --
    cfg = base_config(fee_fen=[5, 8, 10, 20, 30, 40, 50], free_classes=["exempt"], monthly_cap_fen=0)
    ids = [0xA000000000000000 + i for i in range(8)]
    H5, H3, G, ONLY5, H6, H10, H1, NONE = ids
    cards = [
        CardRecord(H5, 201, HOME5),
        CardRecord(H3, 202, 0b0001001),
        CardRecord(G, 203, 0b0000001),
        CardRecord(ONLY5, 204, 0b0100000),
        CardRecord(H6, 205, 0b1110101),
        CardRecord(H10, 206, 0b10000000001),
        CardRecord(H1, 207, 0b0000011),
        CardRecord(NONE, 208, 0),
    ]
    t = _Taps(t0)
    t.tap(H5, 0, "at ground: home floor 5, 40 fen")
    t.tap(H5, NO_FLOOR, "unknown floor (0xFF): home floor 5")
    t.tap(H5, 5, "at floor 5: down to ground, fee_fen[0] = 5")
    t.tap(H5, 3, "at a floor outside the mask: down to ground")
    t.tap(H3, 0, "home floor 3: 20 fen")
    t.tap(H3, 6, "at floor 6: down to ground")
    t.tap(G, 0, "ground-only card at ground: destination ground, 5 fen")
    t.tap(G, 4, "ground-only card at floor 4: ground")
    t.tap(ONLY5, 0, "floor-5-only card at ground: up to 5")
    t.tap(ONLY5, NO_FLOOR, "floor-5-only card, unknown floor: up to 5")
    t.tap(ONLY5, 5, "floor-5-only card at 5: ground not allowed, NO_FLOOR with floor 0")
    t.tap(H6, 0, "mask 0,2,4,5,6: home is the highest, 6, 50 fen")
    t.tap(H6, 2, "at floor 2: down to ground")
    t.tap(H10, 0, "home floor 10 in a 7-floor building: NO_FLOOR with floor 10")
    t.tap(H10, 3, "same card at floor 3: down to ground is fine")
    t.tap(H1, 0, "home floor 1: 8 fen")
    t.tap(NONE, 0, "empty mask: destination ground, not allowed")
    t.tap(NONE, NO_FLOOR, "empty mask, unknown floor: NO_FLOOR with floor 0")
    scenarios.append(_scenario("destination_and_fee_by_floor", cfg, cards, t))

    # -- a ground floor that is not index 0 (two basements) --
    cfg = base_config(fee_fen=[15, 12, 0, 10, 20, 30], free_classes=[], monthly_cap_fen=0)
    cfg["ground_floor"] = 2
    P, Q, R, S = (0xB000000000000001, 0xB000000000000002, 0x3000000000000003, 0x3000000000000004)
    cards = [
        CardRecord(P, 301, 0b000101),
        CardRecord(Q, 302, 0b100101),
        CardRecord(R, 303, 0b000100),
        CardRecord(S, 304, 0b001000),
    ]
    t = _Taps(t0)
    t.tap(P, 2, "mask {0,2}, ground 2: home is basement 0, 15 fen")
    t.tap(P, 0, "at basement 0: up to ground 2, free")
    t.tap(P, NO_FLOOR, "unknown floor: home, basement 0")
    t.tap(Q, 2, "mask {0,2,5}: home 5, 30 fen")
    t.tap(Q, 0, "at basement 0: to ground 2")
    t.tap(Q, 5, "at 5: to ground 2")
    t.tap(R, 2, "ground-only card at ground: destination ground")
    t.tap(R, 1, "ground-only card at basement 1: ground")
    t.tap(S, 2, "floor-3-only card: up to 3, 10 fen")
    t.tap(S, 3, "floor-3-only card at 3: ground 2 not allowed")
    scenarios.append(_scenario("ground_floor_not_zero", cfg, cards, t))

    # -- debounce: inside, at and after the window --
    cfg = base_config(monthly_cap_fen=0, debounce_s=30)
    A, B, C, E = ID_HIGH, ID_HIGH + 1, 0x5000000000000005, 0xE000000000000000
    cards = [
        CardRecord(A, 401, HOME5),
        CardRecord(B, 401, HOME5),
        CardRecord(C, 402, 0b0100000),
        CardRecord(E, 403, HOME5, klass=Klass.EXEMPT),
    ]
    t = _Taps(t0)
    t.tap(A, 0, "first ride: charged, starts the window", mono=1000)
    t.tap(A, 0, "29.999 s later: debounced", mono=30999)
    t.tap(A, 0, "exactly 30 s later: not debounced (strictly less than), charged", mono=31000)
    t.tap(A, 0, "20 s after the last charged ride: debounced", mono=51000)
    t.tap(A, 0, "40 s after the last charged ride: charged (the debounced tap did not extend the window)", mono=71000)
    t.tap(B, 0, "another card of the same household: its own window, charged", mono=71500)
    t.tap(A, 5, "9 s later riding down: still debounced, whatever the direction", mono=80000)
    t.tap(C, 0, "floor-5-only card: charged, starts its window", mono=200000)
    t.tap(C, 5, "denied (NO_FLOOR): neither debounced nor restarting the window", mono=210000)
    t.tap(C, 0, "20 s after its last granted ride: debounced", mono=220000)
    t.tap(C, 0, "30 s after its last granted ride: charged", mono=230000)
    t.tap(E, 0, "exempt: free class, starts a window", mono=300000)
    t.tap(E, 0, "exempt re-tap 1 s later: DEBOUNCED (checked before free class)", mono=301000)
    t.tap(E, 0, "exempt 31 s after: free class again", mono=331000)
    scenarios.append(_scenario("debounce", cfg, cards, t))

    cfg = base_config(monthly_cap_fen=0, debounce_s=0)
    cards = [CardRecord(A, 401, HOME5)]
    t = _Taps(t0)
    t.tap(A, 0, "debounce_s 0: every tap charged", mono=1000)
    t.tap(A, 0, "same millisecond: still charged", mono=1000)
    t.tap(A, 0, "1 ms later: charged", mono=1001)
    scenarios.append(_scenario("debounce_disabled", cfg, cards, t))

    # -- free classes --
    RES, EX, ST, VIS = 0xF000000000000001, 0xF000000000000002, 0x0F00000000000003, 0xF000000000000004
    cards = [
        CardRecord(RES, 501, HOME5),
        CardRecord(EX, 502, HOME5, klass=Klass.EXEMPT),
        CardRecord(ST, 503, HOME5, klass=Klass.STAFF),
        CardRecord(VIS, 501, HOME5, klass=Klass.VISITOR),
    ]
    for name, free, notes in (
        ("free_classes_exempt_staff", ["exempt", "staff"], ("charged", "free", "free", "charged to host household 501")),
        ("free_classes_visitor_only", ["visitor"], ("charged", "charged", "charged", "free")),
        ("free_classes_none", [], ("charged", "charged", "charged", "charged to host household 501")),
    ):
        t = _Taps(t0)
        for cid, note, klass in zip((RES, EX, ST, VIS), notes, ("resident", "exempt", "staff", "visitor")):
            t.tap(cid, 0, "%s up to 5: %s" % (klass, note))
        t.tap(EX, 5, "exempt riding down, fee_fen[0] is 0: %s" % (
            "FREE_CLASS is set even though the fare is 0" if "exempt" in free else "0, no flag"))
        t.tap(VIS, 5, "visitor riding down, fee_fen[0] is 0: %s" % (
            "FREE_CLASS is set even though the fare is 0" if "visitor" in free else "0, no flag"))
        scenarios.append(_scenario(name, base_config(free_classes=free, monthly_cap_fen=3000), cards, t))

    # -- monthly cap, partial and full, shared by a household's visitor card --
    cfg = base_config(free_classes=["exempt"], monthly_cap_fen=100, debounce_s=0)
    R1, V1, R2, X1, R3 = 0x9000000000000001, 0x9000000000000002, 0x1000000000000003, 0x9000000000000004, 0x9000000000000005
    cards = [
        CardRecord(R1, 901, HOME5),
        CardRecord(V1, 901, HOME5, klass=Klass.VISITOR),
        CardRecord(R2, 0xFFFFFF, HOME5),
        CardRecord(X1, 901, HOME5, klass=Klass.EXEMPT),
        CardRecord(R3, 903, 0b0000101),
    ]
    t = _Taps(t0)
    t.tap(R1, 0, "40 of 100")
    t.tap(R1, 0, "80 of 100")
    t.tap(R1, 0, "only 20 left: partially capped")
    t.tap(R1, 0, "cap reached: 0, CAPPED")
    t.tap(R1, 5, "riding down costs 0 anyway: not CAPPED")
    t.tap(V1, 0, "visitor of household 901: capped with its host")
    t.tap(X1, 0, "exempt card of household 901: FREE_CLASS, not CAPPED")
    t.tap(R2, 0, "household 0xFFFFFF has its own cap: 40")
    for i in range(10):
        t.tap(R3, 0, "home 2, 10 fen: %d0 of 100%s" % (i + 1, " exactly, not CAPPED" if i == 9 else ""))
    t.tap(R3, 0, "cap reached: CAPPED")
    scenarios.append(_scenario("monthly_cap", cfg, cards, t))

    cfg = base_config(monthly_cap_fen=30, debounce_s=0)
    cards = [CardRecord(R1, 901, HOME5)]
    t = _Taps(t0)
    t.tap(R1, 0, "cap 30 below a 40 fen fare: 30, CAPPED")
    t.tap(R1, 0, "then 0, CAPPED")
    scenarios.append(_scenario("monthly_cap_below_one_fare", cfg, cards, t))

    # -- the cap resets when the LOCAL month changes --
    for name, offset in (("cap_resets_at_local_month_utc+8", 480), ("cap_resets_at_local_month_utc-5", -300)):
        cfg = base_config(monthly_cap_fen=100, debounce_s=0)
        cfg["utc_offset_min"] = offset
        cards = [CardRecord(R1, 901, HOME5)]

        def at(*wall, offset=offset):
            return local_epoch(*wall, offset_min=offset)

        t = _Taps(at(2026, 10, 31, 22, 0, 0), start_mono=5000)
        t.tap(R1, 0, "October: 40", epoch=at(2026, 10, 31, 22, 0, 0))
        t.tap(R1, 0, "October: 80", epoch=at(2026, 10, 31, 22, 10, 0))
        t.tap(R1, 0, "October: capped at 100", epoch=at(2026, 10, 31, 22, 20, 0))
        t.tap(R1, 0, "23:59:59 local on 31 October: still October, 0", epoch=at(2026, 10, 31, 23, 59, 59))
        t.tap(R1, 0, "00:00:00 local on 1 November: new month, 40", epoch=at(2026, 11, 1, 0, 0, 0))
        t.tap(R1, 0, "November: 80", epoch=at(2026, 11, 30, 23, 50, 0))
        t.tap(R1, 0, "November: capped", epoch=at(2026, 11, 30, 23, 55, 0))
        t.tap(R1, 0, "23:59:59 local on 30 November: 0", epoch=at(2026, 11, 30, 23, 59, 59))
        t.tap(R1, 0, "00:00:00 local on 1 December: 40", epoch=at(2026, 12, 1, 0, 0, 0))
        t.tap(R1, 0, "December: 80", epoch=at(2026, 12, 31, 23, 0, 0))
        t.tap(R1, 0, "December: capped", epoch=at(2026, 12, 31, 23, 30, 0))
        t.tap(R1, 0, "23:59:59 local on 31 December: 0", epoch=at(2026, 12, 31, 23, 59, 59))
        t.tap(R1, 0, "00:00:00 local on 1 January 2027: new year, new month, 40", epoch=at(2027, 1, 1, 0, 0, 0))
        scenarios.append(_scenario(name, cfg, cards, t))

    # -- valid_until follows the local day at a negative offset too --
    cfg = base_config()
    cfg["utc_offset_min"] = -300
    last = local_day(local_epoch(2026, 11, 10, 12, 0, 0, offset_min=-300), -300)
    cards = [CardRecord(ENDS, 105, HOME5, valid_until=last)]
    t = _Taps(local_epoch(2026, 11, 10, 12, 0, 0, offset_min=-300))
    t.tap(ENDS, 0, "last valid local day (UTC-5)", gap_s=0)
    t.tap(ENDS, 0, "23:59:59 local (already the next day in UTC): still valid",
          epoch=local_epoch(2026, 11, 10, 23, 59, 59, offset_min=-300))
    t.tap(ENDS, 0, "00:00:00 local the next day: expired", epoch=local_epoch(2026, 11, 11, 0, 0, 0, offset_min=-300))
    scenarios.append(_scenario("expiry_local_day_utc-5", cfg, cards, t))

    # -- a cap of 0 means no cap --
    cfg = base_config(fee_fen=[0, 0, 10, 20, 30, 40, 65535], monthly_cap_fen=0, debounce_s=0)
    TOP = ID_MAX - 1
    cards = [CardRecord(R1, 901, HOME5), CardRecord(TOP, 901, 0b1000001)]
    t = _Taps(t0)
    for i in range(5):
        t.tap(R1, 0, "no cap: 40 every time (%d)" % (i + 1))
    for i in range(3):
        t.tap(TOP, 0, "no cap: the largest fee, 65535 fen, every time (%d)" % (i + 1))
    scenarios.append(_scenario("no_cap", cfg, cards, t))

    return scenarios


# ---------------------------------------------------------------------------
# Reader <-> gateway link messages (docs/uplink.md)
# ---------------------------------------------------------------------------


def gen_uplink():
    import struct

    from liftcard_protocol import link as ul

    keys = ul.LinkKeys(KEY)
    rid, bid = READER_ID, BUILDING_ID
    t = local_epoch(2026, 11, 10, 8, 0, 0)
    up = lambda boot, n: ul.counter_of(boot, n)      # noqa: E731  reader: boot count, message number
    down = lambda n: ul.counter_of(40, n)             # noqa: E731  gateway: its own boot count 40

    r = _Det("uplink rides")
    batch32 = [RideRecord(1000 + i, t + 37 * i, 500 + 37 * i, r.bits(64), r.bits(24), r.below(7), r.bits(16),
                          r.below(13), r.bits(6), 3) for i in range(32)]
    batches = [
        ("one granted ride", up(3, 1), 0, [RideRecord(1, t, 12, ID_MAX, 101, 5, 40, Result.GRANTED, 0, 3)]),
        ("three rides: unsynced clock, denied, debounced", up(3, 2), up(3, 1), [
            RideRecord(2, 17, 17, ID_BELOW_HIGH, 0, NO_FLOOR, 0, Result.UNKNOWN_CARD, Flag.CLOCK_UNSYNCED, 3),
            RideRecord(3, t + 60, 80, 0x0000000004A21B9C, 0xFFFFFF, 3, 7, Result.GRANTED,
                       Flag.CLOCK_UNSYNCED | Flag.LEGACY_UID | Flag.CAPPED, 3),
            RideRecord(4, t + 61, 81, ID_HIGH, 102, 0, 0, Result.GRANTED, Flag.DEBOUNCED, 3)]),
        ("empty batch", up(3, 3), up(3, 2), []),
        ("32 rides, the most a message carries", up(4, 1), up(3, 3), batch32),
        ("largest counter", ul.U64, ul.U64 - 1, [RideRecord(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, ID_ZERO, 0, 0, 0,
                                                            0, 0, 0xFFFF)]),
    ]
    valid = []
    for why, ctr, last, recs in batches:
        msg = ul.build_rides(keys, rid, bid, ctr, recs)
        assert ul.parse(keys, msg, rid, bid, ul.UP, last).rides == tuple(recs)
        valid.append({"kind": "rides", "direction": "up", "counter": ctr, "last_counter": last, "why": why,
                      "hex": msg.hex(), "fields": {"records": [x.pack().hex() for x in recs]}})
    statuses = [
        ("heartbeat", up(4, 2), up(4, 1), ul.ReaderStatus(3600, 61234, 5, 7, 0, 0, ul.ST_CLOCK_SYNCED, 4, t + 3)),
        ("log full, unsynced, an error, large values", up(4, 3), up(4, 2),
         ul.ReaderStatus(0xFFFFFFFF, 0x80000000, 65152, 0xFFFFFFFF, 1234, 255, ul.ST_LOG_FULL, 0xFFFF, 0xFFFFFFFF)),
    ]
    for why, ctr, last, st in statuses:
        msg = ul.build_status(keys, rid, bid, ctr, st)
        valid.append({"kind": "status", "direction": "up", "counter": ctr, "last_counter": last, "why": why,
                      "hex": msg.hex(), "fields": st.to_fields()})
    s = _Det("uplink sun counters")
    sun64 = [(s.bits(64), s.bits(24)) for _ in range(ul.MAX_SUN)]
    suns = [
        ("one NTAG counter", up(4, 4), up(4, 3), [(ID_BELOW_HIGH, 7)]),
        ("counters 0 and 0xFFFFFF, card ids 0 and the largest", up(4, 5), up(4, 4),
         [(ID_ZERO, 0), (ID_MAX, 0xFFFFFF), (0x04A21B9C11223344, 0x010203)]),
        ("64 counters, the most a message carries", up(4, 6), up(4, 5), sun64),
    ]
    for why, ctr, last, ents in suns:
        msg = ul.build_sunctr(keys, rid, bid, ctr, ents)
        assert ul.parse(keys, msg, rid, bid, ul.UP, last).sun == tuple(ents)
        valid.append({"kind": "sunctr_up", "direction": "up", "counter": ctr, "last_counter": last, "why": why,
                      "hex": msg.hex(), "fields": {"entries": [["%016x" % c, n] for c, n in ents]}})

    ack = ul.build_ack(keys, rid, bid, down(1), 4)
    tim = ul.build_time(keys, rid, bid, down(2), t)
    ops = [("upsert", CardRecord(ID_BELOW_HIGH, 101, HOME5, Status.SUSPENDED)), ("remove", ID_HIGH)]
    delta_blob = build_delta(KEY, rid, bid, 5, 6, ops)
    wl_blob = build_whitelist(KEY, rid, bid, 7, sorted(_small_list()), t)
    downs = [
        ("ack up to seq 4", "ack", down(1), 0, ack, {"seq": 4}),
        ("time sync", "time", down(2), down(1), tim, {"epoch_s": t}),
        ("ack of every seq", "ack", down(7), down(2), ul.build_ack(keys, rid, bid, down(7), 0xFFFFFFFF),
         {"seq": 0xFFFFFFFF}),
        ("a whitelist delta 5 -> 6 (LCWD, 2 operations)", "delta", down(8), down(7),
         ul.build_delta(keys, rid, bid, down(8), delta_blob), {"blob": delta_blob.hex()}),
    ]
    ctr = 9
    for off, data in ul.whitelist_chunks(wl_blob, 64):
        msg = ul.build_whitelist_chunk(keys, rid, bid, down(ctr), 7, len(wl_blob), off, data)
        downs.append(("whitelist v7 chunk at %d of %d" % (off, len(wl_blob)), "whitelist", down(ctr),
                      down(ctr - 1), msg,
                      {"version": 7, "total": len(wl_blob), "offset": off, "data": data.hex()}))
        ctr += 1
    downs.append(("time sync after the gateway rebooted (its boot count 41)", "time", ul.counter_of(41, 1),
                  down(ctr - 1), ul.build_time(keys, rid, bid, ul.counter_of(41, 1), 0xFFFFFFFF),
                  {"epoch_s": 0xFFFFFFFF}))
    for why, ctr_, ents in (("SUN counters from another reader of the building", ul.counter_of(41, 2),
                             [(ID_BELOW_HIGH, 8), (ID_MAX, 0xFFFFFF)]),
                            ("64 SUN counters (a catch-up message)", ul.counter_of(41, 3), sun64)):
        downs.append((why, "sunctr_down", ctr_, downs[-1][2], ul.build_sunctr(keys, rid, bid, ctr_, ents, down=True),
                      {"entries": [["%016x" % c, n] for c, n in ents]}))
    for why, kind, ctr_, last, msg, fields in downs:
        ul.parse(keys, msg, rid, bid, ul.DOWN, last)
        valid.append({"kind": kind, "direction": "down", "counter": ctr_, "last_counter": last, "why": why,
                      "hex": msg.hex(), "fields": fields})

    # -- invalid --
    rides3 = bytes.fromhex(valid[1]["hex"])
    rec3 = [x.pack() for x in batches[1][3]]
    c_up, l_up = up(3, 2), up(3, 1)

    def rides_raw(body, ctr=c_up):
        return ul.seal(keys, ul.RIDES, rid, bid, ctr, body)

    bad_crc = bytearray(rec3[1])
    bad_crc[31] ^= 1
    c_ack = down(1)

    def sealed(kind=ul.ACK, body=(4).to_bytes(4, "big"), ctr=c_ack, reader=rid, building=bid, **kw):
        return ul.seal(keys, kind, reader, building, ctr, body, **kw)

    st_bytes = statuses[0][3].pack()
    sun3 = ul.sun_body(suns[1][3])
    sun65 = ul.sun_body(sun64) + ul.sun_body(suns[0][3])
    first_card = ul.HEADER_LEN + 12  # the first ride's card id in the ciphertext
    inv = [
        # up: what the gateway refuses
        ("up", l_up, _flip(rides3, len(rides3) - 1), "bad MAC (last MAC byte flipped)", "mac"),
        ("up", l_up, _flip(rides3, first_card), "flipped ciphertext byte (a card id)", "mac"),
        ("up", l_up, _flip(rides3, 23), "flipped counter byte in the header", "mac"),
        ("up", l_up, ul.build_rides(ul.LinkKeys(OTHER_KEY), rid, bid, c_up, batches[1][3]).hex(),
         "MAC'd with another reader's key", "mac"),
        ("up", l_up, rides3[:-1].hex(), "truncated by one byte", "mac"),
        ("up", l_up, rides3[:39].hex(), "39 bytes: shorter than header + MAC", "size"),
        ("up", l_up, "", "empty", "size"),
        ("up", c_up, rides3.hex(), "replayed: counter equal to the last accepted", "replay"),
        ("up", up(4, 1), rides3.hex(), "replayed after the reader rebooted: older boot count", "replay"),
        ("up", l_up, ul.build_rides(keys, rid + 1, bid, c_up, batches[1][3]).hex(),
         "for another reader (valid MAC)", "reader"),
        ("up", l_up, ul.build_rides(keys, rid, bid + 1, c_up, batches[1][3]).hex(),
         "for another building (valid MAC)", "building"),
        ("up", l_up, (b"LCLX" + rides3[4:]).hex(), "bad magic", "magic"),
        ("up", l_up, ul.seal(keys, ul.RIDES, rid, bid, c_up, b"".join(rec3), magic=b"LCWD").hex(),
         "delta magic (valid MAC)", "magic"),
        ("up", l_up, ul.seal(keys, ul.RIDES, rid, bid, c_up, b"".join(rec3), version=2).hex(),
         "version 2 (valid MAC)", "version"),
        ("up", l_up, ul.seal(keys, ul.RIDES, rid, bid, c_up, b"".join(rec3), reserved=1).hex(),
         "nonzero reserved header field (valid MAC)", "field"),
        ("up", l_up, sealed(ul.ACK, ctr=c_up).hex(), "a down kind (ACK) sent up (valid MAC)", "kind"),
        ("up", l_up, sealed(0x04, b"", ctr=c_up).hex(), "unknown kind 0x04 (valid MAC)", "kind"),
        ("up", l_up, sealed(ul.SUNCTR_DOWN, sun3, ctr=c_up).hex(), "a down kind (SUNCTR 0x85) sent up (valid MAC)",
         "kind"),
        ("up", l_up, sealed(ul.SUNCTR_UP, b"", ctr=c_up).hex(), "SUNCTR with no entry (valid MAC)", "size"),
        ("up", l_up, sealed(ul.SUNCTR_UP, sun3[:-1], ctr=c_up).hex(),
         "SUNCTR body not a whole number of 11-byte entries (valid MAC)", "size"),
        ("up", l_up, sealed(ul.SUNCTR_UP, sun65, ctr=c_up).hex(), "SUNCTR with 65 entries (valid MAC)", "size"),
        ("up", l_up, rides_raw(b"".join(x.pack() for x in batch32) + rec3[0]).hex(),
         "33 rides: one more than a message carries (valid MAC)", "size"),
        ("up", l_up, rides_raw(b"".join(rec3)[:-1]).hex(), "rides body not a whole number of records (valid MAC)",
         "size"),
        ("up", l_up, rides_raw(rec3[0] + bytes(bad_crc) + rec3[2]).hex(), "a ride with a bad CRC (valid MAC)",
         "field"),
        ("up", l_up, rides_raw(rec3[0] + EMPTY_SLOT).hex(), "an erased slot in the batch (valid MAC)", "field"),
        ("up", l_up, sealed(ul.STATUS, st_bytes[:-1], ctr=c_up).hex(), "status body of 27 bytes (valid MAC)",
         "size"),
        ("up", l_up, sealed(ul.STATUS, st_bytes[:21] + b"\x81" + st_bytes[22:], ctr=c_up).hex(),
         "status flags with an undefined bit (valid MAC)", "field"),
        # down: what the reader refuses
        ("down", 0, _flip(ack, len(ack) - 1), "bad MAC (last MAC byte flipped)", "mac"),
        ("down", down(1), _flip(tim, ul.HEADER_LEN + 2), "flipped ciphertext byte", "mac"),
        ("down", 0, _flip(ack, 16), "flipped counter byte in the header", "mac"),
        ("down", 0, ul.build_ack(ul.LinkKeys(OTHER_KEY), rid, bid, c_ack, 4).hex(), "MAC'd with another reader's key",
         "mac"),
        ("down", 0, ul.seal(ul.LinkKeys(OTHER_KEY), ul.ACK, rid, bid, c_ack, (4).to_bytes(4, "big")).hex(),
         "another reader's ACK replayed on this reader's topic", "mac"),
        ("down", 0, ack[:-1].hex(), "truncated by one byte", "mac"),
        ("down", 0, ack[:39].hex(), "39 bytes: shorter than header + MAC", "size"),
        ("down", 0, "", "empty", "size"),
        ("down", c_ack, ack.hex(), "replayed ACK: counter equal to the last accepted", "replay"),
        ("down", down(2), ack.hex(), "replayed ACK: counter below the last accepted", "replay"),
        ("down", down(9), tim.hex(), "replayed TIME (would set the clock back)", "replay"),
        ("down", 0, sealed(ctr=0).hex(), "counter 0 (never accepted)", "replay"),
        ("down", 0, sealed(reader=rid + 1).hex(), "for another reader (valid MAC)", "reader"),
        ("down", 0, sealed(building=bid + 1).hex(), "for another building (valid MAC)", "building"),
        ("down", 0, (b"LCWD" + ack[4:]).hex(), "bad magic", "magic"),
        ("down", 0, sealed(version=0).hex(), "version 0 (valid MAC)", "version"),
        ("down", 0, sealed(reserved=0x100).hex(), "nonzero reserved header field (valid MAC)", "field"),
        ("down", 0, rides_raw(b"".join(rec3), c_ack).hex(), "an up kind (RIDES) sent down (valid MAC)", "kind"),
        ("down", 0, sealed(ul.STATUS, st_bytes).hex(), "an up kind (STATUS) sent down (valid MAC)", "kind"),
        ("down", 0, sealed(0x86, b"").hex(), "unknown kind 0x86 (valid MAC)", "kind"),
        ("down", 0, sealed(ul.SUNCTR_UP, sun3).hex(), "an up kind (SUNCTR 0x03) sent down (valid MAC)", "kind"),
        ("down", 0, sealed(ul.SUNCTR_DOWN, b"").hex(), "SUNCTR with no entry (valid MAC)", "size"),
        ("down", 0, sealed(ul.SUNCTR_DOWN, sun3 + b"\x00").hex(),
         "SUNCTR body not a whole number of 11-byte entries (valid MAC)", "size"),
        ("down", 0, sealed(ul.SUNCTR_DOWN, sun65).hex(), "SUNCTR with 65 entries (valid MAC)", "size"),
        ("down", 0, sealed(ul.ACK, (4).to_bytes(5, "big")).hex(), "ACK body of 5 bytes (valid MAC)", "size"),
        ("down", 0, sealed(ul.TIME, b"\x00\x01\x02").hex(), "TIME body of 3 bytes (valid MAC)", "size"),
        ("down", 0, sealed(ul.DELTA, delta_blob[:39]).hex(), "DELTA body of 39 bytes (valid MAC)", "size"),
        ("down", 0, sealed(ul.WHITELIST, struct.pack(">III", 7, 128, 0)).hex(),
         "WHITELIST chunk with no data (valid MAC)", "size"),
        ("down", 0, sealed(ul.WHITELIST, struct.pack(">III", 7, 120, 100) + wl_blob[100:]).hex(),
         "WHITELIST chunk past the end of its file (valid MAC)", "field"),
        ("down", 0, sealed(ul.WHITELIST, struct.pack(">III", 7, 47, 0) + wl_blob[:47]).hex(),
         "WHITELIST file of 47 bytes, shorter than any LCWL (valid MAC)", "field"),
    ]
    invalid = []
    for direction, last, h, why, reason in inv:
        try:
            ul.parse(keys, bytes.fromhex(h), rid, bid, direction, last)
        except ul.FormatError as e:
            assert e.reason == reason, (why, e.reason, reason)
        else:
            raise AssertionError("vector not refused: " + why)
        invalid.append({"direction": direction, "last_counter": last, "hex": h, "why": why, "reason": reason})
    return {"key": KEY.hex(), "reader_id": rid, "building_id": bid, "enc_key": keys.enc.hex(),
            "mac_key": keys.mac.hex(), "magic": ul.MAGIC.hex(), "max_rides": ul.MAX_RIDES,
            "valid": valid, "invalid": invalid}


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

GENERATORS = {
    "crc16.jsonl": gen_crc16,
    "mac16.jsonl": gen_mac16,
    "card_record.jsonl": gen_card_record,
    "whitelist.jsonl": gen_whitelist,
    "delta.jsonl": gen_delta,
    "ride_record.jsonl": gen_ride_record,
    "config.jsonl": gen_config,
    "fees.jsonl": gen_fees,
    "uplink.jsonl": gen_uplink,
}


def _line(obj) -> str:
    return json.dumps(obj, sort_keys=True) + "\n"


def render(obj) -> str:
    if isinstance(obj, list):
        return "".join(_line(item) for item in obj)
    meta = {k: v for k, v in obj.items() if not isinstance(v, list)}
    out = [_line({"meta": meta})]
    for group in sorted(k for k, v in obj.items() if isinstance(v, list)):
        out.extend(_line({"group": group, "case": case}) for case in obj[group])
    return "".join(out)


def parse(text: str):
    """The object render() wrote."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not lines or "meta" not in lines[0]:
        return lines
    obj = dict(lines[0]["meta"])
    for line in lines[1:]:
        obj.setdefault(line["group"], []).append(line["case"])
    return obj


def load(name: str, directory: Path = VECTOR_DIR):
    """A vector file by name ("fees.jsonl"), as the object it holds."""
    return parse((directory / name).read_text(encoding="utf-8"))


def generate() -> dict:
    """File name -> exact file text."""
    return {name: render(gen()) for name, gen in GENERATORS.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="liftcard-vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and exit 1 if the files on disk differ")
    ap.add_argument("--dir", type=Path, default=VECTOR_DIR, help="vector directory (default: %(default)s)")
    args = ap.parse_args(argv)
    files = generate()
    if args.check:
        stale = []
        for name, text in files.items():
            path = args.dir / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        if stale:
            print("liftcard-vectors: out of date in %s: %s (run liftcard-vectors)" % (args.dir, ", ".join(stale)),
                  file=sys.stderr)
            return 1
        print("liftcard-vectors: %d files up to date" % len(files))
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.dir / name).write_text(text, encoding="utf-8")
    print("liftcard-vectors: wrote %d files to %s" % (len(files), args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
