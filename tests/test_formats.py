"""CPython codecs (liftcard_protocol) against the shared vectors in
tests/vectors/ and against properties over arbitrary valid inputs."""

import datetime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from liftcard_testing.paths import VECTORS
from liftcard_protocol.delta import (
    apply_ops,
    build_delta,
    build_overlay,
    diff_whitelists,
    op_id,
    parse_delta,
    parse_overlay,
)
from liftcard_protocol.epoch import LIFTCARD_EPOCH, local_day, month_key
from liftcard_protocol.fields import crc16, mac16
from liftcard_protocol.readerconfig import CONFIG_DEFAULTS, config_key, validate_config
from liftcard_protocol.ride import is_empty_slot, pack_ack, unpack_ack
from liftcard_protocol.spend import SpendCheckpoint
from liftcard_protocol.whitelist import Whitelist, build_whitelist, parse_whitelist
from liftcard_protocol.card import CardRecord
from liftcard_protocol.errors import ConfigError, FormatError
from liftcard_protocol.ride import RideRecord
from liftcard_tools import vectors

U64 = 2**64 - 1


def load(name):
    return vectors.load(name + "l", VECTORS)


def cards_of(fields_list):
    return [CardRecord.from_fields(f) for f in fields_list]


def assert_clean_message(err, key: bytes = b""):
    # One line, names the problem, never carries the key.
    msg = str(err)
    assert msg and "\n" not in msg
    if key:
        assert key.hex() not in msg.lower()
        assert repr(key) not in msg


# ---------------------------------------------------------------------------
# The vector files
# ---------------------------------------------------------------------------


def test_vector_files_are_up_to_date(capsys):
    assert vectors.main(["--check"]) == 0


def test_vector_generation_is_deterministic():
    assert vectors.generate() == vectors.generate()


def test_crc16_vectors():
    vs = load("crc16.json")
    assert {"data": b"123456789".hex(), "crc": 0x29B1} in vs
    assert {"data": "", "crc": 0xFFFF} in vs
    for v in vs:
        assert crc16(bytes.fromhex(v["data"])) == v["crc"]


def test_mac16_vectors():
    vs = load("mac16.json")
    # RFC 4231 test case 2, truncated: an anchor independent of our own code.
    assert {
        "key": b"Jefe".hex(),
        "msg": b"what do ya want for nothing?".hex(),
        "mac": "5bdcc146bf60754e6a042426089575c7",
    } in vs
    for v in vs:
        assert mac16(bytes.fromhex(v["key"]), bytes.fromhex(v["msg"])).hex() == v["mac"]


def test_card_record_vectors():
    vs = load("card_record.json")
    assert vs["valid"] and vs["invalid"]
    for v in vs["valid"]:
        rec = CardRecord.from_fields(v["fields"])
        assert rec.pack().hex() == v["hex"]
        assert CardRecord.unpack(bytes.fromhex(v["hex"])) == rec
        assert rec.to_fields() == v["fields"]
    for v in vs["invalid"]:
        with pytest.raises(FormatError) as e:
            CardRecord.unpack(bytes.fromhex(v["hex"]))
        assert e.value.reason == v["reason"], v["why"]
        assert_clean_message(e.value)


WL = load("whitelist.json")
WL_KEY = bytes.fromhex(WL["key"])


def test_whitelist_valid_vectors():
    sizes = set()
    for v in WL["valid"]:
        data = bytes.fromhex(v["hex"])
        wl = parse_whitelist(WL_KEY, data, WL["reader_id"], WL["building_id"], held_version=v["version"] - 1)
        cards = cards_of(v["cards"])
        assert (wl.reader_id, wl.building_id, wl.version, wl.issued) == (
            WL["reader_id"],
            WL["building_id"],
            v["version"],
            v["issued"],
        )
        assert wl.cards == cards
        assert len(data) == 48 + 16 * len(cards)
        # Building is byte-exact, and does not depend on the order cards are given in.
        built = build_whitelist(WL_KEY, WL["reader_id"], WL["building_id"], v["version"], cards[::-1], v["issued"])
        assert built == data
        sizes.add(len(cards))
    assert {0, 1} <= sizes and max(sizes) >= 50


