# The tap path allocates nothing: lookup, fee decision, durable append, fee
# commit, signal and report, for every kind of outcome; and the line
# protocol's tap parsing. Measured with the garbage collector off, so any
# allocation shows in gc.mem_alloc().
import gc

import rig
from rig import check, card_id, record
from liftcard import codes

HOME5 = 0b100001


def _reader():
    cfg = dict(rig.CONFIG)
    cfg["tariff"] = dict(cfg["tariff"], monthly_cap_fen=60)
    cards = [record(card_id(i), 300 + i % 3, HOME5) for i in range(1, 40)]
    cards.append(record(card_id(50), 350, HOME5, klass=codes.CL_EXEMPT))
    cards.append(record(card_id(51), 351, HOME5, status=codes.ST_LOST))
    cards.append(record(card_id(52), 352, 0b100000))  # floor 5, not the ground
    cards.append(record(card_id(53), 353, HOME5, until=10))  # expired long ago
    return rig.configured_reader(cfg=cfg, cards=cards, keep_output=False)


def _round(r, ids, card):
    # One of each outcome: granted and charged, debounced re-tap, capped,
    # free class, unknown, lost, expired, no floor, failed credential.
    outcomes = 0
    for i in ids:
        for k in range(8):
            card[k] = i[k]
        # Card 52 boards at floor 3: going down to the ground it may not reach.
        outcomes |= 1 << r.tap(codes.TAP_CREDENTIAL, 3 if i is ids[8] else 0)
    r.tap(codes.TAP_FAILED, 0, codes.AUTH_FAILED)
    return outcomes


def test_tap_path_does_not_allocate():
    r = _reader()
    card = r.board.card
    ids = [
        card_id(1),
        card_id(1),
        card_id(2),
        card_id(3),
        card_id(50),
        card_id(99),
        card_id(51),
        card_id(53),
        card_id(52),
        card_id(4),
    ]
    _round(r, ids, card)  # warm-up: first-time paths (month roll, table slots)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        seen = 0
        for _ in range(10):
            seen |= _round(r, ids, card)
        after = gc.mem_alloc()
    finally:
        gc.enable()
    for code in (codes.GRANTED, codes.UNKNOWN_CARD, codes.LOST, codes.EXPIRED, codes.NO_FLOOR):
        check(seen & (1 << code), "outcome %s not exercised" % codes.RESULT_NAMES[code])
    check(r.fees.spent(301) == 60, "the cap was reached: %d" % r.fees.spent(301))
    check(r.log.last_seq == 11 * 11)
    check(after == before, "%d taps allocated %d bytes" % (110, after - before))
    rig.shutdown(r)


def test_tap_line_parsing_does_not_allocate():
    r = _reader()
    b = r.board
    line = b"TAP %s 3\n" % rig.hexs(card_id(7)).encode()
    bad = b"TAP 12zz\n"

    def feed(text):
        n = len(text)
        dst = b._line
        for i in range(n):
            dst[i] = text[i]
        b._n = n
        return b._take_line()

    check(feed(line) == 1 and b.tap_floor == 3 and bytes(b.card) == card_id(7))
    r.tap(b.tap_kind, b.tap_floor, b.tap_failure)  # warm-up
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(50):
            feed(line)
            r.tap(b.tap_kind, b.tap_floor, b.tap_failure)
        after = gc.mem_alloc()
    finally:
        gc.enable()
    check(after == before, "parsing 50 TAP lines allocated %d bytes" % (after - before))
    check(feed(bad) == 0)  # refused (the ERR reply may allocate; it is not a ride)
    rig.shutdown(r)
