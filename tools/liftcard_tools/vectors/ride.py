"""Vectors for the 32-byte ride record and the ack journal entry."""

from __future__ import annotations


from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.fields import NO_FLOOR
from liftcard_protocol.ride import EMPTY_SLOT, RideRecord
from .common import ID_BELOW_HIGH, ID_HIGH, ID_MAX, flip, local_epoch


def gen_ride_record():
    t = local_epoch(2026, 11, 10, 8, 0, 0)
    recs = [
        RideRecord(1, t, 12, ID_MAX, 101, 5, 40, Result.GRANTED, 0, 1),
        RideRecord(2, t + 9, 21, ID_MAX, 101, 5, 0, Result.GRANTED, Flag.DEBOUNCED, 1),
        RideRecord(3, 17, 17, ID_BELOW_HIGH, 0, NO_FLOOR, 0, Result.UNKNOWN_CARD, Flag.CLOCK_UNSYNCED, 2),
        RideRecord(
            4,
            t + 60,
            80,
            0x0000000004A21B9C,
            0xFFFFFF,
            3,
            7,
            Result.GRANTED,
            Flag.CLOCK_UNSYNCED | Flag.LEGACY_UID | Flag.CAPPED,
            0xFFFF,
        ),
        RideRecord(5, t + 61, 81, ID_HIGH, 102, 0, 0, Result.GRANTED, Flag.FREE_CLASS, 3),
        RideRecord(6, t + 62, 82, ID_HIGH, 102, NO_FLOOR, 0, Result.AUTH_FAILED, 0, 3),
        RideRecord(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        RideRecord(
            0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, ID_MAX, 0xFFFFFF, 0xFE, 0xFFFF, Result.LEGACY_DISABLED, 0x3F, 0xFFFF
        ),
    ]
    good = recs[0].pack()
    torn = good[:16] + b"\xff" * 16
    invalid = [
        {"hex": flip(good, 31), "why": "bad CRC (low CRC byte flipped)", "reason": "crc"},
        {"hex": flip(good, 25), "why": "fee byte flipped", "reason": "crc"},
        {"hex": torn.hex(), "why": "torn: first 16 bytes programmed, the rest still 0xFF", "reason": "crc"},
        {"hex": good[:31].hex(), "why": "31 bytes", "reason": "size"},
        {"hex": (good + b"\xff").hex(), "why": "33 bytes", "reason": "size"},
        {"hex": "", "why": "empty string", "reason": "size"},
    ]
    return {
        "valid": [{"fields": r.to_fields(), "hex": r.pack().hex()} for r in recs],
        "invalid": invalid,
        "empty": EMPTY_SLOT.hex(),
    }
