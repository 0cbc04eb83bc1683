"""The harvest file (`LCHV`): the rides a reader's log still holds, read out
over USB (or from a dead reader's flash image) by `liftcard-provision harvest`
and imported by `liftcard-gateway import` (docs/formats.md, "Harvest file").

Also the ride log partition's rules for a host (scan_log_image): the same
reading as firmware/liftcard/ridelog.py's boot scan, in CPython, without
writing anything, so a flash image is read as the reader would read it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .errors import R_CRC, R_FIELD, R_FORMAT, R_HEADER, R_MAGIC, R_ORDER, R_SIZE, FormatError
from .fields import ID_MAX, U32, need_uint
from .ride import ACK_KIND, ACK_LEN, RIDE_LEN, RideRecord, is_empty_slot, unpack_ack

MAGIC = b"LCHV"
VERSION = 1
SOURCE_LIVE = 1  # read from a running reader over its USB REPL
SOURCE_IMAGE = 2  # read from a raw image of the ridelog partition (a dead reader's flash)
SOURCES = (SOURCE_LIVE, SOURCE_IMAGE)
_HEAD = struct.Struct(">4sBBHIIIII")  # magic version source 0 reader building acked count harvested
HEADER_LEN = _HEAD.size  # 28
DIGEST_LEN = 32  # SHA-256 of everything before it
MAX_RECORDS = 1 << 20  # far above any partition (a 16 MB log holds < 520,000)

# The ride log partition (docs/formats.md, "Ride log partition").
SECTOR = 4096
JOURNAL_SECTORS = 2
SLOTS = SECTOR // RIDE_LEN


@dataclass(frozen=True)
class Harvest:
    reader_id: int
    building_id: int
    acked: int  # the log's acknowledged mark when harvested (its ack journal)
    harvested: int  # u32 liftcard-epoch seconds (the technician's clock)
    records: tuple  # RideRecord, strictly increasing seq
    source: int = SOURCE_LIVE

    def __post_init__(self):
        for name in ("reader_id", "building_id"):
            v = need_uint(name, getattr(self, name), ID_MAX)
            if v < 1:
                raise ValueError("%s must be 1..%d" % (name, ID_MAX))
        need_uint("acked", self.acked, U32)
        need_uint("harvested", self.harvested, U32)
        if self.source not in SOURCES:
            raise ValueError("source must be one of %s" % (SOURCES,))
        recs = tuple(self.records)
        if len(recs) > MAX_RECORDS:
            raise ValueError("at most %d records" % MAX_RECORDS)
        for a, b in zip(recs, recs[1:]):
            if b.seq <= a.seq:
                raise ValueError("records must have strictly increasing seq")
        object.__setattr__(self, "records", recs)

    @property
    def unacked(self) -> tuple:
        """The records after the acked mark: what no gateway confirmed holding."""
        return tuple(r for r in self.records if r.seq > self.acked)


def pack_harvest(h: Harvest) -> bytes:
    body = _HEAD.pack(
        MAGIC, VERSION, h.source, 0, h.reader_id, h.building_id, h.acked, len(h.records), h.harvested
    ) + b"".join(r.pack() for r in h.records)
    return body + hashlib.sha256(body).digest()


def unpack_harvest(data: bytes) -> Harvest:
    """The Harvest in `data`, or FormatError: the digest is checked first (a
    corrupted file says so, whatever field the damage hit), then the header,
    then every record's CRC and the seq order."""
    data = bytes(data)
    if len(data) < HEADER_LEN + DIGEST_LEN:
        raise FormatError(R_SIZE, "harvest file too short: %d bytes" % len(data))
    if data[:4] != MAGIC:
        raise FormatError(R_MAGIC, "not a harvest file (magic %r, want %r)" % (data[:4], MAGIC))
    body, digest = data[:-DIGEST_LEN], data[-DIGEST_LEN:]
    if hashlib.sha256(body).digest() != digest:
        raise FormatError(R_CRC, "harvest file SHA-256 does not match (corrupted or truncated)")
    _, version, source, zero, reader_id, building_id, acked, count, harvested = _HEAD.unpack_from(body, 0)
    if version != VERSION:
        raise FormatError(R_FORMAT, "harvest file version %d is not supported (want %d)" % (version, VERSION))
    if zero:
        raise FormatError(R_HEADER, "harvest header reserved field is not zero")
    if source not in SOURCES:
        raise FormatError(R_FIELD, "harvest source %d is unknown" % source)
    if not 1 <= reader_id <= ID_MAX or not 1 <= building_id <= ID_MAX:
        raise FormatError(R_FIELD, "reader or building id out of range")
    if len(body) != HEADER_LEN + count * RIDE_LEN:
        raise FormatError(
            R_SIZE, "harvest says %d records but holds %d bytes of them" % (count, len(body) - HEADER_LEN)
        )
    recs = []
    for i in range(count):
        off = HEADER_LEN + i * RIDE_LEN
        try:
            r = RideRecord.unpack(body[off : off + RIDE_LEN])
        except FormatError as e:
            raise FormatError(e.reason, "harvest record %d: %s" % (i, e)) from None
        if recs and r.seq <= recs[-1].seq:
            raise FormatError(R_ORDER, "harvest record %d: seq %d not above %d" % (i, r.seq, recs[-1].seq))
        recs.append(r)
    return Harvest(reader_id, building_id, acked, harvested, tuple(recs), source)


@dataclass(frozen=True)
class LogScan:
    acked: int  # the largest valid ack journal value (0: none)
    records: tuple  # every valid ride record of the ring, in seq order
    bad_slots: int  # programmed slots whose CRC fails (torn by a power cut, or damaged)
    duplicate_seqs: int  # valid records whose seq another valid record also had (kept: the first)


def scan_log_image(image: bytes) -> LogScan:
    """Read a ridelog partition image as the firmware's boot scan does, without
    writing: the ack journal's largest valid value, and every slot of the ring
    that is programmed (not all 0xFF) and passes its CRC16. A slot that fails
    its CRC (a tap torn by a power cut, a damaged cell) is counted, not kept.
    The image must be whole sectors, at least 2 journal + 4 ring sectors."""
    image = bytes(image)
    if len(image) % SECTOR or len(image) // SECTOR < JOURNAL_SECTORS + 4:
        raise FormatError(R_SIZE, "a ridelog image is whole 4096-byte sectors, at least 6 (got %d bytes)" % len(image))
    acked = 0
    for j in range(JOURNAL_SECTORS):
        base = j * SECTOR
        for k in range(SECTOR // ACK_LEN):
            ent = image[base + k * ACK_LEN : base + (k + 1) * ACK_LEN]
            if ent == b"\xff" * ACK_LEN:
                break  # entries are appended in order: the first erased one ends the sector
            try:
                kind, value = unpack_ack(ent)
            except FormatError:
                continue
            if kind == ACK_KIND and value > acked:
                acked = value
    by_seq: dict[int, RideRecord] = {}
    bad = dup = 0
    for off in range(JOURNAL_SECTORS * SECTOR, len(image), RIDE_LEN):
        slot = image[off : off + RIDE_LEN]
        if is_empty_slot(slot):
            continue
        try:
            r = RideRecord.unpack(slot)
        except FormatError:
            bad += 1
            continue
        if r.seq in by_seq:
            dup += 1
            continue
        by_seq[r.seq] = r
    return LogScan(acked, tuple(by_seq[s] for s in sorted(by_seq)), bad, dup)
