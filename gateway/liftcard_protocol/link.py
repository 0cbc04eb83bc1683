"""CPython codec for the reader <-> gateway link payloads (docs/uplink.md).

Every MQTT payload on `lc/<building>/reader-<id>/up|status|down` is one message:

    header (24) | body, AES-128-CTR encrypted | MAC16 over header + ciphertext

with keys derived from the reader's 32-byte key (the key that MACs its
whitelists), a counter that only grows per direction (replay protection), and
encrypt-then-MAC so card ids never travel in clear. The firmware implements the
same format in firmware/liftcard/uplinkcodec.py; both are checked against the
shared vectors in tests/vectors/uplink.jsonl.

Errors: anything refused raises `liftcard_protocol.errors.FormatError` whose
`reason` is one of REASONS below. No message, error or repr ever carries a
key, a MAC, a card id or a decrypted body.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Iterable, Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import FormatError
from .fields import KEY_LEN, MAC_LEN, U8, U16, U32, U64, crc16, need_uint
from .ride import EMPTY_SLOT, RIDE_LEN, RideRecord

# ---------------------------------------------------------------------------
# Constants (docs/uplink.md)
# ---------------------------------------------------------------------------

MAGIC = b"LCLK"
VERSION = 1

# Kinds. Bit 7 set = down (gateway -> reader).
RIDES = 0x01
STATUS = 0x02
SUNCTR_UP = 0x03  # NTAG 424 SUN counters a reader accepted (docs/uplink.md)
ACK = 0x81
TIME = 0x82
DELTA = 0x83
WHITELIST = 0x84
SUNCTR_DOWN = 0x85  # the same body, forwarded by the gateway to the building's other readers
RESEND = 0x86  # send the rides you still hold again, from a seq on (a gateway restored from a backup)

UP_KINDS = (RIDES, STATUS, SUNCTR_UP)
DOWN_KINDS = (ACK, TIME, DELTA, WHITELIST, SUNCTR_DOWN, RESEND)
KIND_NAMES = {
    RIDES: "rides",
    STATUS: "status",
    SUNCTR_UP: "sunctr_up",
    ACK: "ack",
    TIME: "time",
    DELTA: "delta",
    WHITELIST: "whitelist",
    SUNCTR_DOWN: "sunctr_down",
    RESEND: "resend",
}
KINDS_BY_NAME = {v: k for k, v in KIND_NAMES.items()}

UP = "up"
DOWN = "down"

_HDR = struct.Struct(">4sBBHIIQ")  # magic version kind reserved reader building counter
HEADER_LEN = _HDR.size  # 24
assert HEADER_LEN == 24

MAX_RIDES = 32  # rides per RIDES message (umqtt on an ESP32)
MAX_BLOB = 4096  # DELTA blob / WHITELIST chunk data
MIN_DELTA = 24 + MAC_LEN  # the smallest LCWD (no operations)
MIN_WHITELIST = 32 + MAC_LEN  # the smallest LCWL (no cards)
_STATUS = struct.Struct(">IIIIIBBHI")  # uptime heap backlog wl_version unrecorded last_error flags boot time
STATUS_LEN = _STATUS.size  # 28: a reader from before the seqs below
_STATUS_SEQS = struct.Struct(">II")  # acked_seq oldest_seq, after the 28 bytes
STATUS_SEQS_LEN = STATUS_LEN + _STATUS_SEQS.size  # 36
_STATUS_DEVICE = struct.Struct(">bBBBI")  # rssi fw_major fw_minor fw_patch wl_capacity, after the 36 bytes
STATUS_DEVICE_LEN = STATUS_SEQS_LEN + _STATUS_DEVICE.size  # 44
_WLCHUNK = struct.Struct(">III")  # version total offset
WLCHUNK_HEADER_LEN = _WLCHUNK.size  # 12
SUN_ENTRY_LEN = 11  # SUNCTR entry: card_id u64, counter u24 (the NTAG SDMReadCtr)
MAX_SUN = 64  # entries per SUNCTR message
SUN_MAX_COUNTER = 0xFFFFFF
MAX_BODY = WLCHUNK_HEADER_LEN + MAX_BLOB
MIN_MSG = HEADER_LEN + MAC_LEN  # 40: an empty body
MAX_MSG = HEADER_LEN + MAX_BODY + MAC_LEN  # 4148
MAX_UP_MSG = HEADER_LEN + MAX_RIDES * RIDE_LEN + MAC_LEN  # 1064

# STATUS flags
ST_CLOCK_SYNCED = 0x01  # the reader's clock was set by a TIME since this boot
ST_LOG_FULL = 0x02  # the ride log is full (rides granted free and unrecorded)
ST_FLAGS = ST_CLOCK_SYNCED | ST_LOG_FULL

ENC_LABEL = b"liftcard uplink enc"
MAC_LABEL = b"liftcard uplink mac"

# FormatError reasons used here (stable strings: the vectors name them).
R_SIZE = "size"  # message or body shorter / longer than the format says
R_MAGIC = "magic"
R_VERSION = "version"  # unsupported header version
R_KIND = "kind"  # unknown kind, or a kind of the other direction
R_READER = "reader"  # for another reader
R_BUILDING = "building"  # for another building
R_MAC = "mac"  # MAC does not verify (forged, corrupted, wrong key)
R_REPLAY = "replay"  # counter not greater than the last one accepted
R_FIELD = "field"  # a field out of range (reserved bits, ride CRC, chunk bounds)

REASONS = (R_SIZE, R_MAGIC, R_VERSION, R_KIND, R_READER, R_BUILDING, R_MAC, R_REPLAY, R_FIELD)


# ---------------------------------------------------------------------------
# Keys and crypto
# ---------------------------------------------------------------------------


class LinkKeys:
    """The two link keys derived from a reader key K:
    enc = HMAC-SHA256(K, "liftcard uplink enc")[:16] (AES-128),
    mac = HMAC-SHA256(K, "liftcard uplink mac") (32 bytes, HMAC-SHA256 key).
    Derive once per reader and reuse; the repr shows nothing secret."""

    __slots__ = ("enc", "mac")

    def __init__(self, reader_key: bytes):
        if not isinstance(reader_key, (bytes, bytearray, memoryview)) or len(reader_key) != KEY_LEN:
            raise ValueError("reader key must be %d bytes" % KEY_LEN)
        k = bytes(reader_key)
        self.enc = hmac.new(k, ENC_LABEL, hashlib.sha256).digest()[:16]
        self.mac = hmac.new(k, MAC_LABEL, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "LinkKeys(<secret>)"


def _keys(key) -> LinkKeys:
    return key if isinstance(key, LinkKeys) else LinkKeys(key)


def nonce(counter: int, kind: int) -> bytes:
    """The initial CTR block: counter (u64) | kind (u8) | 7 zero bytes."""
    return counter.to_bytes(8, "big") + bytes((kind,)) + bytes(7)


def _ctr(keys: LinkKeys, counter: int, kind: int, data: bytes) -> bytes:
    if not data:
        return b""
    c = Cipher(algorithms.AES(keys.enc), modes.CTR(nonce(counter, kind))).encryptor()
    return c.update(data) + c.finalize()


def _mac(keys: LinkKeys, data: bytes) -> bytes:
    return hmac.new(keys.mac, data, hashlib.sha256).digest()[:MAC_LEN]


# ---------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderStatus:
    """STATUS body: the reader's heartbeat (44 bytes; 36 from firmware before
    rssi, fw_version and wl_capacity; 28 from firmware before acked_seq and
    oldest_seq)."""

    uptime: int  # u32 seconds since this boot
    free_heap: int  # u32 bytes
    backlog: int  # u32 ride records not yet acknowledged
    wl_version: int  # u32 whitelist version held (0: none)
    unrecorded: int = 0  # u32 rides granted free and unrecorded while the log was full
    last_error: int = 0  # u8 last error code (0: none)
    flags: int = 0  # u8 ST_* bits
    boot: int = 0  # u16 boot counter (low 16 bits)
    time: int = 0  # u32 the reader's clock, liftcard epoch seconds (its best guess unless CLOCK_SYNCED)
    # u32 the reader's ack mark (every record up to it acknowledged by a
    # gateway) and u32 the lowest seq its log still holds (acked_seq + backlog
    # + 1 when it holds none): both or neither (None: older firmware, 28 bytes).
    acked_seq: int | None = None
    oldest_seq: int | None = None
    # i8 the Wi-Fi signal in dBm (0: unknown), (u8, u8, u8) the firmware's
    # version (0.0.0: unknown) and u32 how many cards its whitelist can hold
    # (its vfs size under liftcard_protocol.capacity's rule; 0: unknown): all
    # three or none (None: older firmware), and only after the seqs.
    rssi: int | None = None
    fw_version: tuple | None = None
    wl_capacity: int | None = None

    def __post_init__(self):
        for name, hi in (
            ("uptime", U32),
            ("free_heap", U32),
            ("backlog", U32),
            ("wl_version", U32),
            ("unrecorded", U32),
            ("last_error", U8),
            ("flags", U8),
            ("boot", U16),
            ("time", U32),
        ):
            object.__setattr__(self, name, int(need_uint(name, getattr(self, name), hi)))
        if self.flags & ~ST_FLAGS:
            raise FormatError(R_FIELD, "status flags has undefined bits set")
        if (self.acked_seq is None) != (self.oldest_seq is None):
            raise FormatError(R_FIELD, "status acked_seq and oldest_seq go together")
        if self.acked_seq is not None:
            for name in ("acked_seq", "oldest_seq"):
                object.__setattr__(self, name, int(need_uint(name, getattr(self, name), U32)))
        device = (self.rssi, self.fw_version, self.wl_capacity)
        if device != (None, None, None):
            if None in device or self.acked_seq is None:
                raise FormatError(R_FIELD, "status rssi, fw_version and wl_capacity go together, after the seqs")
            if isinstance(self.rssi, bool) or not isinstance(self.rssi, int) or not -128 <= self.rssi <= 127:
                raise FormatError(R_FIELD, "status rssi must be -128..127 dBm")
            fw = tuple(self.fw_version)
            if len(fw) != 3:
                raise FormatError(R_FIELD, "status fw_version must be (major, minor, patch)")
            object.__setattr__(self, "fw_version", tuple(int(need_uint("fw_version", x, U8)) for x in fw))
            object.__setattr__(self, "wl_capacity", int(need_uint("wl_capacity", self.wl_capacity, U32)))

    @property
    def firmware(self) -> str | None:
        """The firmware's version as "major.minor.patch"; None when not carried or 0.0.0."""
        if not self.fw_version or not any(self.fw_version):
            return None
        return "%d.%d.%d" % self.fw_version

    def pack(self) -> bytes:
        """28 bytes, 36 with acked_seq and oldest_seq, 44 with rssi, fw_version and wl_capacity too."""
        base = _STATUS.pack(
            self.uptime,
            self.free_heap,
            self.backlog,
            self.wl_version,
            self.unrecorded,
            self.last_error,
            self.flags,
            self.boot,
            self.time,
        )
        if self.acked_seq is None:
            return base
        base += _STATUS_SEQS.pack(self.acked_seq, self.oldest_seq)
        if self.rssi is None:
            return base
        return base + _STATUS_DEVICE.pack(self.rssi, *self.fw_version, self.wl_capacity)

    @classmethod
    def unpack(cls, b: bytes) -> "ReaderStatus":
        # 28 bytes: a reader whose firmware predates the seqs (a fleet is
        # updated reader by reader); such a reader is never asked to resend.
        # 36 bytes: one whose firmware predates rssi, fw_version and
        # wl_capacity (its list is sent whatever its size, as before).
        if len(b) not in (STATUS_LEN, STATUS_SEQS_LEN, STATUS_DEVICE_LEN):
            raise FormatError(
                R_SIZE,
                "status body must be %d, %d or %d bytes, got %d"
                % (STATUS_LEN, STATUS_SEQS_LEN, STATUS_DEVICE_LEN, len(b)),
            )
        seqs = _STATUS_SEQS.unpack_from(b, STATUS_LEN) if len(b) >= STATUS_SEQS_LEN else ()
        device = ()
        if len(b) == STATUS_DEVICE_LEN:
            rssi, major, minor, patch, cap = _STATUS_DEVICE.unpack_from(b, STATUS_SEQS_LEN)
            device = (rssi, (major, minor, patch), cap)
        return cls(*_STATUS.unpack_from(b), *seqs, *device)

    def to_fields(self) -> dict:
        names = ["uptime", "free_heap", "backlog", "wl_version", "unrecorded", "last_error", "flags", "boot", "time"]
        if self.acked_seq is not None:
            names += ["acked_seq", "oldest_seq"]
        out = {k: getattr(self, k) for k in names}
        if self.rssi is not None:
            out.update(rssi=self.rssi, fw_version=list(self.fw_version), wl_capacity=self.wl_capacity)
        return out


