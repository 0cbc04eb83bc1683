"""The bank's signed card update (`LCCU`, docs/cards.md): codec and verification.

The bank sends the gateway its card database as Ed25519-signed updates, either
a full snapshot or an incremental change from a base version:

    header (28) | count operations of 21 bytes | Ed25519 signature (64)

Header (all integers big-endian, unsigned):

    0  4  magic "LCCU"
    4  1  format = 1
    5  1  kind: 1 snapshot, 2 incremental
    6  2  reserved = 0
    8  4  compound_id: the gateway (compound) the update is for, 1 .. 2^30-1
    12 4  version: the card database version after the update, >= 1
    16 4  base_version: incremental: the version it applies to (< version); snapshot: 0
    20 4  issued: liftcard epoch seconds (informative)
    24 4  count of operations

Operation: u8 op (1 upsert, 2 remove), u32 building_id (1 .. 2^30-1), the 16-byte
card record of docs/formats.md (a remove: the card id, then 8 zero bytes).
Operations are sorted by (building_id, card_id), strictly increasing; a snapshot
holds upserts only. The signature is Ed25519 (RFC 8032) by the bank's key over
every byte before it.

`parse_update(public_key, data)` verifies and decodes, raising `UpdateError`
whose `reason` is `malformed` or `forged`; checks against the gateway's state
(compound, stale, gap) are the card database's (cards.py). No message carries
a card id, a key or a signature.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .card import CardRecord
from .codes import Op
from .errors import FormatError
from .fields import CARD_LEN, ID_MAX, U32
from .keys import public_key_bytes

MAGIC = b"LCCU"
FORMAT = 1
SNAPSHOT = 1
INCREMENTAL = 2
KIND_NAMES = {SNAPSHOT: "snapshot", INCREMENTAL: "incremental"}
_HDR = struct.Struct(">4sBBHIIIII")  # magic format kind reserved compound version base issued count
HEADER_LEN = _HDR.size  # 28
assert HEADER_LEN == 28
OP_LEN = 1 + 4 + CARD_LEN  # 21
SIG_LEN = 64
MIN_LEN = HEADER_LEN + SIG_LEN  # 92: no operations
MAX_OPS = 4_000_000  # about 84 MB; far above any compound
MAX_LEN = HEADER_LEN + OP_LEN * MAX_OPS + SIG_LEN

# UpdateError reasons (stable strings: logs and tests/vectors/cards.jsonl name them).
R_MALFORMED = "malformed"  # not a well-formed update (size, magic, format, fields, order)
R_FORGED = "forged"  # the signature does not verify with the bank's public key
R_COMPOUND = "compound"  # signed for another compound (gateway)
R_STALE = "stale"  # version not newer than the database's
R_GAP = "gap"  # incremental whose base_version is not the database's version
REASONS = (R_MALFORMED, R_FORGED, R_COMPOUND, R_STALE, R_GAP)


class UpdateError(ValueError):
    """A card update is refused. `reason` is one of REASONS; str() is one line
    without card ids, keys or signature bytes."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CardOp:
    """One operation: an upsert carries the record, a remove only the card id."""

    op: str  # "upsert" | "remove"
    building_id: int
    card_id: int
    record: CardRecord | None = field(default=None, compare=True)

    @staticmethod
    def upsert(building_id: int, record: CardRecord) -> "CardOp":
        return CardOp("upsert", building_id, record.card_id, record)

    @staticmethod
    def remove(building_id: int, card_id: int) -> "CardOp":
        return CardOp("remove", building_id, card_id, None)

    def key(self) -> tuple:
        return (self.building_id, self.card_id)

    def __repr__(self) -> str:  # no card id
        return "CardOp(%s, building=%d)" % (self.op, self.building_id)


@dataclass(frozen=True, repr=False)
class CardUpdate:
    kind: int
    compound_id: int
    version: int
    base_version: int
    issued: int
    ops: tuple = ()

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def __repr__(self) -> str:
        return "CardUpdate(%s, compound=%d, version=%d, base=%d, ops=%d)" % (
            KIND_NAMES.get(self.kind, "?"),
            self.compound_id,
            self.version,
            self.base_version,
            len(self.ops),
        )


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


# public_key_bytes, the key loaders: liftcard_protocol.keys.


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


