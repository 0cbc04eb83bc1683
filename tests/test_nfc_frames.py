"""PN532 frame codec (UM0701-02 6.2.1): checksums, ACK/NACK/error frames,
extended frames, resynchronisation after garbage."""

from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_provisioning.nfc import frames as Fr

h = bytes.fromhex


def pop_all(data: bytes, chunk: int = 0):
    r = Fr.FrameReader()
    out = []
    if chunk:
        for i in range(0, len(data), chunk):
            r.feed(data[i : i + chunk])
            while (f := r.pop()) is not None:
                out.append(f)
    else:
        r.feed(data)
        while (f := r.pop()) is not None:
            out.append(f)
    return out, r


def test_known_frames():
    # GetFirmwareVersion: 00 00 FF 02 FE D4 02 2A 00 (UM0701-02 example)
    assert Fr.encode(0xD4, b"\x02") == h("0000FF02FED4022A00")
    assert Fr.encode(0xD5, h("0332010607")) == h("0000FF06FAD50332010607E800")
    assert Fr.ACK == h("0000FF00FF00") and Fr.NACK == h("0000FFFF0000")
    assert Fr.ERROR_FRAME == h("0000FF01FF7F8100")
    fs, _ = pop_all(Fr.ACK + Fr.NACK + Fr.ERROR_FRAME + Fr.encode(0xD5, b"\x03\x32"))
    assert [f.kind for f in fs] == ["ack", "nack", "error", "info"]
    assert fs[3].tfi == 0xD5 and fs[3].data == b"\x03\x32"


def test_checksums_hold():
    f = Fr.encode(0xD4, bytes(range(40)))
    n = f[3]
    assert (n + f[4]) & 0xFF == 0
    assert sum(f[5 : 5 + n + 1]) & 0xFF == 0


def test_extended_frame():
    data = bytes(range(256)) * 2
    f = Fr.encode(0xD4, data)
    assert f[:5] == h("0000FFFFFF")
    lm, ll, lcs = f[5], f[6], f[7]
    assert (lm << 8 | ll) == len(data) + 1 and (lm + ll + lcs) & 0xFF == 0
    fs, _ = pop_all(f)
    assert fs[0].kind == "info" and fs[0].data == data


def test_largest_normal_frame_stays_normal():
    f = Fr.encode(0xD4, bytes(254))
    assert f[3] == 255 and f[4] == 1
    assert pop_all(f)[0][0].data == bytes(254)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4), st.integers(0, 7))
def test_round_trip_any_chunking(payloads, chunk):
    stream = b"".join(Fr.encode(0xD5, p) for p in payloads)
    fs, r = pop_all(stream, chunk)
    assert [f.data for f in fs] == payloads and r.skipped == 0


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=40).filter(lambda g: b"\x00\xff" not in g and not g.endswith(b"\x00")),
    st.binary(min_size=1, max_size=50),
)
def test_resync_after_garbage(garbage, payload):
    fs, r = pop_all(garbage + Fr.ACK + garbage + Fr.encode(0xD5, payload))
    assert [f.kind for f in fs] == ["ack", "info"] and fs[1].data == payload
    assert r.skipped == 2 * (len(garbage) - garbage.count(0))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.data())
def test_any_corruption_of_body_or_checksum_is_bad(payload, data):
    f = bytearray(Fr.encode(0xD5, payload))
    i = data.draw(st.integers(5, len(f) - 2))  # TFI .. DCS
    f[i] ^= data.draw(st.integers(1, 255))
    fs, _ = pop_all(bytes(f) + Fr.ACK)
    assert fs[0].kind == "bad" and fs[-1].kind == "ack"


def test_bad_length_checksum_resyncs_to_next_frame():
    bad = bytearray(Fr.encode(0xD5, b"\x41\x00"))
    bad[4] ^= 0x10
    fs, _ = pop_all(bytes(bad) + Fr.encode(0xD5, b"\x41\x00\x90\x00"))
    assert fs[0].kind == "bad" and fs[-1].kind == "info" and fs[-1].data == b"\x41\x00\x90\x00"
