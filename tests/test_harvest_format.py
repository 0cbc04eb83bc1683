"""The harvest file (LCHV, docs/formats.md "Harvest file") and the host
reading of a ridelog partition image: pinned by tests/vectors/harvest.jsonl,
round-trips and corruption by hypothesis."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftcard_protocol.errors import FormatError
from liftcard_protocol.harvest import (
    DIGEST_LEN,
    HEADER_LEN,
    SECTOR,
    SOURCES,
    Harvest,
    pack_harvest,
    scan_log_image,
    unpack_harvest,
)
from liftcard_protocol.ride import RideRecord, pack_ack
from liftcard_tools import vectors

V = vectors.load("harvest.jsonl")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("case", V["valid"], ids=lambda c: "%d-records-src%d" % (len(c["records"]), c["source"]))
def test_valid_vectors(case):
    h = Harvest(
        case["reader_id"],
        case["building_id"],
        case["acked"],
        case["harvested"],
        tuple(RideRecord.from_fields(r) for r in case["records"]),
        case["source"],
    )
    assert pack_harvest(h).hex() == case["hex"]
    assert unpack_harvest(bytes.fromhex(case["hex"])) == h


@pytest.mark.parametrize("case", V["invalid"], ids=lambda c: c["why"])
def test_invalid_vectors(case):
    with pytest.raises(FormatError) as e:
        unpack_harvest(bytes.fromhex(case["hex"]))
    assert e.value.reason == case["reason"]
    assert "\n" not in str(e.value)


def test_image_vector():
    case = V["image"][0]
    img = bytearray(b"\xff" * (case["sectors"] * SECTOR))
    for s in case["programmed"]:
        img[s["offset"] : s["offset"] + 32] = bytes.fromhex(s["hex"])
    scan = scan_log_image(bytes(img))
    assert scan.acked == case["acked"] == 130
    assert [r.seq for r in scan.records] == case["seqs"] == list(range(101, 234))
    assert scan.bad_slots == case["bad_slots"] == 1


def test_an_image_of_the_wrong_size_is_refused():
    for n in (0, 5 * SECTOR, 6 * SECTOR + 32):
        with pytest.raises(FormatError) as e:
            scan_log_image(b"\xff" * n)
        assert e.value.reason == "size"


rides = st.builds(
    RideRecord,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFFFFFFFFFF),
    st.integers(0, 0xFFFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
)
harvests = st.builds(
    Harvest,
    st.integers(1, (1 << 30) - 1),
    st.integers(1, (1 << 30) - 1),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.lists(rides, max_size=20, unique_by=lambda r: r.seq).map(lambda rs: tuple(sorted(rs, key=lambda r: r.seq))),
    st.sampled_from(SOURCES),
)


@FAST
@given(harvests)
def test_round_trip(h):
    b = pack_harvest(h)
    assert len(b) == HEADER_LEN + 32 * len(h.records) + DIGEST_LEN
    assert unpack_harvest(b) == h


@FAST
@given(harvests, st.data())
def test_any_damage_is_refused(h, data):
    b = bytearray(pack_harvest(h))
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FormatError):
        unpack_harvest(bytes(b))
    cut = data.draw(st.integers(0, len(b) - 1))
    with pytest.raises(FormatError):
        unpack_harvest(pack_harvest(h)[:cut])


@FAST
@given(st.lists(rides, min_size=1, max_size=300, unique_by=lambda r: r.seq), st.integers(0, 0xFFFFFFFF))
def test_an_image_gives_back_every_valid_record(recs, acked):
    img = bytearray(b"\xff" * (8 * SECTOR))
    img[0:8] = pack_ack(acked)
    for i, r in enumerate(recs):
        off = 2 * SECTOR + 32 * i
        img[off : off + 32] = r.pack()
    scan = scan_log_image(bytes(img))
    assert scan.acked == acked
    assert scan.records == tuple(sorted(recs, key=lambda r: r.seq))
    assert scan.bad_slots == 0
