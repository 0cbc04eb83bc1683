"""The link payload codec (liftcard_protocol.link, docs/uplink.md) against the
shared vectors in tests/vectors/uplink.jsonl and against properties over
arbitrary valid inputs: round trips, any changed byte refused, replays refused,
card ids never in clear."""

import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftcard_testing.paths import VECTORS
from liftcard_protocol.delta import parse_delta
from liftcard_protocol.whitelist import parse_whitelist
from liftcard_protocol import link as U
from liftcard_protocol.errors import FormatError
from liftcard_protocol.ride import RideRecord
from liftcard_tools import vectors

V = vectors.load("uplink.jsonl", VECTORS)
KEY = bytes.fromhex(V["key"])
RID = V["reader_id"]
BID = V["building_id"]
KEYS = U.LinkKeys(KEY)


# ---------------------------------------------------------------------------
# The vector file
# ---------------------------------------------------------------------------


def test_vector_file_is_fresh():
    assert (VECTORS / "uplink.jsonl").read_text() == vectors.render(vectors.gen_uplink())


def test_key_derivation():
    assert KEYS.enc.hex() == V["enc_key"] and len(KEYS.enc) == 16
    assert KEYS.mac.hex() == V["mac_key"] and len(KEYS.mac) == 32
    assert KEYS.enc == hmac.new(KEY, b"liftcard uplink enc", hashlib.sha256).digest()[:16]
    # Domain separation: the link MAC key is not the reader key, so no
    # whitelist MAC can ever pass as a link MAC.
    assert KEYS.mac != KEY and KEYS.enc not in KEY
    assert "secret" in repr(KEYS) and KEY.hex() not in repr(KEYS)


def test_vector_coverage():
    kinds = {(v["kind"], v["direction"]) for v in V["valid"]}
    assert kinds == {
        ("rides", "up"),
        ("status", "up"),
        ("sunctr_up", "up"),
        ("ack", "down"),
        ("time", "down"),
        ("delta", "down"),
        ("whitelist", "down"),
        ("sunctr_down", "down"),
        ("resend", "down"),
    }
    for d in ("up", "down"):
        assert {v["reason"] for v in V["invalid"] if v["direction"] == d} == set(U.REASONS), d
    assert max(len(v["fields"].get("records", [])) for v in V["valid"]) == U.MAX_RIDES == V["max_rides"]


def _fields_of(m: U.Message) -> dict:
    if m.kind == U.RIDES:
        return {"records": [r.pack().hex() for r in m.rides]}
    if m.kind == U.STATUS:
        return m.status.to_fields()
    if m.kind == U.ACK:
        return {"seq": m.seq}
    if m.kind == U.TIME:
        return {"epoch_s": m.epoch_s}
    if m.kind == U.RESEND:
        return {"from_seq": m.from_seq}
    if m.kind == U.DELTA:
        return {"blob": m.blob.hex()}
    if m.kind in (U.SUNCTR_UP, U.SUNCTR_DOWN):
        return {"entries": [["%016x" % c, n] for c, n in m.sun]}
    c = m.chunk
    return {"version": c.version, "total": c.total, "offset": c.offset, "data": c.data.hex()}


@pytest.mark.parametrize("v", V["valid"], ids=lambda v: v["why"])
def test_valid_vectors(v):
    data = bytes.fromhex(v["hex"])
    m = U.parse(KEY, data, RID, BID, v["direction"], v["last_counter"])
    assert U.KIND_NAMES[m.kind] == v["kind"]
    assert (m.reader_id, m.building_id, m.counter) == (RID, BID, v["counter"])
    assert _fields_of(m) == v["fields"]
    assert U.parse_header(data) == (m.kind, RID, BID, v["counter"])
    # The builder gives the same bytes (deterministic: no random IV).
    f = v["fields"]
    args = (KEYS, RID, BID, v["counter"])
    rebuilt = {
        "rides": lambda: U.build_rides(*args, [bytes.fromhex(h) for h in f.get("records", [])]),
        "status": lambda: U.build_status(*args, U.ReaderStatus(**f)),
        "ack": lambda: U.build_ack(*args, f["seq"]),
        "time": lambda: U.build_time(*args, f["epoch_s"]),
        "resend": lambda: U.build_resend(*args, f["from_seq"]),
        "delta": lambda: U.build_delta(*args, bytes.fromhex(f["blob"])),
        "whitelist": lambda: U.build_whitelist_chunk(
            *args, f["version"], f["total"], f["offset"], bytes.fromhex(f["data"])
        ),
        "sunctr_up": lambda: U.build_sunctr(*args, [(int(c, 16), n) for c, n in f.get("entries", [])]),
        "sunctr_down": lambda: U.build_sunctr(*args, [(int(c, 16), n) for c, n in f.get("entries", [])], down=True),
    }[v["kind"]]()
    assert rebuilt == data
    # The inner blobs are the formats.md structures, whole and verifiable.
    if v["kind"] == "delta":
        parse_delta(KEY, m.blob, RID, BID, 5)
    # The same message again is a replay; to the other direction, a kind error.
    with pytest.raises(FormatError) as e:
        U.parse(KEY, data, RID, BID, v["direction"], v["counter"])
    assert e.value.reason == "replay"
    other = "down" if v["direction"] == "up" else "up"
    with pytest.raises(FormatError) as e:
        U.parse(KEY, data, RID, BID, other)
    assert e.value.reason == "kind"


