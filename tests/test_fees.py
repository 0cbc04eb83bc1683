"""The reference fee model (liftcard_tools.feemodel): the shared fees.jsonl
vectors, hand-worked cases of each rule, and invariants over random tap
sequences."""

import json
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftcard_testing.paths import VECTORS
from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.epoch import month_key
from liftcard_protocol.fields import NO_END, NO_FLOOR
from liftcard_protocol.readerconfig import validate_config
from liftcard_tools.feemodel import FeeModel, destination, home_floor
from liftcard_tools import vectors
from liftcard_tools.vectors import base_config, local_epoch

FEES = vectors.load("fees.jsonl", VECTORS)
GRANTED = Result.GRANTED
DEB, CAP, FREE = int(Flag.DEBOUNCED), int(Flag.CAPPED), int(Flag.FREE_CLASS)
HOME5 = 0b0100001


def model_of(scenario):
    cards = [CardRecord.from_fields(c) for c in scenario["cards"]]
    return FeeModel(scenario["config"], {c.card_id: c for c in cards})


# ---------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", FEES, ids=lambda s: s["name"])
def test_fee_vectors(scenario):
    assert validate_config(scenario["config"]) == scenario["config"]
    m = model_of(scenario)
    for i, t in enumerate(scenario["taps"]):
        d = m.tap(int(t["card_id"], 16), t["at"], t["mono_ms"], t["epoch_s"])
        assert d.to_fields() == t["expect"], "tap %d: %s" % (i, t["note"])


def test_fee_vectors_cover_the_rules():
    taps = [t for s in FEES for t in s["taps"]]
    results = {t["expect"]["result"] for t in taps}
    assert {
        Result.GRANTED,
        Result.UNKNOWN_CARD,
        Result.SUSPENDED,
        Result.LOST,
        Result.EXPIRED,
        Result.NO_FLOOR,
    } <= results
    flags = {t["expect"]["flags"] for t in taps}
    assert {0, DEB, CAP, FREE} <= flags
    assert any(t["expect"]["flags"] == CAP and t["expect"]["fee"] > 0 for t in taps)  # partly capped
    assert any(t["expect"]["flags"] == CAP and t["expect"]["fee"] == 0 for t in taps)  # fully capped
    assert any(int(t["card_id"], 16) >= 2**63 for t in taps)
    assert any(s["config"]["tariff"]["monthly_cap_fen"] == 0 for s in FEES)
    assert any(s["config"]["utc_offset_min"] == 480 and "month" in s["name"] for s in FEES)
    assert any(c["klass"] == 3 for s in FEES for c in s["cards"])
    assert all(isinstance(t["expect"]["fee"], int) for t in taps)


# ---------------------------------------------------------------------------
# Hand-worked cases (independent of the generator)
# ---------------------------------------------------------------------------

T0 = local_epoch(2026, 11, 10, 8, 0, 0)
A = 2**63


def test_debounce_window_is_strictly_less_than_and_does_not_extend():
    m = FeeModel(base_config(monthly_cap_fen=0, debounce_s=30), {A: CardRecord(A, 1, HOME5)})
    got = [(d.fee, d.flags) for d in (m.tap(A, 0, ms, T0) for ms in (0, 29_999, 30_000, 50_000, 60_000, 70_000))]
    # 0 charged; 29.999 s debounced; exactly 30 s charged; 20 s after that debounced;
    # 30 s after it charged; 10 s later debounced.
    assert got == [(40, 0), (0, DEB), (40, 0), (0, DEB), (40, 0), (0, DEB)]


def test_a_tap_every_20s_with_a_30s_window_is_charged_every_other_time():
    m = FeeModel(base_config(monthly_cap_fen=0, debounce_s=30), {A: CardRecord(A, 1, HOME5)})
    fees = [m.tap(A, 0, s * 1000, T0 + s).fee for s in range(0, 200, 20)]
    assert fees == [40, 0] * 5


def test_denied_taps_do_not_touch_the_debounce_anchor():
    only5 = 0b0100000
    m = FeeModel(base_config(monthly_cap_fen=0, debounce_s=30), {A: CardRecord(A, 1, only5)})
    assert m.tap(A, 0, 0, T0).fee == 40
    assert m.tap(A, 5, 10_000, T0).result == Result.NO_FLOOR
    assert m.tap(A, 0, 20_000, T0).flags == DEB
    assert m.tap(A, 0, 30_000, T0).fee == 40