@pytest.mark.parametrize("v", WL["invalid"], ids=lambda v: v["why"])
def test_whitelist_invalid_vectors(v):
    with pytest.raises(FormatError) as e:
        parse_whitelist(WL_KEY, bytes.fromhex(v["hex"]), WL["reader_id"], WL["building_id"], v["held_version"])
    assert e.value.reason == v["reason"]
    assert_clean_message(e.value, WL_KEY)


def test_whitelist_ids_above_2_63_sort_unsigned():
    big = [c for c in cards_of(WL["valid"][2]["cards"])]
    ids = [c.card_id for c in big]
    assert ids == sorted(ids) and ids[-1] == U64 and 2**63 in ids and 2**63 - 1 in ids


def test_build_whitelist_refuses_duplicates():
    with pytest.raises(FormatError) as e:
        build_whitelist(WL_KEY, 1, 1, 1, [CardRecord(5), CardRecord(5, household=1)])
    assert e.value.reason == "order"


DL = load("delta.json")
DL_KEY = bytes.fromhex(DL["key"])


def _ops_from_json(ops):
    out = []
    for o in ops:
        if o["op"] == "upsert":
            out.append(("upsert", CardRecord.from_fields(o["card"])))
        else:
            out.append(("remove", int(o["card_id"], 16)))
    return out


def test_delta_valid_vectors():
    base = parse_whitelist(DL_KEY, bytes.fromhex(DL["base"]["hex"]), DL["reader_id"], DL["building_id"])
    assert base.version == DL["base"]["version"] and base.cards == cards_of(DL["base"]["cards"])
    cards, held = base.cards, base.version
    assert len(DL["valid"]) >= 2
    for v in DL["valid"]:
        data = bytes.fromhex(v["hex"])
        assert v["held_version"] == held
        d = parse_delta(DL_KEY, data, DL["reader_id"], DL["building_id"], held)
        ops = _ops_from_json(v["ops"])
        assert (d.base_version, d.new_version, d.ops) == (v["base_version"], v["new_version"], ops)
        assert len(data) == 24 + 17 * len(ops) + 16
        assert (
            build_delta(DL_KEY, DL["reader_id"], DL["building_id"], v["base_version"], v["new_version"], ops[::-1])
            == data
        )
        after = apply_ops(cards, d.ops)
        assert after == cards_of(v["cards_after"])
        # These deltas are minimal, so the diff of the two lists gives them back.
        assert diff_whitelists(cards, after) == ops
        cards, held = after, d.new_version
    kinds = [[o["op"] for o in v["ops"]] for v in DL["valid"]]
    assert kinds[0] == ["upsert"] and sorted(kinds[1]) == ["remove", "upsert", "upsert"]


@pytest.mark.parametrize("v", DL["invalid"], ids=lambda v: v["why"])
def test_delta_invalid_vectors(v):
    with pytest.raises(FormatError) as e:
        parse_delta(DL_KEY, bytes.fromhex(v["hex"]), DL["reader_id"], DL["building_id"], v["held_version"])
    assert e.value.reason == v["reason"]
    assert_clean_message(e.value, DL_KEY)


def test_one_changed_card_costs_57_bytes():
    data = build_delta(DL_KEY, 1, 1, 1, 2, [("upsert", CardRecord(7))])
    assert len(data) == 57


def test_overlay_is_a_separate_domain():
    ops = [("remove", 9)]
    ov = build_overlay(DL_KEY, 1, 2, 5, 8, ops)
    assert parse_overlay(DL_KEY, ov, 1, 2, base_list_version=5).ops == ops
    with pytest.raises(FormatError) as e:
        parse_overlay(DL_KEY, ov, 1, 2, base_list_version=6)
    assert e.value.reason == "stale"
    with pytest.raises(FormatError) as e:
        parse_delta(DL_KEY, ov, 1, 2)
    assert e.value.reason == "magic"


RR = load("ride_record.json")