def test_whitelist_chunks_assemble():
    chunks = [v for v in V["valid"] if v["kind"] == "whitelist"]
    assert len(chunks) >= 2
    total = chunks[0]["fields"]["total"]
    buf = bytearray(total)
    for v in chunks:
        c = U.parse(KEY, bytes.fromhex(v["hex"]), RID, BID, "down").chunk
        buf[c.offset : c.offset + len(c.data)] = c.data
    wl = parse_whitelist(KEY, bytes(buf), RID, BID)
    assert wl.version == chunks[0]["fields"]["version"] and wl.count == 5


@pytest.mark.parametrize("v", V["invalid"], ids=lambda v: v["why"])
def test_invalid_vectors(v):
    data = bytes.fromhex(v["hex"])
    with pytest.raises(FormatError) as e:
        U.parse(KEY, data, RID, BID, v["direction"], v["last_counter"])
    assert e.value.reason == v["reason"], v["why"]
    assert e.value.reason in U.REASONS
    _clean(e.value)


def test_oversized_refused():
    big = bytes.fromhex(V["valid"][0]["hex"])
    big += bytes(U.MAX_MSG + 1 - len(big))
    with pytest.raises(FormatError) as e:
        U.parse(KEY, big, RID, BID, "up")
    assert e.value.reason == "size"


def test_build_refuses_bad_input():
    rec = RideRecord(1, 2, 3, 4, 5, 6, 7, 0, 0, 1)
    with pytest.raises(FormatError) as e:
        U.build_rides(KEY, RID, BID, 1, [rec] * 33)
    assert e.value.reason == "size"
    with pytest.raises(FormatError):
        U.build_rides(KEY, RID, BID, 1, [rec.pack()[:31]])
    with pytest.raises(FormatError):
        U.build_ack(KEY, RID, BID, 2**64, 1)
    with pytest.raises(FormatError):
        U.build_delta(KEY, RID, BID, 1, bytes(39))
    with pytest.raises(FormatError):
        U.build_whitelist_chunk(KEY, RID, BID, 1, 1, 48, 40, bytes(9))
    with pytest.raises(FormatError):
        U.ReaderStatus(1, 2, 3, 4, flags=0x04)
    with pytest.raises(ValueError):
        U.LinkKeys(KEY[:31])
    with pytest.raises(ValueError):
        U.parse(KEY, bytes.fromhex(V["valid"][0]["hex"]), direction="sideways")


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
keys = st.binary(min_size=32, max_size=32)
rides = st.builds(RideRecord, u32, u32, u32, u64, st.integers(0, 0xFFFFFF), u8, u16, u8, u8, u16)
batches = st.lists(rides, min_size=0, max_size=U.MAX_RIDES)
statuses = st.builds(U.ReaderStatus, u32, u32, u32, u32, u32, u8, st.sampled_from([0, 1, 2, 3]), u16, u32)


def _clean(err, secrets=()):
    msg = str(err)
    assert msg and "\n" not in msg
    for s in secrets:
        assert s not in msg.lower()


@FAST
@given(keys, batches, u64, st.integers(1, 2**30 - 1), st.integers(1, 2**30 - 1))
def test_rides_round_trip(key, recs, counter, rid, bid):
    data = U.build_rides(key, rid, bid, counter, recs)
    assert len(data) == U.HEADER_LEN + 32 * len(recs) + U.MAC_LEN
    m = U.parse(key, data, rid, bid, "up", counter - 1 if counter else None)
    assert m.rides == tuple(recs) and m.counter == counter
    # Neither the repr nor anything else shows a card id.
    for r in recs:
        assert ("%016x" % r.card_id) not in repr(m)


@FAST
@given(keys, statuses, u64)
def test_status_round_trip(key, status, counter):
    m = U.parse(key, U.build_status(key, RID, BID, counter, status), RID, BID, "up")
    assert m.status == status
    assert m.status.time == status.time