def test_cap_partial_then_full_and_shared_by_visitor():
    v = A + 1
    m = FeeModel(
        base_config(monthly_cap_fen=100, debounce_s=0),
        {A: CardRecord(A, 7, HOME5), v: CardRecord(v, 7, HOME5, klass=3)},
    )
    got = [(d.fee, d.flags) for d in (m.tap(c, 0, 0, T0) for c in (A, v, A, v))]
    assert got == [(40, 0), (40, 0), (20, CAP), (0, CAP)]
    assert m.spent(7, 202611) == 100


def test_cap_resets_at_local_midnight_not_utc():
    m = FeeModel(base_config(monthly_cap_fen=40, debounce_s=0), {A: CardRecord(A, 7, HOME5)})
    before = local_epoch(2026, 10, 31, 23, 59, 59)  # UTC+8: still October
    after = local_epoch(2026, 11, 1, 0, 0, 0)  # 1 November locally, 31 October 16:00 UTC
    assert m.tap(A, 0, 0, before).fee == 40
    assert m.tap(A, 0, 0, before).flags == CAP
    assert (m.tap(A, 0, 0, after).fee, month_key(after, 480)) == (40, 202611)


def test_expiry_is_after_valid_until_in_local_days():
    from liftcard_protocol.epoch import local_day

    day = local_day(T0, 480)
    m = FeeModel(base_config(), {A: CardRecord(A, 1, HOME5, valid_until=day)})
    assert m.tap(A, 0, 0, local_epoch(2026, 11, 10, 23, 59, 59)).result == GRANTED
    d = m.tap(A, 0, 100_000, local_epoch(2026, 11, 11, 0, 0, 0))
    assert (d.result, d.fee, d.floor, d.household) == (Result.EXPIRED, 0, NO_FLOOR, 1)


def test_destination_rule():
    assert home_floor(0b0100001, 0) == 5
    assert home_floor(0b0000001, 0) == 0
    assert home_floor(0b0000101, 2) == 0  # ground 2, basement 0 is the only other
    assert home_floor(0, 3) == 3
    assert destination(HOME5, 0, 0) == 5 and destination(HOME5, 0, NO_FLOOR) == 5
    assert destination(HOME5, 0, 5) == 0 and destination(HOME5, 0, 3) == 0


def test_unknown_card():
    d = FeeModel(base_config(), {}).tap(2**64 - 1, 0, 0, T0)
    assert (d.result, d.fee, d.flags, d.floor, d.household) == (Result.UNKNOWN_CARD, 0, 0, NO_FLOOR, 0)


# ---------------------------------------------------------------------------
# Invariants over random tap sequences
# ---------------------------------------------------------------------------

CLASSES = ["resident", "exempt", "staff", "visitor"]


@st.composite
def worlds(draw):
    floors = draw(st.integers(2, 8))
    cfg = base_config(
        fee_fen=draw(st.lists(st.one_of(st.integers(0, 60), st.just(65535)), min_size=floors, max_size=floors)),
        free_classes=draw(st.lists(st.sampled_from(CLASSES), unique=True, max_size=2)),
        monthly_cap_fen=draw(st.one_of(st.just(0), st.integers(1, 300))),
        debounce_s=draw(st.sampled_from([0, 1, 5, 30, 60])),
    )
    cfg["ground_floor"] = draw(st.integers(0, floors - 1))
    cfg["utc_offset_min"] = draw(st.sampled_from([-720, -300, 0, 330, 480, 840]))
    start = draw(st.integers(local_epoch(2026, 1, 1), local_epoch(2027, 12, 1)))
    day0 = (start + cfg["utc_offset_min"] * 60) // 86400
    ids = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=6, unique=True))
    cards = {}
    for cid in ids:
        cards[cid] = CardRecord(
            cid,
            household=draw(st.integers(1, 3)),  # few households, so caps are shared
            floors=draw(st.one_of(st.integers(0, 0xFFFF), st.sampled_from([HOME5, 0b1001, 1, 0b0100000]))),
            status=draw(st.sampled_from([0, 0, 0, 0, 1, 2, 3])),
            klass=draw(st.integers(0, 3)),
            valid_until=draw(st.one_of(st.just(NO_END), st.integers(day0 - 2, day0 + 40))),
        )
    unknown = 2**64 - 2 if 2**64 - 2 not in cards else 0
    taps = []
    mono, epoch = 0, start
    for _ in range(draw(st.integers(1, 40))):
        mono += draw(st.sampled_from([0, 1, 999, 1000, 4999, 5000, 29_999, 30_000, 60_000, 600_000]))
        epoch += draw(st.sampled_from([0, 1, 60, 3600, 86_399, 86_400 * 9]))
        cid = draw(st.sampled_from(ids + [unknown]))
        at = draw(st.one_of(st.integers(0, floors - 1), st.sampled_from([NO_FLOOR, 15])))
        taps.append((cid, at, mono, epoch))
    return cfg, cards, taps