@dataclass(frozen=True, repr=False)
class WhitelistChunk:
    """WHITELIST body: bytes [offset, offset+len(data)) of an LCWL file of
    `total` bytes and version `version`. The reader writes the chunks to a file
    and checks the assembled LCWL (its own MAC) as usual."""

    version: int
    total: int
    offset: int
    data: bytes

    def __repr__(self) -> str:
        return "WhitelistChunk(version=%d, total=%d, offset=%d, len=%d)" % (
            self.version,
            self.total,
            self.offset,
            len(self.data),
        )


@dataclass(frozen=True, repr=False)
class Message:
    """A verified, decrypted message. Exactly one body field is set, by kind:
    rides (RIDES), status (STATUS), seq (ACK: every record up to seq is
    acknowledged), epoch_s (TIME), blob (DELTA: an LCWD), chunk (WHITELIST),
    sun (SUNCTR up or down: ((card_id, counter), ...) in message order),
    from_seq (RESEND: send again every ride still held from this seq on).
    The repr never shows card ids or blob content."""

    kind: int
    reader_id: int
    building_id: int
    counter: int
    rides: tuple = ()
    status: ReaderStatus | None = None
    seq: int | None = None
    epoch_s: int | None = None
    blob: bytes | None = None
    chunk: WhitelistChunk | None = None
    sun: tuple = ()
    from_seq: int | None = None

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def __repr__(self) -> str:
        detail = ""
        if self.kind == RIDES:
            detail = ", rides=%d" % len(self.rides)
            if self.rides:
                detail += ", seq=%d..%d" % (self.rides[0].seq, self.rides[-1].seq)
        elif self.kind == STATUS:
            detail = ", %r" % (self.status,)
        elif self.kind == ACK:
            detail = ", seq=%d" % self.seq
        elif self.kind == TIME:
            detail = ", epoch_s=%d" % self.epoch_s
        elif self.kind == DELTA:
            detail = ", blob=%d bytes" % len(self.blob)
        elif self.kind == WHITELIST:
            detail = ", %r" % (self.chunk,)
        elif self.kind in (SUNCTR_UP, SUNCTR_DOWN):
            detail = ", entries=%d" % len(self.sun)
        elif self.kind == RESEND:
            detail = ", from_seq=%d" % self.from_seq
        return "Message(%s, reader=%d, building=%d, counter=%d%s)" % (
            KIND_NAMES.get(self.kind, "?"),
            self.reader_id,
            self.building_id,
            self.counter,
            detail,
        )


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


