"""Shared inputs of the vector generators: the fixed keys and ids, a deterministic
"random" source, and small helpers."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

from liftcard_protocol.epoch import LIFTCARD_EPOCH


VECTOR_DIR = Path(__file__).resolve().parents[3] / "tests" / "vectors"

KEY = hashlib.sha256(b"liftcard shared test vectors: reader key").digest()
OTHER_KEY = hashlib.sha256(b"liftcard shared test vectors: another reader's key").digest()
READER_ID = 1017
BUILDING_ID = 12

# Card ids chosen to exercise the unsigned, big-endian comparison.
ID_ZERO = 0
ID_MAX = 0xFFFFFFFFFFFFFFFF
ID_HIGH = 0x8000000000000000  # 2**63: negative as a signed i64
ID_BELOW_HIGH = 0x7FFFFFFFFFFFFFFF  # 2**63 - 1: sorts just before ID_HIGH
HOME5 = 0b0100001  # ground + floor 5


class Det:
    """Deterministic pseudo-random integers: SHA-256(label || counter)."""

    def __init__(self, label: str):
        self._label = label.encode()
        self._n = 0

    def bits(self, n: int) -> int:
        nbytes = (n + 7) // 8
        out = b""
        while len(out) < nbytes:
            out += hashlib.sha256(self._label + self._n.to_bytes(8, "big")).digest()
            self._n += 1
        return int.from_bytes(out[:nbytes], "big") >> (8 * nbytes - n)

    def below(self, n: int) -> int:
        return self.bits(64) % n  # the bias is irrelevant for test data


def local_epoch(y, mo, d, h=0, mi=0, s=0, offset_min=480) -> int:
    """Liftcard-epoch seconds of a local wall time at a UTC offset."""
    tz = datetime.timezone(datetime.timedelta(minutes=offset_min))
    return int(datetime.datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()) - LIFTCARD_EPOCH


def card_fields(cards):
    return [c.to_fields() for c in sorted(cards, key=lambda c: c.card_id)]


def flip(b: bytes, i: int, mask: int = 0x01) -> str:
    x = bytearray(b)
    x[i] ^= mask
    return x.hex()
