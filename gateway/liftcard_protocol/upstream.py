"""The gateway <-> bank ledger formats (docs/upstream.md): BATCH and ACK.

Both are binary, big-endian, and end with a 64-byte Ed25519 signature over
every byte before it. A BATCH is signed with the gateway's key, an ACK with the
ledger's. The magic differs ("LCUB" / "LCUA"), so one can never pass for the
other.

BATCH  (gateway -> ledger, topic liftcard/gw/<gateway_id>/batches)

    off  size  field
    0    4     magic "LCUB"
    4    1     version = 1
    5    1     gateway_id length n (1 .. 64)
    6    n     gateway_id, ASCII [A-Za-z0-9_-]
    6+n  8     batch_id     u64, 1 .. 2^63-1
         4     reader_id    u32, 1 .. 2^30-1
         4     building_id  u32, 1 .. 2^30-1
         2     count        u16, 1 .. MAX_RIDES
         35*count rides (RIDE below)
         64    Ed25519 signature over all bytes above

    RIDE (35 bytes): seq u32, time u32, uptime u32, card_id u64, household u24,
    floor u8, fee u16, result u8, flags u8, boot u16, xflags u8,
    time_corrected u32. xflags bit 0 set: time_corrected holds a value; clear:
    time_corrected is NULL and the field must be 0. Other xflags bits are 0.
    Seqs in one batch are distinct (not necessarily ascending: the gateway's
    storage order).

ACK (ledger -> gateway, topic liftcard/gw/<gateway_id>/acks)

    0    4     magic "LCUA"
    4    1     version = 1
    5    1     gateway_id length n, 6 n gateway_id
    6+n  8     batch_id, 4 reader_id, 4 first_seq, 4 last_seq, 2 count
         64    Ed25519 signature (the ledger's key) over all bytes above

first_seq/last_seq are the batch's first and last ride seq in batch order.
Every decoding problem raises UpstreamFormatError with a short `reason`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .fields import ID_MAX
from .topics import GATEWAY_ID_RE

BATCH_MAGIC = b"LCUB"
ACK_MAGIC = b"LCUA"
VERSION = 1
SIG_LEN = 64
RIDE_LEN = 35
MAX_RIDES = 5000
BATCH_ID_MAX = (1 << 63) - 1
XF_TIME_CORRECTED = 0x01

_RIDE = struct.Struct(">IIIQ3sBHBBHBI")
_BATCH_HEAD = struct.Struct(">QIIH")
_ACK_BODY = struct.Struct(">QIIIH")
assert _RIDE.size == RIDE_LEN

# Refusal reasons (also the `reason` of the ledger's / gateway's `refused` logs).
R_SIZE, R_MAGIC, R_VERSION, R_GATEWAY, R_FIELD, R_SIGNATURE = (
    "size",
    "magic",
    "version",
    "gateway",
    "field",
    "signature",
)


class UpstreamFormatError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class UpRide:
    seq: int
    time: int
    uptime: int
    card_id: int
    household: int
    floor: int
    fee: int
    result: int
    flags: int
    boot: int
    time_corrected: int | None = None

    def __post_init__(self):
        for name, hi in (
            ("seq", 0xFFFFFFFF),
            ("time", 0xFFFFFFFF),
            ("uptime", 0xFFFFFFFF),
            ("card_id", 0xFFFFFFFFFFFFFFFF),
            ("household", 0xFFFFFF),
            ("floor", 0xFF),
            ("fee", 0xFFFF),
            ("result", 0xFF),
            ("flags", 0xFF),
            ("boot", 0xFFFF),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise UpstreamFormatError(R_FIELD, "%s out of range" % name)
        tc = self.time_corrected
        if tc is not None and (isinstance(tc, bool) or not isinstance(tc, int) or not 0 <= tc <= 0xFFFFFFFF):
            raise UpstreamFormatError(R_FIELD, "time_corrected out of range")

    def pack(self) -> bytes:
        tc = self.time_corrected
        return _RIDE.pack(
            self.seq,
            self.time,
            self.uptime,
            self.card_id,
            self.household.to_bytes(3, "big"),
            self.floor,
            self.fee,
            self.result,
            self.flags,
            self.boot,
            0 if tc is None else XF_TIME_CORRECTED,
            0 if tc is None else tc,
        )

    @classmethod
    def unpack_from(cls, buf, off: int) -> "UpRide":
        (seq, t, up, card, hh, floor, fee, result, flags, boot, xf, tc) = _RIDE.unpack_from(buf, off)
        if xf & ~XF_TIME_CORRECTED:
            raise UpstreamFormatError(R_FIELD, "unknown xflags bits")
        if not xf & XF_TIME_CORRECTED:
            if tc != 0:
                raise UpstreamFormatError(R_FIELD, "time_corrected must be 0 when absent")
            tc = None
        return cls(seq, t, up, card, int.from_bytes(hh, "big"), floor, fee, result, flags, boot, tc)


@dataclass(frozen=True)
class Batch:
    gateway_id: str
    batch_id: int
    reader_id: int
    building_id: int
    rides: tuple

    @property
    def first_seq(self) -> int:
        return self.rides[0].seq

    @property
    def last_seq(self) -> int:
        return self.rides[-1].seq


@dataclass(frozen=True)
class Ack:
    gateway_id: str
    batch_id: int
    reader_id: int
    first_seq: int
    last_seq: int
    count: int


def _check_gateway_id(gid) -> bytes:
    if not isinstance(gid, str) or not GATEWAY_ID_RE.fullmatch(gid):
        raise UpstreamFormatError(R_GATEWAY, "gateway_id must be 1 .. 64 of [A-Za-z0-9_-]")
    return gid.encode("ascii")


def _check(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise UpstreamFormatError(R_FIELD, "%s must be %d .. %d" % (name, lo, hi))
    return v


def _head(magic: bytes, gateway_id: str) -> bytes:
    g = _check_gateway_id(gateway_id)
    return magic + bytes([VERSION, len(g)]) + g


def batch_body(gateway_id: str, batch_id: int, reader_id: int, building_id: int, rides) -> bytes:
    """The signed part of a BATCH. `rides` are UpRide; 1 .. MAX_RIDES of them, distinct seqs."""
    rides = list(rides)
    _check("batch_id", batch_id, 1, BATCH_ID_MAX)
    _check("reader_id", reader_id, 1, ID_MAX)
    _check("building_id", building_id, 1, ID_MAX)
    _check("count", len(rides), 1, MAX_RIDES)
    if len({r.seq for r in rides}) != len(rides):
        raise UpstreamFormatError(R_FIELD, "seqs in a batch must be distinct")
    return b"".join(
        [
            _head(BATCH_MAGIC, gateway_id),
            _BATCH_HEAD.pack(batch_id, reader_id, building_id, len(rides)),
            *(r.pack() for r in rides),
        ]
    )


def build_batch(
    key: Ed25519PrivateKey, gateway_id: str, batch_id: int, reader_id: int, building_id: int, rides
) -> bytes:
    body = batch_body(gateway_id, batch_id, reader_id, building_id, rides)
    return body + key.sign(body)


def build_batch_from_rows(
    key: Ed25519PrivateKey, gateway_id: str, batch_id: int, reader_id: int, building_id: int, rows
) -> bytes:
    """Fast path for the gateway: rows are tuples in RIDE order (card_id as 16 hex
    digits, time_corrected None or int), already range-checked by the store."""
    rows = list(rows)
    _check("count", len(rows), 1, MAX_RIDES)
    parts = [
        _head(BATCH_MAGIC, gateway_id),
        _BATCH_HEAD.pack(
            _check("batch_id", batch_id, 1, BATCH_ID_MAX),
            _check("reader_id", reader_id, 1, ID_MAX),
            _check("building_id", building_id, 1, ID_MAX),
            len(rows),
        ),
    ]
    pack = _RIDE.pack
    try:
        for seq, t, up, card, hh, floor, fee, result, flags, boot, tc in rows:
            parts.append(
                pack(
                    seq,
                    t,
                    up,
                    int(card, 16),
                    hh.to_bytes(3, "big"),
                    floor,
                    fee,
                    result,
                    flags,
                    boot,
                    0 if tc is None else XF_TIME_CORRECTED,
                    0 if tc is None else tc,
                )
            )
    except (struct.error, OverflowError, TypeError, ValueError):
        raise UpstreamFormatError(R_FIELD, "a stored ride does not fit the batch format") from None
    body = b"".join(parts)
    return body + key.sign(body)


def _split_head(data: bytes, magic: bytes, min_rest: int) -> tuple[str, int]:
    """Check magic/version/gateway id; return (gateway_id, offset after it)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UpstreamFormatError(R_SIZE, "payload must be bytes")
    if len(data) < 6 + 1 + min_rest + SIG_LEN:
        raise UpstreamFormatError(R_SIZE, "payload too short (%d bytes)" % len(data))
    if bytes(data[:4]) != magic:
        raise UpstreamFormatError(R_MAGIC, "bad magic")
    if data[4] != VERSION:
        raise UpstreamFormatError(R_VERSION, "unsupported version %d" % data[4])
    n = data[5]
    raw = bytes(data[6 : 6 + n])
    try:
        gid = raw.decode("ascii")
    except UnicodeDecodeError:
        gid = ""
    if not n or not GATEWAY_ID_RE.fullmatch(gid):
        raise UpstreamFormatError(R_GATEWAY, "bad gateway_id")
    return gid, 6 + n


