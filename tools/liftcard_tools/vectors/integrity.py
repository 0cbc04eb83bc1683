"""Vectors for crc16 and mac16."""

from __future__ import annotations


from liftcard_protocol.fields import crc16, mac16
from liftcard_protocol.ride import RideRecord
from .common import ID_MAX, KEY


def gen_crc16():
    datas = [
        b"123456789",  # the CRC-16/CCITT-FALSE check value 0x29B1
        b"",
        b"\x00",
        b"\xff",
        b"A",
        b"\xff" * 30,  # the body of an erased ride slot
        bytes(range(256)),
        RideRecord(1, 91000000, 12, ID_MAX, 101, 5, 40, 0, 0, 1).pack()[:30],
    ]
    out = [{"data": d.hex(), "crc": crc16(d)} for d in datas]
    assert out[0]["crc"] == 0x29B1 and out[1]["crc"] == 0xFFFF
    return out


def gen_mac16():
    cases = [
        (b"Jefe", b"what do ya want for nothing?"),  # RFC 4231 test case 2
        (KEY, b""),
        (KEY, b"123456789"),
        (KEY, b"LCWL" + bytes(28)),
        (KEY, bytes(range(256)) * 2),  # several SHA-256 blocks
        (bytes(range(64)), b"block-size key"),
        (bytes(range(65)), b"key longer than a block is hashed first"),
        (b"", b"empty key"),
    ]
    out = [{"key": k.hex(), "msg": m.hex(), "mac": mac16(k, m).hex()} for k, m in cases]
    assert out[0]["mac"] == "5bdcc146bf60754e6a042426089575c7"
    return out
