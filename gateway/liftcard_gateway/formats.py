"""CPython codecs for every byte format in docs/formats.md (the source of truth).

The firmware (firmware/liftcard/) implements the same formats in MicroPython;
both sides are checked against the shared vectors in tests/vectors/, written by
`liftcard-vectors` (liftcard_tools.vectors).

Conventions, as in the doc: all integers are big-endian and unsigned, money is
integer fen, times are u32 seconds since the liftcard epoch (2024-01-01T00:00Z),
days are local days since that epoch.

Errors: anything refused raises `FormatError` (a `ValueError`) whose `reason` is
one of the short codes below and whose message is one line naming the problem.
A bad reader configuration raises `ConfigError`, whose `key` names the offending
config key. No message ever carries a key, a MAC or a config value.
"""

from __future__ import annotations

import binascii
import datetime
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------
# Common conventions
# ---------------------------------------------------------------------------

LIFTCARD_EPOCH = 1704067200  # 2024-01-01T00:00:00Z as a Unix timestamp
_EPOCH_DATE = datetime.date(2024, 1, 1)
KEY_LEN = 32
MAC_LEN = 16
CARD_LEN = 16
NO_END = 0xFFFF  # valid_until: the card never expires
NO_FLOOR = 0xFF  # ride record floor / tap floor: unknown or none

U8, U16, U24, U32, U64 = 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF

# FormatError reasons. Stable strings: the shared vectors name them.
R_SIZE = "size"              # shorter or longer than the format says
R_MAGIC = "magic"            # wrong 4-byte magic
R_FORMAT = "format"          # unsupported format number
R_RECORD_SIZE = "record_size"
R_HEADER = "header"          # a reserved header field is not zero
R_READER = "reader"          # for another reader
R_BUILDING = "building"      # for another building
R_MAC = "mac"                # MAC does not verify
R_ORDER = "order"            # card ids not strictly increasing (includes duplicates)
R_FIELD = "field"            # a field out of range (status/class nibble, remove payload...)
R_OP = "op"                  # unknown delta operation byte
R_VERSION = "version"        # delta new_version not greater than its base_version
R_STALE = "stale"            # version not newer than the one held (replay / rollback)
R_GAP = "gap"                # delta base_version is not the held version
R_CRC = "crc"                # CRC16 does not match (torn or corrupted)
R_EMPTY = "empty"            # an erased 32-byte ride slot (all 0xFF)

REASONS = (
    R_SIZE, R_MAGIC, R_FORMAT, R_RECORD_SIZE, R_HEADER, R_READER, R_BUILDING, R_MAC,
    R_ORDER, R_FIELD, R_OP, R_VERSION, R_STALE, R_GAP, R_CRC, R_EMPTY,
)


class FormatError(ValueError):
    """A structure is refused. `reason` is one of REASONS; str() is one line."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ConfigError(ValueError):
    """A reader config is refused. `key` is the offending key ("tariff.fee_fen");
    the message names the key and the rule, never the value."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Status(IntEnum):
    ACTIVE = 0
    SUSPENDED = 1  # household unpaid
    LOST = 2
    EXPIRED = 3


class Klass(IntEnum):
    RESIDENT = 0
    EXEMPT = 1  # elderly / disabled
    STAFF = 2
    VISITOR = 3


# Config names of the classes (tariff.free_classes), indexed by class value.
CLASS_NAMES = ("resident", "exempt", "staff", "visitor")
STATUS_NAMES = ("active", "suspended", "lost", "expired")


class Result(IntEnum):
    GRANTED = 0
    UNKNOWN_CARD = 1
    SUSPENDED = 2
    LOST = 3
    EXPIRED = 4
    NO_FLOOR = 5
    NO_WHITELIST = 6
    BAD_READ = 7
    AUTH_FAILED = 8
    REPLAY = 9
    CARD_REMOVED = 10
    CARD_GARBAGE = 11
    LEGACY_DISABLED = 12


RESULT_NAMES = {r.value: r.name for r in Result}