def peek_gateway_id(data: bytes, magic: bytes = BATCH_MAGIC) -> str:
    """The gateway id a BATCH (or ACK) claims, before its signature is checked
    (to pick the public key). Raises UpstreamFormatError."""
    return _split_head(bytes(data), magic, 0)[0]


def verify_signature(pub: Ed25519PublicKey, data: bytes) -> bytes:
    data = bytes(data)
    if len(data) <= SIG_LEN:
        raise UpstreamFormatError(R_SIZE, "payload too short")
    body, sig = data[:-SIG_LEN], data[-SIG_LEN:]
    try:
        pub.verify(sig, body)
    except InvalidSignature:
        raise UpstreamFormatError(R_SIGNATURE, "bad signature") from None
    return body


def parse_batch(pub: Ed25519PublicKey | None, data: bytes, expect_gateway: str | None = None) -> Batch:
    """Decode and verify a BATCH. pub None skips the signature (tests/vectors only)."""
    data = bytes(data)
    gid, off = _split_head(data, BATCH_MAGIC, _BATCH_HEAD.size)
    if expect_gateway is not None and gid != expect_gateway:
        raise UpstreamFormatError(R_GATEWAY, "batch names another gateway")
    batch_id, reader_id, building_id, count = _BATCH_HEAD.unpack_from(data, off)
    off += _BATCH_HEAD.size
    if len(data) != off + count * RIDE_LEN + SIG_LEN:
        raise UpstreamFormatError(R_SIZE, "length does not match count %d" % count)
    if pub is not None:
        verify_signature(pub, data)
    _check("batch_id", batch_id, 1, BATCH_ID_MAX)
    _check("reader_id", reader_id, 1, ID_MAX)
    _check("building_id", building_id, 1, ID_MAX)
    _check("count", count, 1, MAX_RIDES)
    rides = tuple(UpRide.unpack_from(data, off + i * RIDE_LEN) for i in range(count))
    if len({r.seq for r in rides}) != count:
        raise UpstreamFormatError(R_FIELD, "seqs in a batch must be distinct")
    return Batch(gid, batch_id, reader_id, building_id, rides)


