"""The heartbeat (STATUS, docs/uplink.md) carries the reader's Wi-Fi signal,
its firmware version and how many cards its whitelist can hold (44 bytes);
the gateway still reads the 28- and 36-byte bodies of older firmware, with
those fields unknown (None)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liftcard_protocol import link as U
from liftcard_protocol.errors import FormatError

KEY = bytes(range(32))
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u8 = st.integers(min_value=0, max_value=255)

statuses = st.builds(
    U.ReaderStatus,
    uptime=u32,
    free_heap=u32,
    backlog=u32,
    wl_version=u32,
    unrecorded=u32,
    last_error=u8,
    flags=st.sampled_from([0, U.ST_CLOCK_SYNCED, U.ST_LOG_FULL, U.ST_FLAGS]),
    boot=st.integers(min_value=0, max_value=0xFFFF),
    time=u32,
    acked_seq=u32,
    oldest_seq=u32,
    rssi=st.integers(min_value=-128, max_value=127),
    fw_version=st.tuples(u8, u8, u8),
    wl_capacity=u32,
)


@given(statuses)
def test_the_44_byte_heartbeat_round_trips(s):
    body = s.pack()
    assert len(body) == U.STATUS_DEVICE_LEN == 44
    assert U.ReaderStatus.unpack(body) == s
    msg = U.build_status(KEY, 7, 12, U.counter_of(1, 1), s)
    got = U.parse(KEY, msg, 7, 12, U.UP).status
    assert got == s and got.to_fields() == s.to_fields()
    assert got.to_fields()["fw_version"] == list(s.fw_version)


@given(statuses)
def test_older_bodies_are_read_with_the_new_fields_unknown(s):
    full = s.pack()
    old36 = U.ReaderStatus.unpack(full[:36])
    assert (old36.acked_seq, old36.oldest_seq) == (s.acked_seq, s.oldest_seq)
    assert (old36.rssi, old36.fw_version, old36.wl_capacity, old36.firmware) == (None, None, None, None)
    old28 = U.ReaderStatus.unpack(full[:28])
    assert (old28.acked_seq, old28.rssi, old28.fw_version, old28.wl_capacity) == (None, None, None, None)
    assert old28.backlog == s.backlog and old28.time == s.time
    assert "rssi" not in old36.to_fields() and "wl_capacity" not in old28.to_fields()


@pytest.mark.parametrize("n", [0, 27, 29, 32, 35, 37, 40, 43, 45, 48])
def test_other_lengths_are_refused(n):
    with pytest.raises(FormatError) as e:
        U.ReaderStatus.unpack(bytes(n))
    assert e.value.reason == U.R_SIZE and "28, 36 or 44 bytes" in str(e.value)


def test_the_signal_is_signed_and_the_version_reads_as_text():
    s = U.ReaderStatus(1, 2, 3, 4, acked_seq=5, oldest_seq=6, rssi=-67, fw_version=(0, 1, 0), wl_capacity=36279)
    body = s.pack()
    assert body[36:] == bytes([0xBD, 0, 1, 0]) + (36279).to_bytes(4, "big")  # -67 as an i8
    assert U.ReaderStatus.unpack(body).firmware == "0.1.0"
    unknown = U.ReaderStatus(1, 2, 3, 4, acked_seq=5, oldest_seq=6, rssi=0, fw_version=(0, 0, 0), wl_capacity=0)
    assert unknown.firmware is None


@pytest.mark.parametrize(
    "kw",
    [
        dict(rssi=-67),  # one without the other two
        dict(rssi=-67, fw_version=(0, 1, 0)),
        dict(acked_seq=None, oldest_seq=None, rssi=-67, fw_version=(0, 1, 0), wl_capacity=1),  # without the seqs
        dict(rssi=128, fw_version=(0, 1, 0), wl_capacity=1),
        dict(rssi=-129, fw_version=(0, 1, 0), wl_capacity=1),
        dict(rssi=True, fw_version=(0, 1, 0), wl_capacity=1),
        dict(rssi=0, fw_version=(0, 1), wl_capacity=1),
        dict(rssi=0, fw_version=(0, 256, 0), wl_capacity=1),
        dict(rssi=0, fw_version=(0, 1, 0), wl_capacity=2**32),
        dict(rssi=0, fw_version=(0, 1, 0), wl_capacity=-1),
    ],
)
def test_bad_device_fields_are_refused(kw):
    args = dict(acked_seq=5, oldest_seq=6)
    args.update(kw)
    with pytest.raises(FormatError) as e:
        U.ReaderStatus(1, 2, 3, 4, **args)
    assert e.value.reason == U.R_FIELD


def test_the_shared_vectors_carry_the_44_byte_heartbeat():
    from liftcard_tools.vectors import load

    v = load("uplink.jsonl")
    full = [x for x in v["valid"] if x["kind"] == "status" and "wl_capacity" in x["fields"]]
    assert len(full) >= 2
    for x in full:
        m = U.parse(bytes.fromhex(v["key"]), bytes.fromhex(x["hex"]), v["reader_id"], v["building_id"], U.UP)
        assert m.status.to_fields() == x["fields"]
    assert {x["fields"]["rssi"] for x in full} >= {-67, -128}