def test_ride_record_vectors():
    for v in RR["valid"]:
        rec = RideRecord.from_fields(v["fields"])
        assert rec.pack().hex() == v["hex"]
        assert RideRecord.unpack(bytes.fromhex(v["hex"])) == rec
        assert rec.to_fields() == v["fields"]
        assert not is_empty_slot(bytes.fromhex(v["hex"]))
    for v in RR["invalid"]:
        with pytest.raises(FormatError) as e:
            RideRecord.unpack(bytes.fromhex(v["hex"]))
        assert e.value.reason == v["reason"], v["why"]
    empty = bytes.fromhex(RR["empty"])
    assert empty == b"\xff" * 32 and is_empty_slot(empty)
    with pytest.raises(FormatError) as e:
        RideRecord.unpack(empty)
    assert e.value.reason == "empty"
    assert any("torn" in v["why"] for v in RR["invalid"])


CF = load("config.json")


@pytest.mark.parametrize("cfg", CF["valid"], ids=lambda c: "reader%d" % c["reader_id"])
def test_config_valid_vectors(cfg):
    out = validate_config(cfg)
    assert out["key"] == cfg["key"].lower()
    for k, default in CONFIG_DEFAULTS.items():
        assert out[k] == cfg.get(k, default)
    assert validate_config(out) == out  # normalising twice changes nothing
    assert len(config_key(out)) == 32


@pytest.mark.parametrize("v", CF["invalid"], ids=lambda v: v["key"])
def test_config_invalid_vectors(v):
    with pytest.raises(ConfigError) as e:
        validate_config(v["config"])
    assert e.value.key == v["key"]
    msg = str(e.value)
    assert v["key"] in msg and "\n" not in msg
    key = v["config"].get("key")
    if isinstance(key, str) and len(key) > 8:
        assert key.lower() not in msg.lower()


def test_config_vectors_cover_every_rule():
    keys = {v["key"] for v in CF["invalid"]}
    assert keys >= {
        "reader_id",
        "building_id",
        "floors",
        "ground_floor",
        "key",
        "tariff.fee_fen",
        "tariff.free_classes",
        "tariff.monthly_cap_fen",
        "tariff.debounce_s",
        "legacy_uid",
        "relay_ms",
        "utc_offset_min",
    }
    # The defaults are exercised by a valid config that omits them.
    assert any(not set(CONFIG_DEFAULTS) & set(c) for c in CF["valid"])


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, U64)
keys = st.binary(min_size=32, max_size=32)

cards = st.builds(
    CardRecord,
    card_id=u64,
    household=u24,
    floors=u16,
    status=st.integers(0, 3),
    klass=st.integers(0, 3),
    valid_until=u16,
)
card_lists = st.lists(cards, max_size=12, unique_by=lambda c: c.card_id)


@st.composite
def delta_ops(draw, max_size=10):
    ids = draw(st.lists(u64, max_size=max_size, unique=True))
    ops = []
    for cid in ids:
        if draw(st.booleans()):
            ops.append(
                (
                    "upsert",
                    draw(
                        cards.map(
                            lambda c, cid=cid: CardRecord(cid, c.household, c.floors, c.status, c.klass, c.valid_until)
                        )
                    ),
                )
            )
        else:
            ops.append(("remove", cid))
    return ops


