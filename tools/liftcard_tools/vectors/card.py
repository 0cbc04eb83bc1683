"""Vectors for the 16-byte card record."""

from __future__ import annotations


from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Klass, Status
from liftcard_protocol.fields import NO_END
from .common import HOME5, ID_BELOW_HIGH, ID_HIGH, ID_MAX, ID_ZERO


def gen_card_record():
    valid = [
        CardRecord(ID_ZERO, 0, 0, Status.ACTIVE, Klass.RESIDENT, 0),
        CardRecord(ID_MAX, 0xFFFFFF, 0xFFFF, Status.EXPIRED, Klass.VISITOR, NO_END),
        CardRecord(ID_HIGH, 101, HOME5, Status.ACTIVE, Klass.RESIDENT, NO_END),
        CardRecord(ID_BELOW_HIGH, 102, 0b1001, Status.SUSPENDED, Klass.EXEMPT, 1400),
        CardRecord(0x0000000004A21B9C, 103, 0b11, Status.LOST, Klass.STAFF, 0xFFFE),
    ]
    good = valid[2].pack()

    def with_sc(sc):
        return (good[:13] + bytes((sc,)) + good[14:]).hex()

    invalid = [
        {"hex": with_sc(0x40), "why": "status nibble 4", "reason": "field"},
        {"hex": with_sc(0xF0), "why": "status nibble 15", "reason": "field"},
        {"hex": with_sc(0x04), "why": "class nibble 4", "reason": "field"},
        {"hex": with_sc(0x0F), "why": "class nibble 15", "reason": "field"},
        {"hex": good[:15].hex(), "why": "15 bytes", "reason": "size"},
        {"hex": (good + b"\x00").hex(), "why": "17 bytes", "reason": "size"},
        {"hex": "", "why": "empty", "reason": "size"},
    ]
    return {"valid": [{"fields": c.to_fields(), "hex": c.pack().hex()} for c in valid], "invalid": invalid}
