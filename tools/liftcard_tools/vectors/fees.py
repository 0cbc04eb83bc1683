"""Vectors for the fee rules: scenarios of taps against the reference fee model."""

from __future__ import annotations


from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Klass, Status
from liftcard_protocol.epoch import local_day
from liftcard_protocol.fields import NO_FLOOR, card_id_hex
from liftcard_protocol.readerconfig import validate_config
from liftcard_tools.feemodel import FeeModel
from .common import HOME5, ID_BELOW_HIGH, ID_HIGH, ID_MAX, ID_ZERO, card_fields, local_epoch
from .config import base_config


class Taps:
    """Collects the taps of one scenario on two independent clocks: mono_ms (the
    reader's monotonic clock, the debounce clock) and epoch_s (wall time, for
    expiry and the month). mono_ms follows wall time but advances at most an
    hour per tap, so it stays below 2**29 (a ticks_ms-based reader can replay
    it without wrapping)."""

    MONO_LIMIT = 1 << 29

    def __init__(self, start_epoch: int, start_mono: int = 1000):
        self.mono = start_mono
        self.epoch = start_epoch
        self.taps = []

    def tap(self, card_id, at, note, gap_s=60, mono=None, epoch=None):
        # Default: 60 s after the previous tap (outside every debounce window
        # used here). mono / epoch: set that clock; the other one follows.
        if epoch is None:
            epoch = self.epoch + (gap_s if mono is None else (mono - self.mono) // 1000)
        if mono is None:
            mono = self.mono + min(epoch - self.epoch, 3600) * 1000
        assert mono >= self.mono and epoch >= self.epoch and mono < self.MONO_LIMIT
        self.mono, self.epoch = mono, epoch
        self.taps.append((card_id, at, mono, epoch, note))


def scenario(name, config, cards, taps: Taps):
    cfg = validate_config(config)
    model = FeeModel(cfg, {c.card_id: c for c in cards})
    out = []
    for card_id, at, mono, epoch, note in taps.taps:
        d = model.tap(card_id, at, mono, epoch)
        out.append(
            {
                "card_id": card_id_hex(card_id),
                "at": at,
                "mono_ms": mono,
                "epoch_s": epoch,
                "note": note,
                "expect": d.to_fields(),
            }
        )
    return {"name": name, "config": cfg, "cards": card_fields(cards), "taps": out}


def gen_fees():
    t0 = local_epoch(2026, 11, 10, 8, 0, 0)
    today = local_day(t0, 480)
    scenarios = []

    # -- lookup, statuses, expiry by valid_until (UTC+8 local days) --
    A, SUSP, LOST, EXPST, ENDS, ENDED, LOSTEND = (
        ID_MAX,
        ID_HIGH,
        0x9E3779B97F4A7C15,
        0x3C6EF372FE94F82A,
        0xDAA66D2C7DDF743F,
        1,
        0x78DDE6E5FD29F054,
    )
    cards = [
        CardRecord(A, 101, HOME5),
        CardRecord(SUSP, 102, HOME5, Status.SUSPENDED),
        CardRecord(LOST, 103, HOME5, Status.LOST),
        CardRecord(EXPST, 104, HOME5, Status.EXPIRED),
        CardRecord(ENDS, 105, HOME5, valid_until=today),
        CardRecord(ENDED, 106, HOME5, valid_until=0),
        CardRecord(LOSTEND, 107, HOME5, Status.LOST, valid_until=0),
    ]
    t = Taps(t0)
    t.tap(ID_BELOW_HIGH, 0, "unknown card 2**63-1 (2**63, next to it, is on the list)")
    t.tap(ID_ZERO, 0, "unknown card id 0")
    t.tap(0xFFFFFFFFFFFFFFFE, 0, "unknown card id 2**64-2")
    t.tap(A, 0, "active resident, card id 2**64-1: up to floor 5, 40 fen")
    t.tap(SUSP, 0, "suspended (household unpaid)")
    t.tap(LOST, 0, "lost")
    t.tap(EXPST, 0, "status expired, no end date")
    t.tap(ENDS, 0, "valid_until is today: still valid")
    t.tap(ENDS, 0, "23:59:59 local on its last day: still valid", epoch=local_epoch(2026, 11, 10, 23, 59, 59))
    t.tap(ENDS, 0, "00:00:00 local the next day: expired", epoch=local_epoch(2026, 11, 11, 0, 0, 0))
    t.tap(ENDED, 0, "valid_until 0 (2024-01-01) is long past")
    t.tap(LOSTEND, 0, "lost and past valid_until: status wins")
    scenarios.append(scenario("lookup_status_expiry", base_config(), cards, t))

    # -- destination rule and fee by destination floor --
    cfg = base_config(fee_fen=[5, 8, 10, 20, 30, 40, 50], free_classes=["exempt"], monthly_cap_fen=0)
    ids = [0xA000000000000000 + i for i in range(8)]
    H5, H3, G, ONLY5, H6, H10, H1, NONE = ids
    cards = [
        CardRecord(H5, 201, HOME5),
        CardRecord(H3, 202, 0b0001001),
        CardRecord(G, 203, 0b0000001),
        CardRecord(ONLY5, 204, 0b0100000),
        CardRecord(H6, 205, 0b1110101),
        CardRecord(H10, 206, 0b10000000001),
        CardRecord(H1, 207, 0b0000011),
        CardRecord(NONE, 208, 0),
    ]
    t = Taps(t0)
    t.tap(H5, 0, "at ground: home floor 5, 40 fen")
    t.tap(H5, NO_FLOOR, "unknown floor (0xFF): home floor 5")
    t.tap(H5, 5, "at floor 5: down to ground, fee_fen[0] = 5")
    t.tap(H5, 3, "at a floor outside the mask: down to ground")
    t.tap(H3, 0, "home floor 3: 20 fen")
    t.tap(H3, 6, "at floor 6: down to ground")
    t.tap(G, 0, "ground-only card at ground: destination ground, 5 fen")
    t.tap(G, 4, "ground-only card at floor 4: ground")
    t.tap(ONLY5, 0, "floor-5-only card at ground: up to 5")
    t.tap(ONLY5, NO_FLOOR, "floor-5-only card, unknown floor: up to 5")
    t.tap(ONLY5, 5, "floor-5-only card at 5: ground not allowed, NO_FLOOR with floor 0")
    t.tap(H6, 0, "mask 0,2,4,5,6: home is the highest, 6, 50 fen")
    t.tap(H6, 2, "at floor 2: down to ground")
    t.tap(H10, 0, "home floor 10 in a 7-floor building: NO_FLOOR with floor 10")
    t.tap(H10, 3, "same card at floor 3: down to ground is fine")
    t.tap(H1, 0, "home floor 1: 8 fen")
    t.tap(NONE, 0, "empty mask: destination ground, not allowed")
    t.tap(NONE, NO_FLOOR, "empty mask, unknown floor: NO_FLOOR with floor 0")
    scenarios.append(scenario("destination_and_fee_by_floor", cfg, cards, t))

    # -- a ground floor that is not index 0 (two basements) --
    cfg = base_config(fee_fen=[15, 12, 0, 10, 20, 30], free_classes=[], monthly_cap_fen=0)
    cfg["ground_floor"] = 2
    P, Q, R, S = (0xB000000000000001, 0xB000000000000002, 0x3000000000000003, 0x3000000000000004)
    cards = [
        CardRecord(P, 301, 0b000101),
        CardRecord(Q, 302, 0b100101),
        CardRecord(R, 303, 0b000100),
        CardRecord(S, 304, 0b001000),
    ]
    t = Taps(t0)
    t.tap(P, 2, "mask {0,2}, ground 2: home is basement 0, 15 fen")
    t.tap(P, 0, "at basement 0: up to ground 2, free")
    t.tap(P, NO_FLOOR, "unknown floor: home, basement 0")
    t.tap(Q, 2, "mask {0,2,5}: home 5, 30 fen")
    t.tap(Q, 0, "at basement 0: to ground 2")
    t.tap(Q, 5, "at 5: to ground 2")
    t.tap(R, 2, "ground-only card at ground: destination ground")
    t.tap(R, 1, "ground-only card at basement 1: ground")
    t.tap(S, 2, "floor-3-only card: up to 3, 10 fen")
    t.tap(S, 3, "floor-3-only card at 3: ground 2 not allowed")
    scenarios.append(scenario("ground_floor_not_zero", cfg, cards, t))

    # -- debounce: inside, at and after the window --
    cfg = base_config(monthly_cap_fen=0, debounce_s=30)
    A, B, C, E = ID_HIGH, ID_HIGH + 1, 0x5000000000000005, 0xE000000000000000
    cards = [
        CardRecord(A, 401, HOME5),
        CardRecord(B, 401, HOME5),
        CardRecord(C, 402, 0b0100000),
        CardRecord(E, 403, HOME5, klass=Klass.EXEMPT),
    ]
    t = Taps(t0)
    t.tap(A, 0, "first ride: charged, starts the window", mono=1000)
    t.tap(A, 0, "29.999 s later: debounced", mono=30999)
    t.tap(A, 0, "exactly 30 s later: not debounced (strictly less than), charged", mono=31000)
    t.tap(A, 0, "20 s after the last charged ride: debounced", mono=51000)
    t.tap(A, 0, "40 s after the last charged ride: charged (the debounced tap did not extend the window)", mono=71000)
    t.tap(B, 0, "another card of the same household: its own window, charged", mono=71500)
    t.tap(A, 5, "9 s later riding down: still debounced, whatever the direction", mono=80000)
    t.tap(C, 0, "floor-5-only card: charged, starts its window", mono=200000)
    t.tap(C, 5, "denied (NO_FLOOR): neither debounced nor restarting the window", mono=210000)
    t.tap(C, 0, "20 s after its last granted ride: debounced", mono=220000)
    t.tap(C, 0, "30 s after its last granted ride: charged", mono=230000)
    t.tap(E, 0, "exempt: free class, starts a window", mono=300000)
    t.tap(E, 0, "exempt re-tap 1 s later: DEBOUNCED (checked before free class)", mono=301000)
    t.tap(E, 0, "exempt 31 s after: free class again", mono=331000)
    scenarios.append(scenario("debounce", cfg, cards, t))

    cfg = base_config(monthly_cap_fen=0, debounce_s=0)
    cards = [CardRecord(A, 401, HOME5)]
    t = Taps(t0)
    t.tap(A, 0, "debounce_s 0: every tap charged", mono=1000)
    t.tap(A, 0, "same millisecond: still charged", mono=1000)
    t.tap(A, 0, "1 ms later: charged", mono=1001)
    scenarios.append(scenario("debounce_disabled", cfg, cards, t))

    # -- free classes --
    RES, EX, ST, VIS = 0xF000000000000001, 0xF000000000000002, 0x0F00000000000003, 0xF000000000000004
    cards = [
        CardRecord(RES, 501, HOME5),
        CardRecord(EX, 502, HOME5, klass=Klass.EXEMPT),
        CardRecord(ST, 503, HOME5, klass=Klass.STAFF),
        CardRecord(VIS, 501, HOME5, klass=Klass.VISITOR),
    ]
    for name, free, notes in (
        (
            "free_classes_exempt_staff",
            ["exempt", "staff"],
            ("charged", "free", "free", "charged to host household 501"),
        ),
        ("free_classes_visitor_only", ["visitor"], ("charged", "charged", "charged", "free")),
        ("free_classes_none", [], ("charged", "charged", "charged", "charged to host household 501")),
    ):
        t = Taps(t0)
        for cid, note, klass in zip((RES, EX, ST, VIS), notes, ("resident", "exempt", "staff", "visitor")):
            t.tap(cid, 0, "%s up to 5: %s" % (klass, note))
        t.tap(
            EX,
            5,
            "exempt riding down, fee_fen[0] is 0: %s"
            % ("FREE_CLASS is set even though the fare is 0" if "exempt" in free else "0, no flag"),
        )
        t.tap(
            VIS,
            5,
            "visitor riding down, fee_fen[0] is 0: %s"
            % ("FREE_CLASS is set even though the fare is 0" if "visitor" in free else "0, no flag"),
        )
        scenarios.append(scenario(name, base_config(free_classes=free, monthly_cap_fen=3000), cards, t))

    # -- monthly cap, partial and full, shared by a household's visitor card --
    cfg = base_config(free_classes=["exempt"], monthly_cap_fen=100, debounce_s=0)
    R1, V1, R2, X1, R3 = (
        0x9000000000000001,
        0x9000000000000002,
        0x1000000000000003,
        0x9000000000000004,
        0x9000000000000005,
    )
    cards = [
        CardRecord(R1, 901, HOME5),
        CardRecord(V1, 901, HOME5, klass=Klass.VISITOR),
        CardRecord(R2, 0xFFFFFF, HOME5),
        CardRecord(X1, 901, HOME5, klass=Klass.EXEMPT),
        CardRecord(R3, 903, 0b0000101),
    ]
    t = Taps(t0)
    t.tap(R1, 0, "40 of 100")
    t.tap(R1, 0, "80 of 100")
    t.tap(R1, 0, "only 20 left: partially capped")
    t.tap(R1, 0, "cap reached: 0, CAPPED")
    t.tap(R1, 5, "riding down costs 0 anyway: not CAPPED")
    t.tap(V1, 0, "visitor of household 901: capped with its host")
    t.tap(X1, 0, "exempt card of household 901: FREE_CLASS, not CAPPED")
    t.tap(R2, 0, "household 0xFFFFFF has its own cap: 40")
    for i in range(10):
        t.tap(R3, 0, "home 2, 10 fen: %d0 of 100%s" % (i + 1, " exactly, not CAPPED" if i == 9 else ""))
    t.tap(R3, 0, "cap reached: CAPPED")
    scenarios.append(scenario("monthly_cap", cfg, cards, t))

    cfg = base_config(monthly_cap_fen=30, debounce_s=0)
    cards = [CardRecord(R1, 901, HOME5)]
    t = Taps(t0)
    t.tap(R1, 0, "cap 30 below a 40 fen fare: 30, CAPPED")
    t.tap(R1, 0, "then 0, CAPPED")
    scenarios.append(scenario("monthly_cap_below_one_fare", cfg, cards, t))

    # -- the cap resets when the LOCAL month changes --
    for name, offset in (("cap_resets_at_local_month_utc+8", 480), ("cap_resets_at_local_month_utc-5", -300)):
        cfg = base_config(monthly_cap_fen=100, debounce_s=0)
        cfg["utc_offset_min"] = offset
        cards = [CardRecord(R1, 901, HOME5)]

        def at(*wall, offset=offset):
            return local_epoch(*wall, offset_min=offset)

        t = Taps(at(2026, 10, 31, 22, 0, 0), start_mono=5000)
        t.tap(R1, 0, "October: 40", epoch=at(2026, 10, 31, 22, 0, 0))
        t.tap(R1, 0, "October: 80", epoch=at(2026, 10, 31, 22, 10, 0))
        t.tap(R1, 0, "October: capped at 100", epoch=at(2026, 10, 31, 22, 20, 0))
        t.tap(R1, 0, "23:59:59 local on 31 October: still October, 0", epoch=at(2026, 10, 31, 23, 59, 59))
        t.tap(R1, 0, "00:00:00 local on 1 November: new month, 40", epoch=at(2026, 11, 1, 0, 0, 0))
        t.tap(R1, 0, "November: 80", epoch=at(2026, 11, 30, 23, 50, 0))
        t.tap(R1, 0, "November: capped", epoch=at(2026, 11, 30, 23, 55, 0))
        t.tap(R1, 0, "23:59:59 local on 30 November: 0", epoch=at(2026, 11, 30, 23, 59, 59))
        t.tap(R1, 0, "00:00:00 local on 1 December: 40", epoch=at(2026, 12, 1, 0, 0, 0))
        t.tap(R1, 0, "December: 80", epoch=at(2026, 12, 31, 23, 0, 0))
        t.tap(R1, 0, "December: capped", epoch=at(2026, 12, 31, 23, 30, 0))
        t.tap(R1, 0, "23:59:59 local on 31 December: 0", epoch=at(2026, 12, 31, 23, 59, 59))
        t.tap(R1, 0, "00:00:00 local on 1 January 2027: new year, new month, 40", epoch=at(2027, 1, 1, 0, 0, 0))
        scenarios.append(scenario(name, cfg, cards, t))

    # -- valid_until follows the local day at a negative offset too --
    cfg = base_config()
    cfg["utc_offset_min"] = -300
    last = local_day(local_epoch(2026, 11, 10, 12, 0, 0, offset_min=-300), -300)
    cards = [CardRecord(ENDS, 105, HOME5, valid_until=last)]
    t = Taps(local_epoch(2026, 11, 10, 12, 0, 0, offset_min=-300))
    t.tap(ENDS, 0, "last valid local day (UTC-5)", gap_s=0)
    t.tap(
        ENDS,
        0,
        "23:59:59 local (already the next day in UTC): still valid",
        epoch=local_epoch(2026, 11, 10, 23, 59, 59, offset_min=-300),
    )
    t.tap(ENDS, 0, "00:00:00 local the next day: expired", epoch=local_epoch(2026, 11, 11, 0, 0, 0, offset_min=-300))
    scenarios.append(scenario("expiry_local_day_utc-5", cfg, cards, t))

    # -- a cap of 0 means no cap --
    cfg = base_config(fee_fen=[0, 0, 10, 20, 30, 40, 65535], monthly_cap_fen=0, debounce_s=0)
    TOP = ID_MAX - 1
    cards = [CardRecord(R1, 901, HOME5), CardRecord(TOP, 901, 0b1000001)]
    t = Taps(t0)
    for i in range(5):
        t.tap(R1, 0, "no cap: 40 every time (%d)" % (i + 1))
    for i in range(3):
        t.tap(TOP, 0, "no cap: the largest fee, 65535 fen, every time (%d)" % (i + 1))
    scenarios.append(scenario("no_cap", cfg, cards, t))

    return scenarios
