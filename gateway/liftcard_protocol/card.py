"""The card record (16 bytes): the unit of whitelists, deltas and the overlay
(docs/formats.md, "Card record")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .codes import Klass, Status
from .errors import R_FIELD, R_ORDER, R_SIZE, FormatError
from .fields import CARD_LEN, NO_END, U16, U24, U64, card_id_hex, is_int, need_uint


@dataclass(frozen=True, order=True)
class CardRecord:
    """One card: the unit of whitelists, deltas and the overlay.

    Construction validates every field, so a CardRecord always packs. Ordering
    compares card_id first, which is the whitelist sort order (unsigned)."""

    card_id: int  # u64
    household: int = 0  # u24, the paying household
    floors: int = 0  # u16 mask, bit n = floor index n allowed
    status: int = Status.ACTIVE  # 0..3
    klass: int = Klass.RESIDENT  # 0..3
    valid_until: int = NO_END  # u16 local day; 0xFFFF = no end

    def __post_init__(self):
        need_uint("card_id", self.card_id, U64)
        need_uint("household", self.household, U24)
        need_uint("floors", self.floors, U16)
        need_uint("valid_until", self.valid_until, U16)
        if not is_int(self.status) or not 0 <= self.status <= 3:
            raise FormatError(R_FIELD, "card status must be 0..3")
        if not is_int(self.klass) or not 0 <= self.klass <= 3:
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


def check_sorted(card_ids: Sequence[int], what: str) -> None:
    for prev, cur in zip(card_ids, card_ids[1:]):
        if cur == prev:
            raise FormatError(R_ORDER, "%s has duplicate card id %s" % (what, card_id_hex(cur)))
        if cur < prev:
            raise FormatError(R_ORDER, "%s card ids are not sorted at %s" % (what, card_id_hex(cur)))