def seal(
    key,
    kind: int,
    reader_id: int,
    building_id: int,
    counter: int,
    body: bytes,
    *,
    magic: bytes = MAGIC,
    version: int = VERSION,
    reserved: int = 0,
) -> bytes:
    """One message around a plain body: encrypt, then MAC. Checks only the
    header field ranges (the keyword overrides exist to build invalid test
    vectors with a valid MAC)."""
    keys = _keys(key)
    need_uint("kind", kind, U8)
    need_uint("reader_id", reader_id, U32)
    need_uint("building_id", building_id, U32)
    need_uint("counter", counter, U64)
    hdr = _HDR.pack(magic, version, kind, reserved, reader_id, building_id, counter)
    data = hdr + _ctr(keys, counter, kind, bytes(body))
    return data + _mac(keys, data)


def counter_of(boot: int, msgno: int) -> int:
    """The sender's counter: (boot count << 32) | message number in this boot."""
    return (need_uint("boot", boot, U32) << 32) | need_uint("msgno", msgno, U32)


def _ride_bytes(r) -> bytes:
    if isinstance(r, RideRecord):
        return r.pack()
    b = bytes(r)
    if len(b) != RIDE_LEN:
        raise FormatError(R_SIZE, "a ride record is %d bytes, got %d" % (RIDE_LEN, len(b)))
    return b