@FAST
@given(u32)
def test_status_carries_the_reader_clock_at_bytes_24_to_28(t):
    st_ = U.ReaderStatus(1, 2, 3, 4, 5, 6, U.ST_CLOCK_SYNCED, 8, t)
    body = st_.pack()
    assert U.STATUS_LEN == 28 and len(body) == 28
    assert body[24:28] == t.to_bytes(4, "big") and body[:24] == U.ReaderStatus(1, 2, 3, 4, 5, 6, 1, 8).pack()[:24]
    assert len(U.build_status(KEY, RID, BID, 1, st_)) == 68
    assert st_.to_fields()["time"] == t


def test_status_time_out_of_range_and_old_24_byte_body_refused():
    with pytest.raises(FormatError) as e:
        U.ReaderStatus(1, 2, 3, 4, time=2**32)
    assert "time" in str(e.value)
    old = U.ReaderStatus(1, 2, 3, 4).pack()[:24]
    with pytest.raises(FormatError) as e:
        U.parse(KEY, U.seal(KEY, U.STATUS, RID, BID, 9, old), RID, BID, "up")
    assert e.value.reason == "size"


@FAST
@given(keys, u64, u32, u32, st.binary(min_size=U.MIN_DELTA, max_size=300))
def test_down_round_trip(key, counter, seq, epoch, blob):
    assert U.parse(key, U.build_ack(key, RID, BID, counter, seq), RID, BID, "down").seq == seq
    assert U.parse(key, U.build_time(key, RID, BID, counter, epoch), RID, BID, "down").epoch_s == epoch
    assert U.parse(key, U.build_delta(key, RID, BID, counter, blob), RID, BID, "down").blob == blob


