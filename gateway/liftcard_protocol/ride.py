"""The ride record (32 bytes) and the ack journal entry (8 bytes) of the
reader's ride log (docs/formats.md, "Ride record")."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Mapping

from .errors import R_CRC, R_EMPTY, R_FIELD, R_SIZE, FormatError
from .fields import U8, U16, U24, U32, U64, card_id_hex, crc16, need_uint


RIDE_LEN = 32
EMPTY_SLOT = b"\xff" * RIDE_LEN
_RIDE_HEAD = struct.Struct(">IIIQ")  # seq time uptime card_id      (bytes 0..19)
_RIDE_TAIL = struct.Struct(">BHBBH")  # floor fee result flags boot  (bytes 23..29)


@dataclass(frozen=True)
class RideRecord:
    seq: int  # u32, per reader, strictly increasing
    time: int  # u32 epoch seconds (reader's best guess when CLOCK_UNSYNCED)
    uptime: int  # u32 seconds since this boot
    card_id: int  # u64
    household: int  # u24, 0 when the card is unknown
    floor: int  # u8 destination, 0xFF when none
    fee: int  # u16 fen charged
    result: int  # u8, Result (0 granted)
    flags: int  # u8, Flag bits
    boot: int  # u16 boot counter (wraps)

    def __post_init__(self):
        for name, hi in (
            ("seq", U32),
            ("time", U32),
            ("uptime", U32),
            ("card_id", U64),
            ("household", U24),
            ("floor", U8),
            ("fee", U16),
            ("result", U8),
            ("flags", U8),
            ("boot", U16),
        ):
            v = need_uint(name, getattr(self, name), hi)
            # Plain ints (a Result or Flag member is welcome as input).
            object.__setattr__(self, name, int(v))

    def pack(self) -> bytes:
        body = (
            _RIDE_HEAD.pack(self.seq, self.time, self.uptime, self.card_id)
            + self.household.to_bytes(3, "big")
            + _RIDE_TAIL.pack(self.floor, self.fee, self.result, self.flags, self.boot)
        )
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
        rec.__dict__.update(
            seq=seq,
            time=time,
            uptime=uptime,
            card_id=card_id,
            household=int.from_bytes(b[20:23], "big"),
            floor=floor,
            fee=fee,
            result=result,
            flags=flags,
            boot=boot,
        )
        return rec

    def to_fields(self) -> dict:
        return {
            "seq": self.seq,
            "time": self.time,
            "uptime": self.uptime,
            "card_id": card_id_hex(self.card_id),
            "household": self.household,
            "floor": self.floor,
            "fee": self.fee,
            "result": self.result,
            "flags": self.flags,
            "boot": self.boot,
        }

    @classmethod
    def from_fields(cls, d: Mapping) -> "RideRecord":
        cid = d["card_id"]
        if isinstance(cid, str):
            cid = int(cid, 16)
        return cls(
            d["seq"],
            d["time"],
            d["uptime"],
            cid,
            d["household"],
            d["floor"],
            d["fee"],
            d["result"],
            d["flags"],
            d["boot"],
        )


def is_empty_slot(b: bytes) -> bool:
    """An erased ride slot: 32 bytes of 0xFF (never a valid record: its CRC would be 0x5FBD)."""
    return bytes(b) == EMPTY_SLOT


ACK_KIND = 0x41  # 'A': the gateway acknowledged every record up to value
ACK_LEN = 8


def pack_ack(value: int, kind: int = ACK_KIND) -> bytes:
    """An ack journal entry: u8 kind, u8 0, u32 value, u16 CRC16 of the first 6 bytes."""
    body = bytes((need_uint("kind", kind, U8), 0)) + need_uint("value", value, U32).to_bytes(4, "big")
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