def build_rides(key, reader_id: int, building_id: int, counter: int, records: Iterable) -> bytes:
    """RIDES (up): 0..32 ride records (RideRecord or packed 32-byte records)."""
    recs = [_ride_bytes(r) for r in records]
    if len(recs) > MAX_RIDES:
        raise FormatError(R_SIZE, "at most %d rides per message, got %d" % (MAX_RIDES, len(recs)))
    return seal(key, RIDES, reader_id, building_id, counter, b"".join(recs))


def build_status(key, reader_id: int, building_id: int, counter: int, status: ReaderStatus) -> bytes:
    """STATUS (up): the reader's heartbeat."""
    return seal(key, STATUS, reader_id, building_id, counter, status.pack())


def build_ack(key, reader_id: int, building_id: int, counter: int, seq: int) -> bytes:
    """ACK (down): every ride record with seq <= `seq` is committed by the gateway."""
    return seal(key, ACK, reader_id, building_id, counter, need_uint("seq", seq, U32).to_bytes(4, "big"))


def build_time(key, reader_id: int, building_id: int, counter: int, epoch_s: int) -> bytes:
    """TIME (down): the gateway's clock, u32 seconds since the liftcard epoch."""
    return seal(key, TIME, reader_id, building_id, counter, need_uint("epoch_s", epoch_s, U32).to_bytes(4, "big"))