class Flag(IntFlag):
    CLOCK_UNSYNCED = 0x01
    LEGACY_UID = 0x02
    DEBOUNCED = 0x04
    CAPPED = 0x08
    FREE_CLASS = 0x10
    CAP_UNTRACKED = 0x20


FLAG_NAMES = {f.value: f.name for f in Flag}


class Op(IntEnum):
    UPSERT = 1
    REMOVE = 2


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor out)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def mac16(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256(key, msg) truncated to its first 16 bytes."""
    return hmac.new(bytes(key), bytes(msg), hashlib.sha256).digest()[:MAC_LEN]


def local_day(epoch_s: int, utc_offset_min: int) -> int:
    """Local days since the liftcard epoch (floor division, so it is also right
    for a negative offset just after the epoch)."""
    return (epoch_s + utc_offset_min * 60) // 86400


def day_to_date(day: int) -> datetime.date:
    """The civil date of a local day (as used by valid_until)."""
    return _EPOCH_DATE + datetime.timedelta(days=day)


def date_to_day(d: datetime.date) -> int:
    return (d - _EPOCH_DATE).days


def month_key(epoch_s: int, utc_offset_min: int) -> int:
    """year*100 + month of the local date: the monthly cap resets when it changes."""
    d = day_to_date(local_day(epoch_s, utc_offset_min))
    return d.year * 100 + d.month


def epoch_from_unix(unix_s: int) -> int:
    return unix_s - LIFTCARD_EPOCH


def unix_from_epoch(epoch_s: int) -> int:
    return epoch_s + LIFTCARD_EPOCH


def card_id_hex(card_id: int) -> str:
    """The JSON / log spelling of a card id: 16 lowercase hex digits."""
    return "%016x" % card_id


def _is_int(v) -> bool:
    # bool is an int subclass in Python; JSON true must not pass for 1.
    return isinstance(v, int) and not isinstance(v, bool)


def _need_uint(name: str, v, hi: int) -> int:
    if not _is_int(v) or not 0 <= v <= hi:
        raise FormatError(R_FIELD, "%s must be an integer 0..%d" % (name, hi))
    return v


def _need_key(key) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_LEN:
        raise ValueError("reader key must be %d bytes" % KEY_LEN)
    return bytes(key)


# ---------------------------------------------------------------------------
# Card record (16 bytes)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class CardRecord:
    """One card: the unit of whitelists, deltas and the overlay.

    Construction validates every field, so a CardRecord always packs. Ordering
    compares card_id first, which is the whitelist sort order (unsigned)."""

    card_id: int                 # u64
    household: int = 0           # u24, the paying household
    floors: int = 0              # u16 mask, bit n = floor index n allowed
    status: int = Status.ACTIVE  # 0..3
    klass: int = Klass.RESIDENT  # 0..3
    valid_until: int = NO_END    # u16 local day; 0xFFFF = no end

    def __post_init__(self):
        _need_uint("card_id", self.card_id, U64)
        _need_uint("household", self.household, U24)
        _need_uint("floors", self.floors, U16)
        _need_uint("valid_until", self.valid_until, U16)
        if not _is_int(self.status) or not 0 <= self.status <= 3:
            raise FormatError(R_FIELD, "card status must be 0..3")
        if not _is_int(self.klass) or not 0 <= self.klass <= 3:
            raise FormatError(R_FIELD, "card class must be 0..3")
        # Store plain ints so equality, hashing and JSON never depend on enum types.
        object.__setattr__(self, "status", int(self.status))
        object.__setattr__(self, "klass", int(self.klass))

    def pack(self) -> bytes:
        return (
            self.card_id.to_bytes(8, "big")
            + self.household.to_bytes(3, "big")
            + self.floors.to_bytes(2, "big")
            + bytes(((self.status << 4) | self.klass,))
            + self.valid_until.to_bytes(2, "big")
        )

    @classmethod
    def unpack(cls, b: bytes) -> "CardRecord":
        b = bytes(b)
        if len(b) != CARD_LEN:
            raise FormatError(R_SIZE, "card record must be 16 bytes, got %d" % len(b))
        sc = b[13]
        if sc >> 4 > 3:
            raise FormatError(R_FIELD, "card %s has invalid status %d" % (b[:8].hex(), sc >> 4))
        if sc & 15 > 3:
            raise FormatError(R_FIELD, "card %s has invalid class %d" % (b[:8].hex(), sc & 15))
        return cls(
            card_id=int.from_bytes(b[0:8], "big"),
            household=int.from_bytes(b[8:11], "big"),
            floors=int.from_bytes(b[11:13], "big"),
            status=sc >> 4,
            klass=sc & 15,
            valid_until=int.from_bytes(b[14:16], "big"),
        )

    def to_fields(self) -> dict:
        """The shared JSON spelling (tests/vectors): card_id as 16 hex digits."""
        return {
            "card_id": card_id_hex(self.card_id),
            "household": self.household,
            "floors": self.floors,
            "status": self.status,
            "klass": self.klass,
            "valid_until": self.valid_until,
        }

    @classmethod
    def from_fields(cls, d: Mapping) -> "CardRecord":
        cid = d["card_id"]
        if isinstance(cid, str):
            if len(cid) != 16:
                raise FormatError(R_FIELD, "card_id must be 16 hex digits")
            cid = int(cid, 16)
        return cls(cid, d["household"], d["floors"], d["status"], d["klass"], d["valid_until"])


def _check_sorted(card_ids: Sequence[int], what: str) -> None:
    for prev, cur in zip(card_ids, card_ids[1:]):
        if cur == prev:
            raise FormatError(R_ORDER, "%s has duplicate card id %s" % (what, card_id_hex(cur)))
        if cur < prev:
            raise FormatError(R_ORDER, "%s card ids are not sorted at %s" % (what, card_id_hex(cur)))


# ---------------------------------------------------------------------------
# Whitelist file (LCWL)
# ---------------------------------------------------------------------------

WL_MAGIC = b"LCWL"
WL_FORMAT = 1
_WL_HDR = struct.Struct(">4sBBHIIIIII")  # magic fmt recsize flags reader building version count issued reserved
WL_HEADER_LEN = _WL_HDR.size  # 32
assert WL_HEADER_LEN == 32


@dataclass(frozen=True)
class Whitelist:
    reader_id: int
    building_id: int
    version: int
    issued: int
    cards: list = field(default_factory=list)  # list[CardRecord], sorted by card id

    @property
    def count(self) -> int:
        return len(self.cards)


def _seal_whitelist(key: bytes, reader_id: int, building_id: int, version: int,
                    records: Sequence[bytes], issued: int = 0, *, magic: bytes = WL_MAGIC,
                    fmt: int = WL_FORMAT, record_size: int = CARD_LEN, flags: int = 0,
                    reserved: int = 0, count: int | None = None) -> bytes:
    # Raw writer: no checks on the records, every header field settable. The test
    # vectors use it to make files that are wrong in one way but carry a valid MAC.
    n = len(records) if count is None else count
    hdr = _WL_HDR.pack(magic, fmt, record_size, flags, reader_id, building_id, version, n, issued, reserved)
    body = hdr + b"".join(records)
    return body + mac16(key, body)


def build_whitelist(key: bytes, reader_id: int, building_id: int, version: int,
                    cards: Iterable[CardRecord], issued: int = 0) -> bytes:
    """A complete LCWL file: cards sorted by id; duplicate ids are refused."""
    key = _need_key(key)
    for name, v in (("reader_id", reader_id), ("building_id", building_id),
                    ("version", version), ("issued", issued)):
        _need_uint(name, v, U32)
    recs = sorted(cards, key=lambda c: c.card_id)
    _check_sorted([c.card_id for c in recs], "whitelist")
    if len(recs) > U32:
        raise FormatError(R_SIZE, "whitelist has too many cards")
    return _seal_whitelist(key, reader_id, building_id, version, [c.pack() for c in recs], issued)


def parse_whitelist(key: bytes, data: bytes, reader_id: int | None = None,
                    building_id: int | None = None, held_version: int | None = None) -> Whitelist:
    """Checks an LCWL file in full and returns it.

    reader_id / building_id: the reader's own (None: not checked). held_version:
    the version the reader holds (None: none held); the file must be newer.
    Checks run in this order: size, magic, format, record size, reserved header
    fields, size against count, reader, building, MAC, record order and fields,
    version."""
    key = _need_key(key)
    data = bytes(data)
    if len(data) < WL_HEADER_LEN + MAC_LEN:
        raise FormatError(R_SIZE, "whitelist too short: %d bytes" % len(data))
    magic, fmt, rsize, flags, reader, building, version, count, issued, reserved = _WL_HDR.unpack_from(data)
    if magic != WL_MAGIC:
        raise FormatError(R_MAGIC, "not a whitelist (bad magic)")
    if fmt != WL_FORMAT:
        raise FormatError(R_FORMAT, "unsupported whitelist format %d" % fmt)
    if rsize != CARD_LEN:
        raise FormatError(R_RECORD_SIZE, "unsupported whitelist record size %d" % rsize)
    if flags or reserved:
        raise FormatError(R_HEADER, "whitelist reserved header fields are not zero")
    want = WL_HEADER_LEN + CARD_LEN * count + MAC_LEN
    if len(data) != want:
        raise FormatError(R_SIZE, "whitelist is %d bytes, its count of %d needs %d" % (len(data), count, want))
    if reader_id is not None and reader != reader_id:
        raise FormatError(R_READER, "whitelist is for reader %d, not %d" % (reader, reader_id))
    if building_id is not None and building != building_id:
        raise FormatError(R_BUILDING, "whitelist is for building %d, not %d" % (building, building_id))
    end = len(data) - MAC_LEN
    if not hmac.compare_digest(mac16(key, data[:end]), data[end:]):
        raise FormatError(R_MAC, "whitelist MAC does not verify")
    cards = []
    prev = -1
    for off in range(WL_HEADER_LEN, end, CARD_LEN):
        cid = int.from_bytes(data[off : off + 8], "big")
        if cid <= prev:
            what = "duplicate card id" if cid == prev else "card ids not sorted at"
            raise FormatError(R_ORDER, "whitelist %s %s" % (what, card_id_hex(cid)))
        prev = cid
        cards.append(CardRecord.unpack(data[off : off + CARD_LEN]))
    if held_version is not None and version <= held_version:
        raise FormatError(R_STALE, "stale whitelist version %d (holding %d)" % (version, held_version))
    return Whitelist(reader, building, version, issued, cards)


# ---------------------------------------------------------------------------
# Whitelist delta (LCWD) and the reader's overlay (LCWO)
# ---------------------------------------------------------------------------

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


def _op_id(op) -> int:
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
        return ("remove", _need_uint("card_id", arg, U64))
    raise FormatError(R_OP, "unknown delta operation")


def _op_bytes(op) -> bytes:
    kind, arg = op
    if kind == "upsert":
        return bytes((Op.UPSERT,)) + arg.pack()
    # A remove carries only the card id; the rest of the record must be zero.
    return bytes((Op.REMOVE,)) + arg.to_bytes(8, "big") + bytes(8)


def _seal_delta(key: bytes, reader_id: int, building_id: int, base_version: int,
                new_version: int, raw_ops: Sequence[bytes], *, magic: bytes = WD_MAGIC,
                fmt: int = WL_FORMAT, record_size: int = CARD_LEN, count: int | None = None) -> bytes:
    # Raw writer (see _seal_whitelist): raw_ops are 17-byte operations, unchecked.
    n = len(raw_ops) if count is None else count
    hdr = _WD_HDR.pack(magic, fmt, record_size, n, reader_id, building_id, base_version, new_version)
    body = hdr + b"".join(raw_ops)
    return body + mac16(key, body)


def build_delta(key: bytes, reader_id: int, building_id: int, base_version: int,
                new_version: int, ops: Iterable, *, magic: bytes = WD_MAGIC) -> bytes:
    """An LCWD delta. ops: ("upsert", CardRecord) / ("remove", card_id), in any
    order (sorted here); two operations on one card id are refused."""
    key = _need_key(key)
    for name, v in (("reader_id", reader_id), ("building_id", building_id),
                    ("base_version", base_version), ("new_version", new_version)):
        _need_uint(name, v, U32)
    if new_version <= base_version:
        raise FormatError(R_VERSION, "delta new_version %d is not greater than base_version %d"
                          % (new_version, base_version))
    norm = sorted((_norm_op(o) for o in ops), key=_op_id)
    _check_sorted([_op_id(o) for o in norm], "delta")
    if len(norm) > U16:
        raise FormatError(R_SIZE, "delta has more than 65535 operations")
    return _seal_delta(key, reader_id, building_id, base_version, new_version,
                       [_op_bytes(o) for o in norm], magic=magic)


def _parse_ops(key: bytes, data: bytes, magic: bytes, what: str, reader_id, building_id) -> Delta:
    key = _need_key(key)
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


def parse_delta(key: bytes, data: bytes, reader_id: int | None = None,
                building_id: int | None = None, held_version: int | None = None) -> Delta:
    """Checks an LCWD delta (same order as parse_whitelist, then operations) and,
    when held_version is given: new_version <= held -> "stale" (replay), else
    base_version != held -> "gap" (the gateway must send a full list or the
    missing deltas)."""
    d = _parse_ops(key, data, WD_MAGIC, "delta", reader_id, building_id)
    if held_version is not None:
        if d.new_version <= held_version:
            raise FormatError(R_STALE, "stale delta %d->%d (holding %d)" % (d.base_version, d.new_version, held_version))
        if d.base_version != held_version:
            raise FormatError(R_GAP, "delta %d->%d does not follow held version %d"
                              % (d.base_version, d.new_version, held_version))
    return d


def build_overlay(key: bytes, reader_id: int, building_id: int, base_list_version: int,
                  new_version: int, ops: Iterable) -> bytes:
    """The reader-local LCWO overlay: a delta layout from the base list's version."""
    return build_delta(key, reader_id, building_id, base_list_version, new_version, ops, magic=WO_MAGIC)


def parse_overlay(key: bytes, data: bytes, reader_id: int | None = None,
                  building_id: int | None = None, base_list_version: int | None = None) -> Delta:
    """An overlay whose base_version is not the base list's version is stale."""
    d = _parse_ops(key, data, WO_MAGIC, "overlay", reader_id, building_id)
    if base_list_version is not None and d.base_version != base_list_version:
        raise FormatError(R_STALE, "overlay applies to list version %d, base list is %d"
                          % (d.base_version, base_list_version))
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


# ---------------------------------------------------------------------------
# Ride record (32 bytes) and the ack journal entry (8 bytes)
# ---------------------------------------------------------------------------

RIDE_LEN = 32
EMPTY_SLOT = b"\xff" * RIDE_LEN
_RIDE_HEAD = struct.Struct(">IIIQ")   # seq time uptime card_id      (bytes 0..19)
_RIDE_TAIL = struct.Struct(">BHBBH")  # floor fee result flags boot  (bytes 23..29)


@dataclass(frozen=True)
class RideRecord:
    seq: int         # u32, per reader, strictly increasing
    time: int        # u32 epoch seconds (reader's best guess when CLOCK_UNSYNCED)
    uptime: int      # u32 seconds since this boot
    card_id: int     # u64
    household: int   # u24, 0 when the card is unknown
    floor: int       # u8 destination, 0xFF when none
    fee: int         # u16 fen charged
    result: int      # u8, Result (0 granted)
    flags: int       # u8, Flag bits
    boot: int        # u16 boot counter (wraps)

    def __post_init__(self):
        for name, hi in (("seq", U32), ("time", U32), ("uptime", U32), ("card_id", U64),
                         ("household", U24), ("floor", U8), ("fee", U16), ("result", U8),
                         ("flags", U8), ("boot", U16)):
            v = _need_uint(name, getattr(self, name), hi)
            # Plain ints (a Result or Flag member is welcome as input).
            object.__setattr__(self, name, int(v))

    def pack(self) -> bytes:
        body = (_RIDE_HEAD.pack(self.seq, self.time, self.uptime, self.card_id)
                + self.household.to_bytes(3, "big")
                + _RIDE_TAIL.pack(self.floor, self.fee, self.result, self.flags, self.boot))
        return body + crc16(body).to_bytes(2, "big")

    @classmethod
    def unpack(cls, b: bytes) -> "RideRecord":
        b = bytes(b)
        if len(b) != RIDE_LEN:
            raise FormatError(R_SIZE, "ride record must be 32 bytes, got %d" % len(b))
        if b == EMPTY_SLOT:
            # Checked before the CRC so a log scan can tell "erased" from "torn".
            raise FormatError(R_EMPTY, "ride slot is empty (erased)")
        if crc16(b[:30]) != int.from_bytes(b[30:32], "big"):
            raise FormatError(R_CRC, "ride record CRC does not match (torn or corrupted)")
        seq, time, uptime, card_id = _RIDE_HEAD.unpack_from(b, 0)
        floor, fee, result, flags, boot = _RIDE_TAIL.unpack_from(b, 23)
        # Every field came out of struct at its own width, so __post_init__'s
        # range checks cannot fail here; skipping them halves the gateway's
        # time per ride batch (tools/bench/gateway.py).
        rec = object.__new__(cls)
        rec.__dict__.update(seq=seq, time=time, uptime=uptime, card_id=card_id,
                            household=int.from_bytes(b[20:23], "big"), floor=floor, fee=fee,
                            result=result, flags=flags, boot=boot)
        return rec

    def to_fields(self) -> dict:
        return {
            "seq": self.seq, "time": self.time, "uptime": self.uptime,
            "card_id": card_id_hex(self.card_id), "household": self.household,
            "floor": self.floor, "fee": self.fee, "result": self.result,
            "flags": self.flags, "boot": self.boot,
        }

    @classmethod
    def from_fields(cls, d: Mapping) -> "RideRecord":
        cid = d["card_id"]
        if isinstance(cid, str):
            cid = int(cid, 16)
        return cls(d["seq"], d["time"], d["uptime"], cid, d["household"], d["floor"],
                   d["fee"], d["result"], d["flags"], d["boot"])


def is_empty_slot(b: bytes) -> bool:
    """An erased ride slot: 32 bytes of 0xFF (never a valid record: its CRC would be 0x5FBD)."""
    return bytes(b) == EMPTY_SLOT


ACK_KIND = 0x41  # 'A': the gateway acknowledged every record up to value
ACK_LEN = 8


def pack_ack(value: int, kind: int = ACK_KIND) -> bytes:
    """An ack journal entry: u8 kind, u8 0, u32 value, u16 CRC16 of the first 6 bytes."""
    body = bytes((_need_uint("kind", kind, U8), 0)) + _need_uint("value", value, U32).to_bytes(4, "big")
    return body + crc16(body).to_bytes(2, "big")


def unpack_ack(b: bytes) -> tuple:
    """(kind, value) of an ack journal entry."""
    b = bytes(b)
    if len(b) != ACK_LEN:
        raise FormatError(R_SIZE, "ack entry must be 8 bytes, got %d" % len(b))
    if b == b"\xff" * ACK_LEN:
        raise FormatError(R_EMPTY, "ack slot is empty (erased)")
    if crc16(b[:6]) != int.from_bytes(b[6:8], "big"):
        raise FormatError(R_CRC, "ack entry CRC does not match")
    if b[1]:
        raise FormatError(R_FIELD, "ack entry padding byte is not zero")
    return b[0], int.from_bytes(b[2:6], "big")


# ---------------------------------------------------------------------------
# Household spend checkpoint (LCSP)
# ---------------------------------------------------------------------------

SP_MAGIC = b"LCSP"
_SP_HDR = struct.Struct(">4sIIH")  # magic month_key last_seq count
SP_HEADER_LEN = _SP_HDR.size  # 14


@dataclass(frozen=True)
class SpendCheckpoint:
    month_key: int                              # year*100+month the spend belongs to
    last_seq: int                               # ride records up to this seq are included
    spent: dict = field(default_factory=dict)   # household (u24) -> fen spent (u32)

    def pack(self) -> bytes:
        _need_uint("month_key", self.month_key, U32)
        _need_uint("last_seq", self.last_seq, U32)
        if len(self.spent) > U16:
            raise FormatError(R_SIZE, "spend checkpoint has more than 65535 households")
        out = bytearray(_SP_HDR.pack(SP_MAGIC, self.month_key, self.last_seq, len(self.spent)))
        # Sorted so the same state always gives the same bytes (the reader writes
        # in hash-table order; readers of the file must not rely on any order).
        for hh in sorted(self.spent):
            out += _need_uint("household", hh, U24).to_bytes(3, "big") + b"\x00"
            out += _need_uint("spent", self.spent[hh], U32).to_bytes(4, "big")
        return bytes(out) + crc16(out).to_bytes(2, "big")

    @classmethod
    def unpack(cls, b: bytes) -> "SpendCheckpoint":
        b = bytes(b)
        if len(b) < SP_HEADER_LEN + 2:
            raise FormatError(R_SIZE, "spend checkpoint too short: %d bytes" % len(b))
        magic, month, last_seq, count = _SP_HDR.unpack_from(b)
        if magic != SP_MAGIC:
            raise FormatError(R_MAGIC, "not a spend checkpoint (bad magic)")
        end = SP_HEADER_LEN + 8 * count
        if len(b) != end + 2:
            raise FormatError(R_SIZE, "spend checkpoint is %d bytes, its count of %d needs %d"
                              % (len(b), count, end + 2))
        if crc16(b[:end]) != int.from_bytes(b[end:], "big"):
            raise FormatError(R_CRC, "spend checkpoint CRC does not match")
        spent = {}
        for off in range(SP_HEADER_LEN, end, 8):
            hh = int.from_bytes(b[off : off + 3], "big")
            if b[off + 3]:
                raise FormatError(R_FIELD, "spend checkpoint padding byte is not zero")
            if hh in spent:
                raise FormatError(R_FIELD, "spend checkpoint lists household %d twice" % hh)
            spent[hh] = int.from_bytes(b[off + 4 : off + 8], "big")
        return cls(month, last_seq, spent)


# ---------------------------------------------------------------------------
# Reader configuration (config.json)
# ---------------------------------------------------------------------------

_ID_MAX = (1 << 30) - 1  # reader and building ids stay ESP32 small ints
_HEX = frozenset("0123456789abcdefABCDEF")
CONFIG_DEFAULTS = {"legacy_uid": False, "relay_ms": 4000, "utc_offset_min": 480}


def _cfg_int(obj: Mapping, key: str, lo: int, hi: int, path: str | None = None, default=None) -> int:
    name = path or key
    if key not in obj:
        if default is None:
            raise ConfigError(name, "config: %s is missing" % name)
        return default
    v = obj[key]
    if not _is_int(v):
        raise ConfigError(name, "config: %s must be an integer" % name)
    if not lo <= v <= hi:
        raise ConfigError(name, "config: %s must be %d..%d" % (name, lo, hi))
    return v


def validate_config(obj: Mapping) -> dict:
    """Checks a reader config against the rules table in docs/formats.md and
    returns it normalised: defaults filled in (legacy_uid false, relay_ms 4000,
    utc_offset_min 480), the key in lowercase hex, free_classes deduplicated in
    class order, unknown keys dropped. The doc gives no defaults for the tariff
    keys, so all four are required. Validating a normalised config returns it
    unchanged. A refusal raises ConfigError naming the key, never its value."""
    if not isinstance(obj, Mapping):
        raise ConfigError("", "config: not a JSON object")
    out = {}
    out["reader_id"] = _cfg_int(obj, "reader_id", 1, _ID_MAX)
    out["building_id"] = _cfg_int(obj, "building_id", 1, _ID_MAX)
    floors = out["floors"] = _cfg_int(obj, "floors", 2, 16)
    out["ground_floor"] = _cfg_int(obj, "ground_floor", 0, floors - 1)
    if "key" not in obj:
        raise ConfigError("key", "config: key is missing")
    key = obj["key"]
    # Checked by character, not int(x, 16), which would also take "+f", " f" or "0x".
    if not isinstance(key, str) or len(key) != 2 * KEY_LEN or not set(key) <= _HEX:
        raise ConfigError("key", "config: key must be exactly 64 hex digits")
    out["key"] = key.lower()

    t = obj.get("tariff")
    if t is None:
        raise ConfigError("tariff", "config: tariff is missing")
    if not isinstance(t, Mapping):
        raise ConfigError("tariff", "config: tariff must be an object")
    if "fee_fen" not in t:
        raise ConfigError("tariff.fee_fen", "config: tariff.fee_fen is missing")
    fees = t["fee_fen"]
    if not isinstance(fees, list) or len(fees) != floors:
        raise ConfigError("tariff.fee_fen", "config: tariff.fee_fen must list one fee per floor (%d)" % floors)
    for f in fees:
        if not _is_int(f) or not 0 <= f <= U16:
            raise ConfigError("tariff.fee_fen", "config: tariff.fee_fen entries must be integers 0..65535 fen")
    if "free_classes" not in t:
        raise ConfigError("tariff.free_classes", "config: tariff.free_classes is missing")
    free = t["free_classes"]
    if not isinstance(free, list):
        raise ConfigError("tariff.free_classes", "config: tariff.free_classes must be a list")
    for c in free:
        if c not in CLASS_NAMES:
            raise ConfigError("tariff.free_classes",
                              "config: tariff.free_classes may hold only %s" % ", ".join(CLASS_NAMES))
    out["tariff"] = {
        "fee_fen": list(fees),
        "free_classes": [c for c in CLASS_NAMES if c in free],
        "monthly_cap_fen": _cfg_int(t, "monthly_cap_fen", 0, 10_000_000, "tariff.monthly_cap_fen"),
        "debounce_s": _cfg_int(t, "debounce_s", 0, 3600, "tariff.debounce_s"),
    }
    legacy = obj.get("legacy_uid", CONFIG_DEFAULTS["legacy_uid"])
    if type(legacy) is not bool:
        raise ConfigError("legacy_uid", "config: legacy_uid must be true or false")
    out["legacy_uid"] = legacy
    out["relay_ms"] = _cfg_int(obj, "relay_ms", 100, 60000, default=CONFIG_DEFAULTS["relay_ms"])
    out["utc_offset_min"] = _cfg_int(obj, "utc_offset_min", -720, 840, default=CONFIG_DEFAULTS["utc_offset_min"])
    if "uplink" in obj:
        out["uplink"] = _validate_uplink(obj["uplink"])
    return out


def _printable(s, lo: int, hi: int, space: bool) -> bool:
    first = " " if space else "!"
    return isinstance(s, str) and lo <= len(s) <= hi and all(first <= c <= "~" for c in s)


def _validate_uplink(u) -> dict:
    """The optional MQTT link of a reader (docs/uplink.md, "Reader side");
    the same rules as firmware/liftcard/config.py. The password is never echoed."""
    if not isinstance(u, Mapping):
        raise ConfigError("uplink", "config: uplink must be an object")
    if not _printable(u.get("host"), 1, 253, space=False):
        raise ConfigError("uplink.host",
                          "config: uplink.host must be a host name or IP address (1..253 printable characters)")
    if not _printable(u.get("password"), 1, 128, space=True):
        raise ConfigError("uplink.password", "config: uplink.password must be 1..128 printable ASCII characters")
    return {
        "host": u["host"],
        "port": _cfg_int(u, "port", 1, 65535, "uplink.port", default=1883),
        "password": u["password"],
        "keepalive_s": _cfg_int(u, "keepalive_s", 4, 3600, "uplink.keepalive_s", default=60),
    }


def config_key(cfg: Mapping) -> bytes:
    """The 32-byte reader key of a validated config."""
    return bytes.fromhex(cfg["key"])


def free_class_mask(cfg: Mapping) -> int:
    """Bit n set when class n rides free (validated config)."""
    mask = 0
    for name in cfg["tariff"]["free_classes"]:
        mask |= 1 << CLASS_NAMES.index(name)
    return mask