rides = st.builds(
    RideRecord,
    seq=u32,
    time=u32,
    uptime=u32,
    card_id=u64,
    household=u24,
    floor=u8,
    fee=u16,
    result=u8,
    flags=u8,
    boot=u16,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(cards)
def test_card_record_roundtrip(c):
    b = c.pack()
    assert len(b) == 16 and CardRecord.unpack(b) == c
    assert CardRecord.from_fields(c.to_fields()) == c


@FAST
@given(keys, card_lists, u32, u32, u32, u32)
def test_whitelist_roundtrip(key, cs, reader, building, version, issued):
    data = build_whitelist(key, reader, building, version, cs, issued)
    assert len(data) == 48 + 16 * len(cs)
    wl = parse_whitelist(key, data, reader, building)
    assert wl == Whitelist(reader, building, version, issued, sorted(cs, key=lambda c: c.card_id))


def _corruptions(draw, data: bytes):
    """A one-byte change anywhere, a truncation, or an extension."""
    kind = draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        i = draw(st.integers(0, len(data) - 1))
        x = draw(st.integers(1, 255))
        out = bytearray(data)
        out[i] ^= x
        return bytes(out)
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    return data + draw(st.binary(min_size=1, max_size=20))


@FAST
@given(st.data(), keys, card_lists, u32)
def test_whitelist_any_corruption_is_refused(data, key, cs, version):
    good = build_whitelist(key, 1017, 12, version, cs)
    bad = _corruptions(data.draw, good)
    with pytest.raises(FormatError) as e:
        parse_whitelist(key, bad, 1017, 12)
    assert_clean_message(e.value, key)


@FAST
@given(keys, delta_ops(), u32, st.integers(1, 1000), u32, u32)
def test_delta_roundtrip(key, ops, base, step, reader, building):
    assume(base + step <= 0xFFFFFFFF)
    data = build_delta(key, reader, building, base, base + step, ops)
    assert len(data) == 24 + 17 * len(ops) + 16
    d = parse_delta(key, data, reader, building, held_version=base)
    assert (d.base_version, d.new_version) == (base, base + step)
    assert d.ops == sorted(ops, key=lambda o: o[1].card_id if o[0] == "upsert" else o[1])


@FAST
@given(st.data(), keys, delta_ops())
def test_delta_any_corruption_is_refused(data, key, ops):
    good = build_delta(key, 1017, 12, 5, 6, ops)
    bad = _corruptions(data.draw, good)
    with pytest.raises(FormatError) as e:
        parse_delta(key, bad, 1017, 12, held_version=5)
    assert_clean_message(e.value, key)


@FAST
@given(keys, delta_ops(), st.integers(0, 100), st.integers(0, 100), st.integers(1, 5))
def test_delta_version_checks(key, ops, held, base, step):
    data = build_delta(key, 1, 1, base, base + step, ops)
    if base + step <= held:
        want = "stale"
    elif base != held:
        want = "gap"
    else:
        want = None
    if want is None:
        parse_delta(key, data, 1, 1, held)
    else:
        with pytest.raises(FormatError) as e:
            parse_delta(key, data, 1, 1, held)
        assert e.value.reason == want


@FAST
@given(keys, keys, card_lists)
def test_wrong_key_is_refused_without_leaking_either_key(key, other, cs):
    assume(key != other)
    with pytest.raises(FormatError) as e:
        parse_whitelist(other, build_whitelist(key, 1, 1, 1, cs))
    assert e.value.reason == "mac"
    assert_clean_message(e.value, key)
    assert_clean_message(e.value, other)


@st.composite
def old_and_new(draw):
    pool = draw(st.lists(u64, max_size=16, unique=True))
    old = [
        CardRecord(cid, *draw(st.tuples(u24, u16, st.integers(0, 3), st.integers(0, 3), u16)))
        for cid in pool
        if draw(st.booleans())
    ]
    new = []
    for cid in pool:
        choice = draw(st.sampled_from(["absent", "same", "changed"]))
        prev = next((c for c in old if c.card_id == cid), None)
        if choice == "same" and prev is not None:
            new.append(prev)
        elif choice != "absent":
            new.append(CardRecord(cid, *draw(st.tuples(u24, u16, st.integers(0, 3), st.integers(0, 3), u16))))
    return old, draw(st.permutations(new))


@FAST
@given(old_and_new())
def test_diff_whitelists_applied_to_old_gives_new(pair):
    old, new = pair
    ops = diff_whitelists(old, new)
    assert apply_ops(old, ops) == sorted(new, key=lambda c: c.card_id)
    # Minimal: one operation per card that differs, none for unchanged cards.
    old_by, new_by = {c.card_id: c for c in old}, {c.card_id: c for c in new}
    changed = {cid for cid in old_by.keys() | new_by.keys() if old_by.get(cid) != new_by.get(cid)}
    assert [op_id(o) for o in ops] == sorted(changed)
    # And it always encodes as a valid delta.
    key = bytes(32)
    parse_delta(key, build_delta(key, 1, 1, 1, 2, ops), 1, 1, 1)


@FAST
@given(rides)
def test_ride_record_roundtrip(r):
    b = r.pack()
    assert len(b) == 32 and RideRecord.unpack(b) == r and not is_empty_slot(b)


@FAST
@given(st.data(), rides)
def test_ride_record_any_corruption_is_refused(data, r):
    bad = _corruptions(data.draw, r.pack())
    with pytest.raises(FormatError) as e:
        RideRecord.unpack(bad)
    assert e.value.reason in ("crc", "size")


@FAST
@given(rides, st.integers(1, 31))
def test_torn_ride_record_is_refused(r, programmed):
    torn = r.pack()[:programmed] + b"\xff" * (32 - programmed)
    assume(torn != r.pack())
    with pytest.raises(FormatError) as e:
        RideRecord.unpack(torn)
    assert e.value.reason in ("crc", "empty")


@FAST
@given(u32, u32, st.dictionaries(u24, u32, max_size=20))
def test_spend_checkpoint_roundtrip(month, last_seq, spent):
    cp = SpendCheckpoint(month, last_seq, spent)
    b = cp.pack()
    assert len(b) == 14 + 8 * len(spent) + 2 and b[:4] == b"LCSP"
    assert SpendCheckpoint.unpack(b) == cp


@FAST
@given(st.data(), u32, st.dictionaries(u24, u32, max_size=10))
def test_spend_checkpoint_corruption_is_refused(data, last_seq, spent):
    good = SpendCheckpoint(202611, last_seq, spent).pack()
    with pytest.raises(FormatError):
        SpendCheckpoint.unpack(_corruptions(data.draw, good))


@FAST
@given(u32)
def test_ack_entry_roundtrip(value):
    b = pack_ack(value)
    assert len(b) == 8 and unpack_ack(b) == (0x41, value)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(-720, 840))