def ack_body(gateway_id: str, batch_id: int, reader_id: int, first_seq: int, last_seq: int, count: int) -> bytes:
    _check("batch_id", batch_id, 1, BATCH_ID_MAX)
    _check("reader_id", reader_id, 1, ID_MAX)
    _check("first_seq", first_seq, 0, 0xFFFFFFFF)
    _check("last_seq", last_seq, 0, 0xFFFFFFFF)
    _check("count", count, 1, MAX_RIDES)
    return _head(ACK_MAGIC, gateway_id) + _ACK_BODY.pack(batch_id, reader_id, first_seq, last_seq, count)


def build_ack(
    key: Ed25519PrivateKey, gateway_id: str, batch_id: int, reader_id: int, first_seq: int, last_seq: int, count: int
) -> bytes:
    body = ack_body(gateway_id, batch_id, reader_id, first_seq, last_seq, count)
    return body + key.sign(body)


def ack_for(key: Ed25519PrivateKey, batch: Batch) -> bytes:
    return build_ack(
        key, batch.gateway_id, batch.batch_id, batch.reader_id, batch.first_seq, batch.last_seq, len(batch.rides)
    )


def parse_ack(pub: Ed25519PublicKey | None, data: bytes, expect_gateway: str | None = None) -> Ack:
    data = bytes(data)
    gid, off = _split_head(data, ACK_MAGIC, _ACK_BODY.size)
    if len(data) != off + _ACK_BODY.size + SIG_LEN:
        raise UpstreamFormatError(R_SIZE, "ack has the wrong length")
    if pub is not None:
        verify_signature(pub, data)
    if expect_gateway is not None and gid != expect_gateway:
        raise UpstreamFormatError(R_GATEWAY, "ack names another gateway")
    batch_id, reader_id, first_seq, last_seq, count = _ACK_BODY.unpack_from(data, off)
    _check("batch_id", batch_id, 1, BATCH_ID_MAX)
    _check("reader_id", reader_id, 1, ID_MAX)
    _check("count", count, 1, MAX_RIDES)
    return Ack(gid, batch_id, reader_id, first_seq, last_seq, count)