def run(cfg, cards, taps):
    m = FeeModel(cfg, cards)
    return [m.tap(*t) for t in taps], m


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_fee_invariants(world):
    cfg, cards, taps = world
    decisions, model = run(cfg, cards, taps)
    fee_fen = cfg["tariff"]["fee_fen"]
    free = cfg["tariff"]["free_classes"]
    window = cfg["tariff"]["debounce_s"] * 1000
    anchor = {}
    per_household = defaultdict(int)
    for (cid, at, mono, epoch), d in zip(taps, decisions):
        assert isinstance(d.fee, int) and d.fee >= 0
        if d.result != GRANTED:
            assert d.fee == 0 and d.flags == 0  # denied taps cost 0
            continue
        card = cards[cid]
        assert d.household == card.household and d.floor == destination(card.floors, cfg["ground_floor"], at)
        assert d.fee <= fee_fen[d.floor]
        assert d.flags in (0, DEB, FREE, CAP)  # at most one, and never CLOCK_UNSYNCED / CAP_UNTRACKED
        # Debounce, checked against the rule itself: anchored on the card's last
        # granted, non-debounced tap; strictly less than the window.
        debounced = cid in anchor and mono - anchor[cid] < window
        assert (d.flags == DEB) == debounced
        if not debounced:
            anchor[cid] = mono
        if d.flags == DEB:
            assert d.fee == 0
        elif CLASSES[card.klass] in free:
            assert d.fee == 0 and d.flags == FREE
        if d.flags != CAP and not debounced and CLASSES[card.klass] not in free:
            assert d.fee == fee_fen[d.floor]
        per_household[card.household] += d.fee
    # Exact integer totals: all fees == the sum over households == the model's books.
    assert sum(d.fee for d in decisions) == sum(per_household.values())
    months = {month_key(t[3], cfg["utc_offset_min"]) for t in taps}
    for hh, total in per_household.items():
        assert total == sum(model.spent(hh, mk) for mk in months)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_cap_equals_min_of_cap_and_uncapped_total(world):
    """With a cap C > 0, the same taps give the same decisions (result, floor,
    household, debounce and free-class flags) as with no cap, and for every
    household and local month:
        charged total == min(C, total that would have been charged without a cap).
    Each capped fee is the uncapped fee reduced, CAPPED exactly when reduced."""
    cfg, cards, taps = world
    cap = cfg["tariff"]["monthly_cap_fen"]
    uncapped_cfg = json.loads(json.dumps(cfg))
    uncapped_cfg["tariff"]["monthly_cap_fen"] = 0
    capped, _ = run(cfg, cards, taps)
    plain, _ = run(uncapped_cfg, cards, taps)
    got, would = defaultdict(int), defaultdict(int)
    for t, c, p in zip(taps, capped, plain):
        assert (c.result, c.floor, c.household) == (p.result, p.floor, p.household)
        assert c.flags & ~CAP == p.flags and p.flags & CAP == 0
        assert c.fee <= p.fee and bool(c.flags & CAP) == (c.fee < p.fee)
        if c.result == GRANTED:
            k = (c.household, month_key(t[3], cfg["utc_offset_min"]))
            got[k] += c.fee
            would[k] += p.fee
    for k in would:
        assert got[k] == (min(cap, would[k]) if cap else would[k])
