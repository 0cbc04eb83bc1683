"""The whitelist delta (LCWD) and the reader's overlay (LCWO): card upserts and
removals against a base version, MAC'd with the reader's key
(docs/formats.md, "Whitelist delta")."""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .card import CardRecord, check_sorted
from .codes import Op
from .errors import (
    R_BUILDING,
    R_FIELD,
    R_FORMAT,
    R_GAP,
    R_MAC,
    R_MAGIC,
    R_OP,
    R_ORDER,
    R_READER,
    R_RECORD_SIZE,
    R_SIZE,
    R_STALE,
    R_VERSION,
    FormatError,
)
from .fields import CARD_LEN, MAC_LEN, U16, U32, U64, card_id_hex, mac16, need_key, need_uint
from .whitelist import WL_FORMAT


WD_MAGIC = b"LCWD"
WO_MAGIC = b"LCWO"
_WD_HDR = struct.Struct(">4sBBHIIII")  # magic fmt recsize count reader building base new
WD_HEADER_LEN = _WD_HDR.size  # 24
OP_LEN = 1 + CARD_LEN
assert WD_HEADER_LEN == 24


@dataclass(frozen=True)
class Delta:
    reader_id: int
    building_id: int
    base_version: int
    new_version: int
    ops: list = field(default_factory=list)  # [("upsert", CardRecord) | ("remove", int)], sorted by id


def op_id(op) -> int:
    kind, arg = op
    return arg.card_id if kind == "upsert" else arg


def _norm_op(op) -> tuple:
    # Accepts "upsert"/"remove", Op members or 1/2; returns ("upsert", rec) / ("remove", id).
    kind, arg = op
    if kind in ("upsert", Op.UPSERT):
        if not isinstance(arg, CardRecord):
            raise FormatError(R_FIELD, "an upsert needs a CardRecord")
        return ("upsert", arg)
    if kind in ("remove", Op.REMOVE):
        if isinstance(arg, CardRecord):
            arg = arg.card_id
        return ("remove", need_uint("card_id", arg, U64))
    raise FormatError(R_OP, "unknown delta operation")


def _op_bytes(op) -> bytes:
    kind, arg = op
    if kind == "upsert":
        return bytes((Op.UPSERT,)) + arg.pack()
    # A remove carries only the card id; the rest of the record must be zero.
    return bytes((Op.REMOVE,)) + arg.to_bytes(8, "big") + bytes(8)


def seal_delta(
    key: bytes,
    reader_id: int,
    building_id: int,
    base_version: int,
    new_version: int,
    raw_ops: Sequence[bytes],
    *,
    magic: bytes = WD_MAGIC,
    fmt: int = WL_FORMAT,
    record_size: int = CARD_LEN,
    count: int | None = None,
) -> bytes:
    # Raw writer (see _seal_whitelist): raw_ops are 17-byte operations, unchecked.
    n = len(raw_ops) if count is None else count
    hdr = _WD_HDR.pack(magic, fmt, record_size, n, reader_id, building_id, base_version, new_version)
    body = hdr + b"".join(raw_ops)
    return body + mac16(key, body)


def build_delta(
    key: bytes,
    reader_id: int,
    building_id: int,
    base_version: int,
    new_version: int,
    ops: Iterable,
    *,
    magic: bytes = WD_MAGIC,
) -> bytes:
    """An LCWD delta. ops: ("upsert", CardRecord) / ("remove", card_id), in any
    order (sorted here); two operations on one card id are refused."""
    key = need_key(key)
    for name, v in (
        ("reader_id", reader_id),
        ("building_id", building_id),
        ("base_version", base_version),
        ("new_version", new_version),
    ):
        need_uint(name, v, U32)
    if new_version <= base_version:
        raise FormatError(
            R_VERSION, "delta new_version %d is not greater than base_version %d" % (new_version, base_version)
        )
    norm = sorted((_norm_op(o) for o in ops), key=op_id)
    check_sorted([op_id(o) for o in norm], "delta")
    if len(norm) > U16:
        raise FormatError(R_SIZE, "delta has more than 65535 operations")
    return seal_delta(key, reader_id, building_id, base_version, new_version, [_op_bytes(o) for o in norm], magic=magic)


