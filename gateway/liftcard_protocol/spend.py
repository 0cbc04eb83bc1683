"""The household spend checkpoint (LCSP): what each household spent this month,
up to a ride sequence number (docs/formats.md, "Spend checkpoint")."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import R_CRC, R_FIELD, R_MAGIC, R_SIZE, FormatError
from .fields import U16, U24, U32, crc16, need_uint


SP_MAGIC = b"LCSP"
_SP_HDR = struct.Struct(">4sIIH")  # magic month_key last_seq count
SP_HEADER_LEN = _SP_HDR.size  # 14


@dataclass(frozen=True)
class SpendCheckpoint:
    month_key: int  # year*100+month the spend belongs to
    last_seq: int  # ride records up to this seq are included
    spent: dict = field(default_factory=dict)  # household (u24) -> fen spent (u32)

    def pack(self) -> bytes:
        need_uint("month_key", self.month_key, U32)
        need_uint("last_seq", self.last_seq, U32)
        if len(self.spent) > U16:
            raise FormatError(R_SIZE, "spend checkpoint has more than 65535 households")
        out = bytearray(_SP_HDR.pack(SP_MAGIC, self.month_key, self.last_seq, len(self.spent)))
        # Sorted so the same state always gives the same bytes (the reader writes
        # in hash-table order; readers of the file must not rely on any order).
        for hh in sorted(self.spent):
            out += need_uint("household", hh, U24).to_bytes(3, "big") + b"\x00"
            out += need_uint("spent", self.spent[hh], U32).to_bytes(4, "big")
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
            raise FormatError(
                R_SIZE, "spend checkpoint is %d bytes, its count of %d needs %d" % (len(b), count, end + 2)
            )
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
