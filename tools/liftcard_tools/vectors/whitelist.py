"""Vectors for the whitelist file (LCWL)."""

from __future__ import annotations


from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Klass, Status
from liftcard_protocol.fields import NO_END
from liftcard_protocol.whitelist import build_whitelist, seal_whitelist
from .common import (
    BUILDING_ID,
    Det,
    HOME5,
    ID_BELOW_HIGH,
    ID_HIGH,
    ID_MAX,
    ID_ZERO,
    KEY,
    OTHER_KEY,
    READER_ID,
    card_fields,
    flip,
    local_epoch,
)


def random_cards(label: str, n: int):
    r = Det(label)
    ids = {ID_ZERO, ID_MAX, ID_HIGH, ID_BELOW_HIGH, 1}
    while len(ids) < n:
        ids.add(r.bits(64))
    cards = []
    for cid in sorted(ids):
        cards.append(
            CardRecord(
                card_id=cid,
                household=r.bits(24),
                floors=r.bits(16),
                status=r.below(4),
                klass=r.below(4),
                valid_until=NO_END if r.below(3) == 0 else r.bits(16),
            )
        )
    return cards


def small_list():
    return [
        CardRecord(ID_BELOW_HIGH, 101, HOME5),
        CardRecord(ID_HIGH, 102, 0b1001, Status.SUSPENDED),
        CardRecord(0x0123456789ABCDEF, 103, HOME5, klass=Klass.EXEMPT),
        CardRecord(ID_MAX, 101, HOME5, klass=Klass.VISITOR, valid_until=1100),
        CardRecord(0xC0FFEE0000000001, 104, 0b1111111, Status.LOST),
    ]


def gen_whitelist():
    t_issued = local_epoch(2026, 11, 10, 8, 0, 0)
    lists = [
        (1, 0, []),
        (2, t_issued, [CardRecord(ID_MAX, 0xFFFFFF, HOME5)]),
        (3, t_issued + 3600, random_cards("whitelist-50", 50)),
    ]
    valid = []
    for version, issued, cards in lists:
        data = build_whitelist(KEY, READER_ID, BUILDING_ID, version, cards, issued)
        valid.append({"version": version, "issued": issued, "cards": card_fields(cards), "hex": data.hex()})

    cards = sorted(small_list())
    recs = [c.pack() for c in cards]
    version = 7
    good = build_whitelist(KEY, READER_ID, BUILDING_ID, version, cards, t_issued)

    def sealed(records=recs, **kw):
        args = dict(reader_id=READER_ID, building_id=BUILDING_ID, version=version, issued=t_issued)
        args.update(kw)
        return seal_whitelist(
            KEY,
            args.pop("reader_id"),
            args.pop("building_id"),
            args.pop("version"),
            records,
            args.pop("issued"),
            **args,
        ).hex()

    unsorted = [recs[1], recs[0]] + recs[2:]
    duplicate = recs[:2] + [recs[1]] + recs[3:]
    bad_status = list(recs)
    bad_status[2] = recs[2][:13] + bytes((0x40 | recs[2][13] & 15,)) + recs[2][14:]
    bad_class = list(recs)
    bad_class[2] = recs[2][:13] + bytes((recs[2][13] & 0xF0 | 0x05,)) + recs[2][14:]
    first_rec = 32
    inv = [
        (good[:-1].hex(), "truncated by one byte", "size", None),
        (good[: 32 + 16 + 7].hex(), "truncated inside a record", "size", None),
        (good[:20].hex(), "shorter than a header", "size", None),
        ((good + b"\x00").hex(), "one extra byte", "size", None),
        (sealed(count=len(recs) + 1), "count larger than the records present (valid MAC)", "size", None),
        (b"LCWX".hex() + good[4:].hex(), "bad magic", "magic", None),
        (sealed(magic=b"LCWD"), "delta magic on a full list (valid MAC)", "magic", None),
        (sealed(fmt=2), "format 2 (valid MAC)", "format", None),
        (sealed(record_size=17), "record size 17 (valid MAC)", "record_size", None),
        (sealed(flags=1), "nonzero reserved flags (valid MAC)", "header", None),
        (sealed(reserved=1), "nonzero reserved word at offset 28 (valid MAC)", "header", None),
        (flip(good, len(good) - 1), "bad MAC (last MAC byte flipped)", "mac", None),
        (flip(good, first_rec + 16 * 2 + 3), "flipped record byte", "mac", None),
        (flip(good, 17), "flipped version byte", "mac", None),
        (
            build_whitelist(OTHER_KEY, READER_ID, BUILDING_ID, version, cards, t_issued).hex(),
            "MAC'd with another reader's key",
            "mac",
            None,
        ),
        (sealed(unsorted), "records not sorted (valid MAC)", "order", None),
        (sealed(duplicate), "duplicate card id (valid MAC)", "order", None),
        (sealed(reader_id=READER_ID + 1), "other reader id (valid MAC)", "reader", None),
        (sealed(building_id=BUILDING_ID + 1), "other building id (valid MAC)", "building", None),
        (sealed(bad_status), "bad status nibble 4 (valid MAC)", "field", None),
        (sealed(bad_class), "bad class nibble 5 (valid MAC)", "field", None),
        (good.hex(), "stale: version 7 while holding 7 (replay)", "stale", 7),
        (good.hex(), "stale: version 7 while holding 9 (rollback)", "stale", 9),
    ]
    invalid = [{"hex": h, "why": w, "reason": r, "held_version": held} for h, w, r, held in inv]
    return {"key": KEY.hex(), "reader_id": READER_ID, "building_id": BUILDING_ID, "valid": valid, "invalid": invalid}
