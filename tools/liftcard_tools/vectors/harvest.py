"""Vectors for the harvest file (LCHV) and for reading a ridelog partition image."""

from __future__ import annotations

import hashlib

from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.harvest import (
    HEADER_LEN,
    JOURNAL_SECTORS,
    SECTOR,
    SOURCE_IMAGE,
    SOURCE_LIVE,
    Harvest,
    pack_harvest,
    scan_log_image,
)
from liftcard_protocol.ride import RideRecord, pack_ack

from .common import BUILDING_ID, ID_HIGH, ID_MAX, READER_ID, flip, local_epoch


def _rides(first: int, n: int, t: int) -> list:
    return [
        RideRecord(s, t + 9 * (s - first), 30 + s, ID_MAX if s % 2 else ID_HIGH, 101, 5, 40, Result.GRANTED, 0, 2)
        for s in range(first, first + n)
    ]


def _reseal(b) -> str:
    """The bytes (or hex) with the trailing SHA-256 recomputed (a damage the digest cannot see)."""
    body = (bytes.fromhex(b) if isinstance(b, str) else b)[:-32]
    return (body + hashlib.sha256(body).digest()).hex()


def _image_case(t: int) -> dict:
    """A 6-sector partition: two acks in the journal (and one torn), a full
    first ring sector wrapping into the next, a torn slot, a later sector."""
    img = bytearray(b"\xff" * (6 * SECTOR))
    img[0:8] = pack_ack(100)
    img[8:16] = pack_ack(130)
    img[16:24] = pack_ack(170)[:6] + b"\x00\x00"  # torn: its CRC fails
    rides = _rides(101, 128 + 5, t)
    base = JOURNAL_SECTORS * SECTOR
    for i, r in enumerate(rides[:128]):
        img[base + 32 * i : base + 32 * (i + 1)] = r.pack()
    for i, r in enumerate(rides[128:]):
        img[base + SECTOR + 32 * i : base + SECTOR + 32 * (i + 1)] = r.pack()
    torn = rides[-1].pack()[:16] + b"\xff" * 16
    img[base + SECTOR + 32 * 5 : base + SECTOR + 32 * 6] = torn
    scan = scan_log_image(bytes(img))
    slots = [
        {"offset": off, "hex": img[off : off + 32].hex()}
        for off in range(0, len(img), 32)
        if img[off : off + 32] != b"\xff" * 32
    ]
    return {
        "sectors": 6,
        "programmed": slots,
        "acked": scan.acked,
        "seqs": [r.seq for r in scan.records],
        "bad_slots": scan.bad_slots,
        "why": "journal: 100, 130 and a torn entry; ring: seq 101..233, a torn slot after 233",
    }


def gen_harvest():
    t = local_epoch(2026, 11, 29, 20, 0, 0)
    when = local_epoch(2026, 11, 30, 4, 50, 0)
    recs = _rides(41, 3, t) + [
        RideRecord(44, 17, 17, 0x0000000004A21B9C, 0, 0xFF, 0, Result.UNKNOWN_CARD, Flag.CLOCK_UNSYNCED, 3)
    ]
    valid = [
        Harvest(READER_ID, BUILDING_ID, 42, when, tuple(recs), SOURCE_LIVE),
        Harvest(READER_ID, BUILDING_ID, 0, when, (), SOURCE_IMAGE),
        Harvest(READER_ID, BUILDING_ID, 44, when, tuple(recs), SOURCE_IMAGE),
    ]
    good = pack_harvest(valid[0])
    rec0 = HEADER_LEN
    swapped = good[:rec0] + good[rec0 + 32 : rec0 + 64] + good[rec0 : rec0 + 32] + good[rec0 + 64 :]
    invalid = [
        {"hex": flip(good, len(good) - 1), "why": "SHA-256 last byte flipped", "reason": "crc"},
        {"hex": flip(good, rec0 + 25), "why": "a record's fee byte flipped (digest sees it first)", "reason": "crc"},
        {"hex": flip(good, 8), "why": "reader id flipped (digest sees it first)", "reason": "crc"},
        {"hex": good[:-33].hex(), "why": "truncated by one byte", "reason": "crc"},
        {"hex": good[:40].hex(), "why": "40 bytes (shorter than header + digest)", "reason": "size"},
        {"hex": "", "why": "empty", "reason": "size"},
        {"hex": "4c435756" + good[4:].hex(), "why": "magic LCWV", "reason": "magic"},
        {"hex": _reseal(flip(good, 4, 0x02)), "why": "version 3, resealed", "reason": "format"},
        {"hex": _reseal(flip(good, 7)), "why": "reserved field 1, resealed", "reason": "header"},
        {"hex": _reseal(flip(good, 5, 0x04)), "why": "source 5, resealed", "reason": "field"},
        {"hex": _reseal(flip(good, 23)), "why": "count 5 for 4 records, resealed", "reason": "size"},
        {"hex": _reseal(flip(good, rec0 + 25)), "why": "a record's CRC fails, resealed", "reason": "crc"},
        {"hex": _reseal(swapped), "why": "records out of seq order, resealed", "reason": "order"},
    ]
    return {
        "valid": [
            {
                "reader_id": h.reader_id,
                "building_id": h.building_id,
                "acked": h.acked,
                "harvested": h.harvested,
                "source": h.source,
                "records": [r.to_fields() for r in h.records],
                "hex": pack_harvest(h).hex(),
            }
            for h in valid
        ],
        "invalid": invalid,
        "image": [_image_case(t)],
    }
