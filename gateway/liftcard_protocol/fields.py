"""Widths, lengths and the small checks every format shares (docs/formats.md):
all integers are big-endian and unsigned, money is integer fen."""

from __future__ import annotations

import binascii
import hashlib
import hmac

from .errors import R_FIELD, FormatError

KEY_LEN = 32
MAC_LEN = 16
CARD_LEN = 16
NO_END = 0xFFFF  # valid_until: the card never expires
NO_FLOOR = 0xFF  # ride record floor / tap floor: unknown or none
ID_MAX = (1 << 30) - 1  # reader and building ids: 1 .. 2^30-1, ESP32 small ints

U8, U16, U24, U32, U64 = 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor out)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def mac16(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256(key, msg) truncated to its first 16 bytes."""
    return hmac.new(bytes(key), bytes(msg), hashlib.sha256).digest()[:MAC_LEN]


def card_id_hex(card_id: int) -> str:
    """The JSON / log spelling of a card id: 16 lowercase hex digits."""
    return "%016x" % card_id


def is_int(v) -> bool:
    """An int that is not a bool (JSON true must not pass for 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def need_uint(name: str, v, hi: int) -> int:
    """v, if it is an integer 0..hi; otherwise FormatError(field) naming `name`."""
    if not is_int(v) or not 0 <= v <= hi:
        raise FormatError(R_FIELD, "%s must be an integer 0..%d" % (name, hi))
    return v


def need_key(key) -> bytes:
    """A 32-byte reader key as bytes; ValueError (no key in it) otherwise."""
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_LEN:
        raise ValueError("reader key must be %d bytes" % KEY_LEN)
    return bytes(key)