def test_local_day_and_month_key_match_the_calendar(epoch_s, offset):
    tz = datetime.timezone(datetime.timedelta(minutes=offset))
    local = datetime.datetime.fromtimestamp(epoch_s + LIFTCARD_EPOCH, tz).date()
    assert local_day(epoch_s, offset) == (local - datetime.date(2024, 1, 1)).days
    assert month_key(epoch_s, offset) == local.year * 100 + local.month


@st.composite
def broken_configs(draw):
    """A valid config with one key set to a value its rule refuses."""
    cfg = vectors.base_config()
    cfg["key"] = draw(keys).hex()
    path, bad = draw(
        st.sampled_from(
            [
                (
                    "reader_id",
                    st.one_of(st.integers(max_value=0), st.integers(min_value=2**30), st.text(), st.booleans()),
                ),
                ("floors", st.one_of(st.integers(max_value=1), st.integers(min_value=17))),
                ("key", st.text(max_size=70).filter(lambda s: len(s) != 64)),
                (
                    "key",
                    st.text(alphabet="0123456789abcdefxyz+ -", min_size=64, max_size=64).filter(
                        lambda s: not set(s) <= set("0123456789abcdef")
                    ),
                ),
                ("tariff.monthly_cap_fen", st.one_of(st.integers(max_value=-1), st.integers(min_value=10**7 + 1))),
                ("tariff.debounce_s", st.one_of(st.integers(max_value=-1), st.integers(min_value=3601), st.floats())),
                ("relay_ms", st.one_of(st.integers(max_value=99), st.integers(min_value=60001))),
                ("utc_offset_min", st.one_of(st.integers(max_value=-721), st.integers(min_value=841))),
            ]
        )
    )
    value = draw(bad)
    if path.startswith("tariff."):
        cfg["tariff"][path.split(".")[1]] = value
    else:
        cfg[path] = value
    return path, cfg


@FAST
@given(broken_configs())
def test_config_errors_name_the_key_and_never_leak_it(case):
    path, cfg = case
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert e.value.key == path and path in str(e.value) and "\n" not in str(e.value)
    if path != "key":
        assert cfg["key"] not in str(e.value)
    elif isinstance(cfg["key"], str) and cfg["key"]:
        assert repr(cfg["key"]) not in str(e.value)