def build_resend(key, reader_id: int, building_id: int, counter: int, from_seq: int) -> bytes:
    """RESEND (down): send again, in order, every ride record still held with
    seq >= from_seq, acknowledged or not (the gateway lost them: a database
    restored from a backup). Records the reader no longer holds are not sent."""
    return seal(key, RESEND, reader_id, building_id, counter, need_uint("from_seq", from_seq, U32).to_bytes(4, "big"))


def build_delta(key, reader_id: int, building_id: int, counter: int, blob: bytes) -> bytes:
    """DELTA (down): one LCWD whitelist delta (docs/formats.md), 40..4096 bytes."""
    blob = bytes(blob)
    if not MIN_DELTA <= len(blob) <= MAX_BLOB:
        raise FormatError(R_SIZE, "a delta blob is %d..%d bytes, got %d" % (MIN_DELTA, MAX_BLOB, len(blob)))
    return seal(key, DELTA, reader_id, building_id, counter, blob)


def build_whitelist_chunk(
    key, reader_id: int, building_id: int, counter: int, version: int, total: int, offset: int, data: bytes
) -> bytes:
    """WHITELIST (down): one chunk (1..4096 bytes) of an LCWL file of `total` bytes."""
    data = bytes(data)
    _check_chunk(
        need_uint("version", version, U32), need_uint("total", total, U32), need_uint("offset", offset, U32), len(data)
    )
    return seal(key, WHITELIST, reader_id, building_id, counter, _WLCHUNK.pack(version, total, offset) + data)


def sun_body(entries) -> bytes:
    """A SUNCTR body from 1..64 (card_id, counter) pairs (counter u24)."""
    entries = list(entries)
    if not 1 <= len(entries) <= MAX_SUN:
        raise FormatError(R_SIZE, "a SUNCTR message carries 1..%d entries, got %d" % (MAX_SUN, len(entries)))
    out = bytearray()
    for card_id, counter in entries:
        out += need_uint("card_id", card_id, U64).to_bytes(8, "big")
        out += need_uint("counter", counter, SUN_MAX_COUNTER).to_bytes(3, "big")
    return bytes(out)


def build_sunctr(key, reader_id: int, building_id: int, counter: int, entries, down: bool = False) -> bytes:
    """SUNCTR: NTAG 424 SUN counters (card_id u64, counter u24), 1..64 entries;
    up (0x03) from a reader, or down (0x85) from the gateway."""
    return seal(key, SUNCTR_DOWN if down else SUNCTR_UP, reader_id, building_id, counter, sun_body(entries))


def sun_batches(entries, size: int = MAX_SUN):
    """Entries cut into lists of at most `size` (one SUNCTR message each)."""
    entries = list(entries)
    return [entries[i : i + size] for i in range(0, len(entries), size)]