@FAST
@given(st.data(), keys, batches.filter(lambda b: len(b) > 0), u64)
def test_any_changed_byte_refused(data, key, recs, counter):
    msg = U.build_rides(key, RID, BID, counter, recs)
    i = data.draw(st.integers(0, len(msg) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    bad = bytearray(msg)
    bad[i] ^= mask
    with pytest.raises(FormatError) as e:
        U.parse(key, bytes(bad), RID, BID, "up")
    # Magic and version are looked at before the MAC; everything else is the MAC.
    want = "magic" if i < 4 else "version" if i == 4 else "mac"
    assert e.value.reason == want
    _clean(e.value, [key.hex()] + ["%016x" % r.card_id for r in recs])


@FAST
@given(st.data(), keys, batches.filter(lambda b: len(b) > 0), u64)
def test_truncated_or_extended_refused(data, key, recs, counter):
    msg = U.build_rides(key, RID, BID, counter, recs)
    cut = data.draw(st.integers(0, len(msg) - 1), label="cut")
    with pytest.raises(FormatError) as e:
        U.parse(key, msg[:cut], RID, BID, "up")
    assert e.value.reason in ("size", "magic", "version", "mac")
    with pytest.raises(FormatError):
        U.parse(key, msg + data.draw(st.binary(min_size=1, max_size=40), label="tail"), RID, BID, "up")


@FAST
@given(keys, u64, u64)
def test_counters_not_greater_refused(key, counter, last):
    msg = U.build_ack(key, RID, BID, counter, 1)
    if counter <= last:
        with pytest.raises(FormatError) as e:
            U.parse(key, msg, RID, BID, "down", last)
        assert e.value.reason == "replay"
    else:
        assert U.parse(key, msg, RID, BID, "down", last).seq == 1


@FAST
@given(st.lists(st.tuples(u32, u32), min_size=1, max_size=20))
def test_replay_guard(seq_of_counters):
    g = U.ReplayGuard()
    best = 0
    for boot, n in seq_of_counters:
        c = U.counter_of(boot, n)
        if c > best:
            g.accept(RID, c)
            best = c
        else:
            with pytest.raises(FormatError) as e:
                g.accept(RID, c)
            assert e.value.reason == "replay"
        assert g.last(RID) == best
    assert U.ReplayGuard(g.state()).last(RID) == best
    assert g.last(RID + 1) == 0


def test_replay_guard_open_and_reboot():
    g = U.ReplayGuard()
    first = bytes.fromhex(V["valid"][0]["hex"])
    m = g.open(KEY, first, RID, BID)
    g.accept(m.reader_id, m.counter)
    with pytest.raises(FormatError) as e:
        g.open(KEY, first, RID, BID)
    assert e.value.reason == "replay"
    # After the reader reboots (boot count + 1), its message number restarts
    # at 1 and is still newer than anything before.
    nxt = U.build_rides(KEY, RID, BID, U.counter_of((m.counter >> 32) + 1, 1), [])
    assert g.open(KEY, nxt, RID, BID).counter > m.counter


@FAST
@given(keys, batches.filter(lambda b: len(b) > 0), u64)
def test_card_ids_not_in_clear(key, recs, counter):
    msg = U.build_rides(key, RID, BID, counter, recs)
    body = msg[U.HEADER_LEN : -U.MAC_LEN]
    for r in recs:
        cid = r.card_id.to_bytes(8, "big")
        # The ciphertext is the plaintext XOR a keystream that depends on the
        # key, the counter and the kind; a card id can only show up by chance.
        assert body.find(cid) < 0
    assert body != b"".join(r.pack() for r in recs)


def test_card_ids_not_in_clear_vectors():
    for v in V["valid"]:
        if v["kind"] != "rides":
            continue
        msg = bytes.fromhex(v["hex"])
        for h in v["fields"]["records"]:
            assert bytes.fromhex(h)[12:20] not in msg


def test_keystream_differs_per_counter_and_direction():
    # Same key, same plaintext: a new counter, or the other direction's kind
    # with the same counter, gives another keystream (no CTR reuse).
    body = bytes(4)
    a = U.seal(KEYS, U.ACK, RID, BID, 7, body)
    b = U.seal(KEYS, U.ACK, RID, BID, 8, body)
    c = U.seal(KEYS, U.STATUS, RID, BID, 7, body)
    ct = lambda m: m[U.HEADER_LEN : -U.MAC_LEN]  # noqa: E731
    assert len({ct(a), ct(b), ct(c)}) == 3


def test_repr_hides_content():
    recs = [RideRecord(5, 6, 7, 0x1122334455667788, 9, 1, 2, 0, 0, 1)]
    m = U.parse(KEY, U.build_rides(KEY, RID, BID, 1, recs), RID, BID, "up")
    assert "1122334455667788" not in repr(m) and str(0x1122334455667788) not in repr(m)
    d = [v for v in V["valid"] if v["kind"] == "delta"][0]
    md = U.parse(KEY, bytes.fromhex(d["hex"]), RID, BID, "down")
    assert d["fields"]["blob"][:32] not in repr(md) and "bytes" in repr(md)
    w = [v for v in V["valid"] if v["kind"] == "whitelist"][0]
    mw = U.parse(KEY, bytes.fromhex(w["hex"]), RID, BID, "down")
    assert w["fields"]["data"][:32] not in repr(mw)


# ---------------------------------------------------------------------------
# SUNCTR (NTAG 424 SUN counters shared through the gateway)
# ---------------------------------------------------------------------------

sun_entries = st.lists(st.tuples(u64, st.integers(0, 0xFFFFFF)), min_size=1, max_size=U.MAX_SUN)


@FAST
@given(keys, sun_entries, u64, st.booleans())
def test_sunctr_round_trip(key, ents, counter, down):
    data = U.build_sunctr(key, RID, BID, counter, ents, down=down)
    assert len(data) == U.HEADER_LEN + 11 * len(ents) + U.MAC_LEN
    m = U.parse(key, data, RID, BID, "down" if down else "up")
    assert m.kind == (U.SUNCTR_DOWN if down else U.SUNCTR_UP) and m.sun == tuple(ents)
    for c, _ in ents:  # card ids never in clear, nor in the repr
        if c >= 2**40 and c != U.U64:  # enough entropy that a chance match in the ciphertext is out
            assert c.to_bytes(8, "big") not in data[U.HEADER_LEN : -U.MAC_LEN]
        assert ("%016x" % c) not in repr(m)


def test_sunctr_bad_sizes_and_values_refused():
    for n in (0, 65):
        with pytest.raises(FormatError) as e:
            U.build_sunctr(KEY, RID, BID, 1, [(1, 1)] * n)
        assert e.value.reason == "size"
    with pytest.raises(FormatError) as e:
        U.build_sunctr(KEY, RID, BID, 1, [(1, 0x1000000)])
    assert e.value.reason == "field"
    with pytest.raises(FormatError) as e:
        U.build_sunctr(KEY, RID, BID, 1, [(2**64, 1)])
    assert e.value.reason == "field"
    body = U.sun_body([(1, 2), (3, 4)])
    for kind, d in ((U.SUNCTR_UP, "up"), (U.SUNCTR_DOWN, "down")):
        for bad in (b"", body[:-1], body + b"\0", body * 32 + body[:11]):
            with pytest.raises(FormatError) as e:
                U.parse(KEY, U.seal(KEY, kind, RID, BID, 5, bad), RID, BID, d)
            assert e.value.reason == "size", (d, len(bad))
    assert U.sun_batches(range(130)) == [list(range(64)), list(range(64, 128)), [128, 129]]