def _op_bytes(o: CardOp) -> bytes:
    if o.op == "upsert":
        return bytes((Op.UPSERT,)) + o.building_id.to_bytes(4, "big") + o.record.pack()
    return bytes((Op.REMOVE,)) + o.building_id.to_bytes(4, "big") + o.card_id.to_bytes(8, "big") + bytes(8)


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise UpdateError(R_MALFORMED, message)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def encode_unsigned(
    kind: int,
    compound_id: int,
    version: int,
    base_version: int,
    issued: int,
    ops: Iterable[CardOp],
    *,
    check: bool = True,
    magic: bytes = MAGIC,
    fmt: int = FORMAT,
    reserved: int = 0,
    count: int | None = None,
    sort: bool = True,
) -> bytes:
    """The bytes an update's signature covers. check=False (with the keyword
    overrides) builds deliberately malformed updates for the test vectors."""
    ops = list(ops)
    if sort:
        ops.sort(key=CardOp.key)
    if check:
        _need(kind in KIND_NAMES, "kind must be 1 (snapshot) or 2 (incremental)")
        _need(_int(compound_id) and 1 <= compound_id <= ID_MAX, "compound_id must be 1 .. 2^30-1")
        _need(_int(version) and 1 <= version <= U32, "version must be 1 .. 2^32-1")
        _need(_int(issued) and 0 <= issued <= U32, "issued must be 0 .. 2^32-1")
        if kind == SNAPSHOT:
            _need(base_version == 0, "a snapshot has base_version 0")
        else:
            _need(
                _int(base_version) and 0 <= base_version < version,
                "an incremental update's base_version must be below its version",
            )
        _need(len(ops) <= MAX_OPS, "more than %d operations" % MAX_OPS)
        prev = None
        for o in ops:
            _need(isinstance(o, CardOp) and o.op in ("upsert", "remove"), "operations must be CardOps")
            _need(_int(o.building_id) and 1 <= o.building_id <= ID_MAX, "building_id must be 1 .. 2^30-1")
            if o.op == "upsert":
                _need(
                    isinstance(o.record, CardRecord) and o.record.card_id == o.card_id,
                    "an upsert needs its card record",
                )
            else:
                _need(kind == INCREMENTAL, "a snapshot holds upserts only")
                _need(_int(o.card_id) and 0 <= o.card_id < 1 << 64, "card_id must be a u64")
            _need(prev is None or o.key() > prev, "two operations on one card of one building")
            prev = o.key()
    n = len(ops) if count is None else count
    hdr = _HDR.pack(magic, fmt, kind, reserved, compound_id, version, base_version, issued, n)
    return hdr + b"".join(_op_bytes(o) for o in ops)


def sign(private_key: Ed25519PrivateKey, unsigned: bytes) -> bytes:
    """unsigned + its Ed25519 signature."""
    return bytes(unsigned) + private_key.sign(bytes(unsigned))


def build_update(
    private_key: Ed25519PrivateKey,
    kind: int,
    compound_id: int,
    version: int,
    base_version: int,
    ops: Iterable[CardOp],
    issued: int = 0,
) -> bytes:
    """A complete signed update; refuses (UpdateError malformed) what parse would refuse."""
    return sign(private_key, encode_unsigned(kind, compound_id, version, base_version, issued, ops))


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def parse_update(public_key, data: bytes) -> CardUpdate:
    """Verifies and decodes a signed update. Order: size and magic (malformed),
    signature (forged), then every other field (malformed): format, kind,
    reserved, ids, versions, size against count, each operation (op byte,
    building, record fields, a remove's zero padding), strict (building, card)
    order. Nothing but the signature is trusted before it verifies."""
    pub = Ed25519PublicKey.from_public_bytes(public_key_bytes(public_key))
    data = bytes(data)
    if len(data) < MIN_LEN:
        raise UpdateError(R_MALFORMED, "card update too short: %d bytes (at least %d)" % (len(data), MIN_LEN))
    if len(data) > MAX_LEN:
        raise UpdateError(R_MALFORMED, "card update too long: %d bytes" % len(data))
    if data[:4] != MAGIC:
        raise UpdateError(R_MALFORMED, "not a card update (bad magic)")
    end = len(data) - SIG_LEN
    try:
        pub.verify(data[end:], data[:end])
    except InvalidSignature:
        raise UpdateError(R_FORGED, "card update signature does not verify with the bank's public key") from None
    _, fmt, kind, reserved, compound, version, base, issued, count = _HDR.unpack_from(data)
    _need(fmt == FORMAT, "unsupported card update format %d" % fmt)
    _need(kind in KIND_NAMES, "unknown card update kind %d" % kind)
    _need(reserved == 0, "card update reserved field is not zero")
    _need(1 <= compound <= ID_MAX, "compound_id out of range")
    _need(version >= 1, "version must be at least 1")
    if kind == SNAPSHOT:
        _need(base == 0, "a snapshot must have base_version 0")
    else:
        _need(base < version, "base_version %d is not below version %d" % (base, version))
    want = HEADER_LEN + OP_LEN * count + SIG_LEN
    _need(len(data) == want, "card update is %d bytes, its count of %d needs %d" % (len(data), count, want))
    ops = []
    prev = None
    for i, off in enumerate(range(HEADER_LEN, end, OP_LEN)):
        op = data[off]
        bid = int.from_bytes(data[off + 1 : off + 5], "big")
        rec = data[off + 5 : off + OP_LEN]
        cid = int.from_bytes(rec[:8], "big")
        _need(1 <= bid <= ID_MAX, "operation %d: building_id out of range" % (i + 1))
        key = (bid, cid)
        _need(prev is None or key > prev, "operation %d: not sorted by (building, card) or a duplicate" % (i + 1))
        prev = key
        if op == Op.UPSERT:
            try:
                ops.append(CardOp("upsert", bid, cid, CardRecord.unpack(rec)))
            except FormatError:
                raise UpdateError(R_MALFORMED, "operation %d: invalid card status or class" % (i + 1)) from None
        elif op == Op.REMOVE:
            _need(kind == INCREMENTAL, "operation %d: a snapshot holds upserts only" % (i + 1))
            _need(not any(rec[8:]), "operation %d: a remove carries a record" % (i + 1))
            ops.append(CardOp("remove", bid, cid, None))
        else:
            raise UpdateError(R_MALFORMED, "operation %d: unknown operation %d" % (i + 1, op))
    return CardUpdate(kind, compound, version, base, issued, tuple(ops))