def whitelist_chunks(blob: bytes, size: int = MAX_BLOB):
    """(offset, data) pieces of an LCWL file, each at most `size` bytes, in order."""
    if not 1 <= size <= MAX_BLOB:
        raise ValueError("chunk size must be 1..%d" % MAX_BLOB)
    blob = bytes(blob)
    return [(off, blob[off : off + size]) for off in range(0, len(blob), size)]


def _check_chunk(version: int, total: int, offset: int, n: int) -> None:
    if not 1 <= n <= MAX_BLOB:
        raise FormatError(R_SIZE, "a whitelist chunk carries 1..%d bytes, got %d" % (MAX_BLOB, n))
    if total < MIN_WHITELIST or offset + n > total:
        raise FormatError(R_FIELD, "whitelist chunk [%d, %d) outside a file of %d bytes" % (offset, offset + n, total))


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def parse_header(data: bytes) -> tuple:
    """(kind, reader_id, building_id, counter) of a message, unverified: for
    routing and logging only. Checks size, magic and version."""
    data = bytes(data)
    _check_outer(data)
    _, _, kind, _, reader, building, counter = _HDR.unpack_from(data)
    return kind, reader, building, counter


def _check_outer(data: bytes) -> None:
    if len(data) < MIN_MSG:
        raise FormatError(R_SIZE, "message too short: %d bytes" % len(data))
    if len(data) > MAX_MSG:
        raise FormatError(R_SIZE, "message too long: %d bytes (at most %d)" % (len(data), MAX_MSG))
    if data[:4] != MAGIC:
        raise FormatError(R_MAGIC, "not a liftcard link message (bad magic)")
    if data[4] != VERSION:
        raise FormatError(R_VERSION, "unsupported link message version %d" % data[4])


def parse(
    key,
    data: bytes,
    reader_id: int | None = None,
    building_id: int | None = None,
    direction: str | None = None,
    last_counter: int | None = None,
) -> Message:
    """Verifies, decrypts and decodes one message.

    key: the reader's 32-byte key or its LinkKeys. reader_id / building_id: the
    expected ones (None: not checked). direction: UP (the gateway receiving) or
    DOWN (a reader receiving) refuses the other direction's kinds; None accepts
    both. last_counter: the last counter accepted from this sender in this
    direction (None or 0: none yet; a counter must be greater).

    Checks, in order: size (40..4148 bytes), magic, version, MAC, reserved
    field, kind, reader, building, replay, then the body of the kind (size,
    fields). Nothing here remembers the counter: the caller records it once the
    message has been acted on (see ReplayGuard)."""
    if direction not in (None, UP, DOWN):
        raise ValueError("direction must be 'up', 'down' or None")
    keys = _keys(key)
    data = bytes(data)
    _check_outer(data)
    end = len(data) - MAC_LEN
    if not hmac.compare_digest(_mac(keys, data[:end]), data[end:]):
        raise FormatError(R_MAC, "link message MAC does not verify")
    _, _, kind, reserved, reader, building, counter = _HDR.unpack_from(data)
    if reserved:
        raise FormatError(R_FIELD, "link message reserved header field is not zero")
    if kind not in KIND_NAMES:
        raise FormatError(R_KIND, "unknown link message kind 0x%02x" % kind)
    if direction == UP and kind not in UP_KINDS or direction == DOWN and kind not in DOWN_KINDS:
        raise FormatError(R_KIND, "a %s message does not travel %s" % (KIND_NAMES[kind], direction))
    if reader_id is not None and reader != reader_id:
        raise FormatError(R_READER, "message is for reader %d, not %d" % (reader, reader_id))
    if building_id is not None and building != building_id:
        raise FormatError(R_BUILDING, "message is for building %d, not %d" % (building, building_id))
    if last_counter is not None and counter <= last_counter:
        raise FormatError(R_REPLAY, "counter %d is not greater than the last accepted %d" % (counter, last_counter))
    body = _ctr(keys, counter, kind, data[HEADER_LEN:end])
    m = dict(kind=kind, reader_id=reader, building_id=building, counter=counter)
    if kind == RIDES:
        m["rides"] = _parse_rides(body)
    elif kind == STATUS:
        m["status"] = ReaderStatus.unpack(body)
    elif kind in (ACK, TIME, RESEND):
        if len(body) != 4:
            raise FormatError(R_SIZE, "%s body must be 4 bytes, got %d" % (KIND_NAMES[kind], len(body)))
        m[{ACK: "seq", TIME: "epoch_s", RESEND: "from_seq"}[kind]] = int.from_bytes(body, "big")
    elif kind == DELTA:
        if not MIN_DELTA <= len(body) <= MAX_BLOB:
            raise FormatError(R_SIZE, "delta body must be %d..%d bytes, got %d" % (MIN_DELTA, MAX_BLOB, len(body)))
        m["blob"] = body
    elif kind in (SUNCTR_UP, SUNCTR_DOWN):
        m["sun"] = _parse_sun(body)
    else:  # WHITELIST
        if len(body) <= WLCHUNK_HEADER_LEN:
            raise FormatError(R_SIZE, "whitelist chunk body too short: %d bytes" % len(body))
        version, total, offset = _WLCHUNK.unpack_from(body)
        _check_chunk(version, total, offset, len(body) - WLCHUNK_HEADER_LEN)
        m["chunk"] = WhitelistChunk(version, total, offset, body[WLCHUNK_HEADER_LEN:])
    return Message(**m)


