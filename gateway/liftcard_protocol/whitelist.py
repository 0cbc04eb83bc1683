"""The whitelist file (LCWL): a reader's full card list, sorted by card id and
MAC'd with its key (docs/formats.md, "Whitelist file")."""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .card import CardRecord, check_sorted
from .errors import (
    R_BUILDING,
    R_FORMAT,
    R_HEADER,
    R_MAC,
    R_MAGIC,
    R_ORDER,
    R_READER,
    R_RECORD_SIZE,
    R_SIZE,
    R_STALE,
    FormatError,
)
from .fields import CARD_LEN, MAC_LEN, U32, card_id_hex, mac16, need_key, need_uint


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


def seal_whitelist(
    key: bytes,
    reader_id: int,
    building_id: int,
    version: int,
    records: Sequence[bytes],
    issued: int = 0,
    *,
    magic: bytes = WL_MAGIC,
    fmt: int = WL_FORMAT,
    record_size: int = CARD_LEN,
    flags: int = 0,
    reserved: int = 0,
    count: int | None = None,
) -> bytes:
    """Raw writer: no checks on the records, every header field settable. The
    test vectors use it to make files that are wrong in one way but carry a
    valid MAC; everything else uses build_whitelist."""
    n = len(records) if count is None else count
    hdr = _WL_HDR.pack(magic, fmt, record_size, flags, reader_id, building_id, version, n, issued, reserved)
    body = hdr + b"".join(records)
    return body + mac16(key, body)


def build_whitelist(
    key: bytes, reader_id: int, building_id: int, version: int, cards: Iterable[CardRecord], issued: int = 0
) -> bytes:
    """A complete LCWL file: cards sorted by id; duplicate ids are refused."""
    key = need_key(key)
    for name, v in (("reader_id", reader_id), ("building_id", building_id), ("version", version), ("issued", issued)):
        need_uint(name, v, U32)
    recs = sorted(cards, key=lambda c: c.card_id)
    check_sorted([c.card_id for c in recs], "whitelist")
    if len(recs) > U32:
        raise FormatError(R_SIZE, "whitelist has too many cards")
    return seal_whitelist(key, reader_id, building_id, version, [c.pack() for c in recs], issued)


def parse_whitelist(
    key: bytes,
    data: bytes,
    reader_id: int | None = None,
    building_id: int | None = None,
    held_version: int | None = None,
) -> Whitelist:
    """Checks an LCWL file in full and returns it.

    reader_id / building_id: the reader's own (None: not checked). held_version:
    the version the reader holds (None: none held); the file must be newer.
    Checks run in this order: size, magic, format, record size, reserved header
    fields, size against count, reader, building, MAC, record order and fields,
    version."""
    key = need_key(key)
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