def _parse_ops(key: bytes, data: bytes, magic: bytes, what: str, reader_id, building_id) -> Delta:
    key = need_key(key)
    data = bytes(data)
    if len(data) < WD_HEADER_LEN + MAC_LEN:
        raise FormatError(R_SIZE, "%s too short: %d bytes" % (what, len(data)))
    m, fmt, rsize, count, reader, building, base, new = _WD_HDR.unpack_from(data)
    if m != magic:
        raise FormatError(R_MAGIC, "not a %s (bad magic)" % what)
    if fmt != WL_FORMAT:
        raise FormatError(R_FORMAT, "unsupported %s format %d" % (what, fmt))
    if rsize != CARD_LEN:
        raise FormatError(R_RECORD_SIZE, "unsupported %s record size %d" % (what, rsize))
    want = WD_HEADER_LEN + OP_LEN * count + MAC_LEN
    if len(data) != want:
        raise FormatError(R_SIZE, "%s is %d bytes, its count of %d needs %d" % (what, len(data), count, want))
    if reader_id is not None and reader != reader_id:
        raise FormatError(R_READER, "%s is for reader %d, not %d" % (what, reader, reader_id))
    if building_id is not None and building != building_id:
        raise FormatError(R_BUILDING, "%s is for building %d, not %d" % (what, building, building_id))
    end = len(data) - MAC_LEN
    if not hmac.compare_digest(mac16(key, data[:end]), data[end:]):
        raise FormatError(R_MAC, "%s MAC does not verify" % what)
    if new <= base:
        raise FormatError(R_VERSION, "%s new_version %d is not greater than base_version %d" % (what, new, base))
    ops = []
    prev = -1
    for off in range(WD_HEADER_LEN, end, OP_LEN):
        cid = int.from_bytes(data[off + 1 : off + 9], "big")
        if cid <= prev:
            problem = "duplicate card id" if cid == prev else "operations not sorted at"
            raise FormatError(R_ORDER, "%s %s %s" % (what, problem, card_id_hex(cid)))
        prev = cid
        op = data[off]
        if op == Op.UPSERT:
            ops.append(("upsert", CardRecord.unpack(data[off + 1 : off + OP_LEN])))
        elif op == Op.REMOVE:
            if any(data[off + 9 : off + OP_LEN]):
                raise FormatError(R_FIELD, "%s remove of %s carries a record" % (what, card_id_hex(cid)))
            ops.append(("remove", cid))
        else:
            raise FormatError(R_OP, "%s has unknown operation %d" % (what, op))
    return Delta(reader, building, base, new, ops)


def parse_delta(
    key: bytes,
    data: bytes,
    reader_id: int | None = None,
    building_id: int | None = None,
    held_version: int | None = None,
) -> Delta:
    """Checks an LCWD delta (same order as parse_whitelist, then operations) and,
    when held_version is given: new_version <= held -> "stale" (replay), else
    base_version != held -> "gap" (the gateway must send a full list or the
    missing deltas)."""
    d = _parse_ops(key, data, WD_MAGIC, "delta", reader_id, building_id)
    if held_version is not None:
        if d.new_version <= held_version:
            raise FormatError(
                R_STALE, "stale delta %d->%d (holding %d)" % (d.base_version, d.new_version, held_version)
            )
        if d.base_version != held_version:
            raise FormatError(
                R_GAP, "delta %d->%d does not follow held version %d" % (d.base_version, d.new_version, held_version)
            )
    return d


def build_overlay(
    key: bytes, reader_id: int, building_id: int, base_list_version: int, new_version: int, ops: Iterable
) -> bytes:
    """The reader-local LCWO overlay: a delta layout from the base list's version."""
    return build_delta(key, reader_id, building_id, base_list_version, new_version, ops, magic=WO_MAGIC)


def parse_overlay(
    key: bytes,
    data: bytes,
    reader_id: int | None = None,
    building_id: int | None = None,
    base_list_version: int | None = None,
) -> Delta:
    """An overlay whose base_version is not the base list's version is stale."""
    d = _parse_ops(key, data, WO_MAGIC, "overlay", reader_id, building_id)
    if base_list_version is not None and d.base_version != base_list_version:
        raise FormatError(
            R_STALE, "overlay applies to list version %d, base list is %d" % (d.base_version, base_list_version)
        )
    return d


def apply_ops(cards: Iterable[CardRecord], ops: Iterable) -> list:
    """The card list after a delta's operations: upsert replaces or inserts,
    remove drops (a remove of an absent card is a no-op). Sorted by card id."""
    by_id = {}
    for c in cards:
        if c.card_id in by_id:
            raise FormatError(R_ORDER, "card list has duplicate card id %s" % card_id_hex(c.card_id))
        by_id[c.card_id] = c
    for op in ops:
        kind, arg = _norm_op(op)
        if kind == "upsert":
            by_id[arg.card_id] = arg
        else:
            by_id.pop(arg, None)
    return [by_id[k] for k in sorted(by_id)]


def diff_whitelists(old_cards: Iterable[CardRecord], new_cards: Iterable[CardRecord]) -> list:
    """The minimal operations turning old into new, sorted by card id: an upsert
    for each card that is new or changed, a remove for each card that is gone.
    apply_ops(old, diff_whitelists(old, new)) == sorted(new)."""
    old = {c.card_id: c for c in old_cards}
    new = {}
    for c in new_cards:
        if c.card_id in new:
            raise FormatError(R_ORDER, "card list has duplicate card id %s" % card_id_hex(c.card_id))
        new[c.card_id] = c
    ops = []
    for cid in sorted(old.keys() | new.keys()):
        if cid not in new:
            ops.append(("remove", cid))
        elif old.get(cid) != new[cid]:
            ops.append(("upsert", new[cid]))
    return ops