def _parse_sun(body: bytes) -> tuple:
    if len(body) % SUN_ENTRY_LEN:
        raise FormatError(R_SIZE, "SUNCTR body is %d bytes, not a whole number of entries" % len(body))
    n = len(body) // SUN_ENTRY_LEN
    if not 1 <= n <= MAX_SUN:
        raise FormatError(R_SIZE, "a SUNCTR message carries 1..%d entries, got %d" % (MAX_SUN, n))
    return tuple(
        (int.from_bytes(body[p : p + 8], "big"), int.from_bytes(body[p + 8 : p + 11], "big"))
        for p in range(0, len(body), SUN_ENTRY_LEN)
    )


def _parse_rides(body: bytes) -> tuple:
    if len(body) % RIDE_LEN:
        raise FormatError(R_SIZE, "rides body is %d bytes, not a whole number of records" % len(body))
    n = len(body) // RIDE_LEN
    if n > MAX_RIDES:
        raise FormatError(R_SIZE, "at most %d rides per message, got %d" % (MAX_RIDES, n))
    out = []
    for i in range(n):
        rec = body[i * RIDE_LEN : (i + 1) * RIDE_LEN]
        # Own checks rather than RideRecord.unpack's errors: the message names
        # the position, never the record's content.
        if rec == EMPTY_SLOT or crc16(rec[:30]) != int.from_bytes(rec[30:32], "big"):
            raise FormatError(R_FIELD, "ride %d of %d in the batch is not a valid record (CRC)" % (i + 1, n))
        out.append(RideRecord.unpack(rec))
    return tuple(out)


class ReplayGuard:
    """The receiver's replay state: the last accepted counter per sender (per
    reader id, for one direction). check() refuses a counter that is not
    greater; accept() records it once the message has been acted on (the
    gateway: after its SQLite commit; persist state() with it, so a restart
    does not reopen the window)."""

    def __init__(self, state: Mapping[int, int] | None = None):
        self._last = {int(k): int(v) for k, v in (state or {}).items()}

    def last(self, reader_id: int) -> int:
        return self._last.get(reader_id, 0)

    def check(self, reader_id: int, counter: int) -> None:
        last = self.last(reader_id)
        if counter <= last:
            raise FormatError(
                R_REPLAY, "reader %d counter %d is not greater than the last accepted %d" % (reader_id, counter, last)
            )

    def accept(self, reader_id: int, counter: int) -> None:
        self.check(reader_id, counter)
        self._last[reader_id] = counter

    def open(
        self, key, data: bytes, reader_id: int, building_id: int | None = None, direction: str | None = UP
    ) -> Message:
        """parse() with this guard's last counter for the reader (does not accept)."""
        return parse(key, data, reader_id, building_id, direction, self.last(reader_id))

    def state(self) -> dict:
        return dict(self._last)

    def __repr__(self) -> str:
        return "ReplayGuard(%d readers)" % len(self._last)
