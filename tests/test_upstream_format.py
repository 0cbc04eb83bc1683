"""The gateway <-> ledger formats (docs/upstream.md): vectors, round trips,
forgeries, and the [upstream] config section's errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftcard_protocol import upstream as uf
from liftcard_gateway.config import GatewayConfigError, load_config
from liftcard_protocol.keys import load_public_key, load_signing_key, write_private
from liftcard_protocol.topics import parse_upstream_topic, upstream_topics
from liftcard_testing.devpki import make_dev_pki
from liftcard_tools import upstream_vectors

REPO = Path(__file__).resolve().parents[1]
GK = Ed25519PrivateKey.from_private_bytes(upstream_vectors.GW_SEED)
LK = Ed25519PrivateKey.from_private_bytes(upstream_vectors.LEDGER_SEED)


# -- shared vectors ---------------------------------------------------------------------
def test_vector_file_is_up_to_date():
    assert (REPO / "tests/vectors/upstream.jsonl").read_text() == upstream_vectors.generate()


def test_valid_vectors_decode_to_their_fields_and_rebuild_byte_exact():
    v = upstream_vectors.load()
    assert v["meta"]["gateway_public"] == GK.public_key().public_bytes_raw().hex()
    assert len(v["batches"]) == 3 and len(v["acks"]) == 3
    for case in v["batches"]:
        data = bytes.fromhex(case["hex"])
        b = uf.parse_batch(GK.public_key(), data, expect_gateway=case["gateway_id"])
        assert (b.gateway_id, b.batch_id, b.reader_id, b.building_id) == (
            case["gateway_id"],
            case["batch_id"],
            case["reader_id"],
            case["building_id"],
        )
        got = [upstream_vectors._ride_fields(r) for r in b.rides]
        assert got == case["rides"]
        rides = [uf.UpRide(**{**r, "card_id": int(r["card_id"], 16)}) for r in case["rides"]]
        assert (
            uf.build_batch(GK, case["gateway_id"], case["batch_id"], case["reader_id"], case["building_id"], rides)
            == data
        )
        assert len(data) == 6 + len(case["gateway_id"]) + 18 + 35 * len(rides) + 64
    for case in v["acks"]:
        a = uf.parse_ack(LK.public_key(), bytes.fromhex(case["hex"]), expect_gateway=case["gateway_id"])
        assert (a.batch_id, a.reader_id, a.first_seq, a.last_seq, a.count) == (
            case["batch_id"],
            case["reader_id"],
            case["first_seq"],
            case["last_seq"],
            case["count"],
        )


def test_invalid_vectors_are_refused_with_their_reason():
    v = upstream_vectors.load()
    assert len(v["invalid"]) >= 15
    for case in v["invalid"]:
        data = bytes.fromhex(case["hex"])
        with pytest.raises(uf.UpstreamFormatError) as ei:
            if case["what"] == "batch":
                uf.parse_batch(GK.public_key(), data)
            else:
                uf.parse_ack(LK.public_key(), data)
        assert ei.value.reason == case["reason"], case["why"]


# -- hypothesis -------------------------------------------------------------------------
u32 = st.integers(0, 0xFFFFFFFF)
rides_st = st.lists(
    st.builds(
        uf.UpRide,
        seq=u32,
        time=u32,
        uptime=u32,
        card_id=st.integers(0, 2**64 - 1),
        household=st.integers(0, 2**24 - 1),
        floor=st.integers(0, 255),
        fee=st.integers(0, 0xFFFF),
        result=st.integers(0, 255),
        flags=st.integers(0, 255),
        boot=st.integers(0, 0xFFFF),
        time_corrected=st.none() | u32,
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda r: r.seq,
)
gid_st = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=64)
ids = st.integers(1, (1 << 30) - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gid=gid_st, batch_id=st.integers(1, 2**63 - 1), reader_id=ids, building_id=ids, rides=rides_st)
def test_batch_round_trip(gid, batch_id, reader_id, building_id, rides):
    data = uf.build_batch(GK, gid, batch_id, reader_id, building_id, rides)
    b = uf.parse_batch(GK.public_key(), data, expect_gateway=gid)
    assert b == uf.Batch(gid, batch_id, reader_id, building_id, tuple(rides))
    # The gateway's fast path from stored rows gives the same bytes.
    rows = [
        (
            r.seq,
            r.time,
            r.uptime,
            "%016x" % r.card_id,
            r.household,
            r.floor,
            r.fee,
            r.result,
            r.flags,
            r.boot,
            r.time_corrected,
        )
        for r in rides
    ]
    assert uf.build_batch_from_rows(GK, gid, batch_id, reader_id, building_id, rows) == data
    ack = uf.ack_for(LK, b)
    a = uf.parse_ack(LK.public_key(), ack, expect_gateway=gid)
    assert (a.batch_id, a.reader_id, a.first_seq, a.last_seq, a.count) == (
        batch_id,
        reader_id,
        rides[0].seq,
        rides[-1].seq,
        len(rides),
    )


@settings(max_examples=150, deadline=None)
@given(rides=rides_st, data=st.data())
def test_any_changed_byte_is_refused(rides, data):
    good = uf.build_batch(GK, "gw1", 5, 7, 12, rides)
    i = data.draw(st.integers(0, len(good) - 1))
    mask = data.draw(st.integers(1, 255))
    bad = bytearray(good)
    bad[i] ^= mask
    with pytest.raises(uf.UpstreamFormatError):
        uf.parse_batch(GK.public_key(), bytes(bad), expect_gateway="gw1")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_with_a_reason(blob):
    for parse, pub in ((uf.parse_batch, GK.public_key()), (uf.parse_ack, LK.public_key())):
        try:
            parse(pub, blob)
        except uf.UpstreamFormatError as e:
            assert e.reason in ("size", "magic", "version", "gateway", "field", "signature")


def test_forged_and_misdirected():
    rides = [uf.UpRide(1, 2, 3, 4, 5, 6, 7, 0, 0, 1)]
    forger = Ed25519PrivateKey.generate()
    with pytest.raises(uf.UpstreamFormatError) as ei:
        uf.parse_batch(GK.public_key(), uf.build_batch(forger, "gw1", 1, 7, 12, rides))
    assert ei.value.reason == "signature"
    with pytest.raises(uf.UpstreamFormatError) as ei:  # signed by gw2 naming gw2, read as gw1's
        uf.parse_batch(GK.public_key(), uf.build_batch(GK, "gw2", 1, 7, 12, rides), expect_gateway="gw1")
    assert ei.value.reason == "gateway"
    b = uf.parse_batch(GK.public_key(), uf.build_batch(GK, "gw1", 1, 7, 12, rides))
    with pytest.raises(uf.UpstreamFormatError) as ei:  # an ack signed by the gateway, not the ledger
        uf.parse_ack(LK.public_key(), uf.ack_for(GK, b))
    assert ei.value.reason == "signature"
    with pytest.raises(uf.UpstreamFormatError):
        uf.build_batch(GK, "gw1", 1, 7, 12, [])
    with pytest.raises(uf.UpstreamFormatError):
        uf.build_batch(GK, "gw/1", 1, 7, 12, rides)


def test_topics():
    assert upstream_topics("gw1") == {
        "batches": "liftcard/gw/gw1/batches",
        "acks": "liftcard/gw/gw1/acks",
        "cards": "liftcard/gw/gw1/cards",
    }
    assert parse_upstream_topic("liftcard/gw/gw1/batches") == ("gw1", "batches")
    assert parse_upstream_topic("liftcard/gw/+/batches") is None
    assert parse_upstream_topic("liftcard/gw/a/b/batches") is None


# -- key files --------------------------------------------------------------------------
def test_signing_key_formats(tmp_path):
    k = Ed25519PrivateKey.generate()
    seed = k.private_bytes_raw()
    for name, data in (("raw", seed), ("hex", seed.hex().encode() + b"\n")):
        p = write_private(tmp_path / name, data)
        assert load_signing_key(p).private_bytes_raw() == seed
    p = tmp_path / "loose"
    p.write_bytes(seed)
    os.chmod(p, 0o644)
    with pytest.raises(ValueError) as ei:
        load_signing_key(p)
    assert "chmod 600" in str(ei.value) and seed.hex() not in str(ei.value)
    q = tmp_path / "pub"
    q.write_text(k.public_key().public_bytes_raw().hex())
    assert load_public_key(q).public_bytes_raw() == k.public_key().public_bytes_raw()


# -- config -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw1"])


def _config(tmp_path, pki, **over):
    g = pki.gateways["gw1"]
    pw = tmp_path / "broker.pass"
    pw.write_text("x" * 20)
    os.chmod(pw, 0o600)
    gid = over.pop("gateway_id", '"gw1"')
    up = {
        "host": '"127.0.0.1"',
        "ca_file": '"%s"' % pki.ca_cert,
        "cert_file": '"%s"' % g["cert"],
        "key_file": '"%s"' % g["key"],
        "signing_key_file": '"%s"' % g["signing_key"],
        "ledger_public_key_file": '"%s"' % pki.ledger_public_key,
    }
    up.update(over)
    body = "\n".join("%s = %s" % (k, v) for k, v in up.items() if v is not None)
    p = tmp_path / "gw.toml"
    p.write_text(
        '[gateway]\ngateway_id = %s\ndata_dir = "data"\n[broker]\npassword_file = "broker.pass"\n[upstream]\n' % gid
        + body
        + "\n"
    )
    return p


def test_config_defaults(tmp_path, pki):
    cfg = load_config(_config(tmp_path, pki))
    u = cfg.upstream
    assert (u.gateway_id, u.port, u.batch_rides, u.max_inflight, u.ack_timeout_s, u.client_id, u.protocol) == (
        "gw1",
        8883,
        500,
        16,
        10,
        "liftcard-gw1",
        "3.1.1",
    )
    assert "PRIVATE" not in repr(cfg) and "Secret(<hidden>)" in repr(u.signing_key)


@pytest.mark.parametrize(
    "over, key",
    [
        ({"gateway_id": '"gw/1"'}, "gateway.gateway_id"),
        ({"host": None}, "upstream.host"),
        ({"port": "0"}, "upstream.port"),
        ({"batch_rides": "5001"}, "upstream.batch_rides"),
        ({"max_inflight": "0"}, "upstream.max_inflight"),
        ({"colour": '"red"'}, "upstream.colour"),
        ({"signing_key_file": '"nope.key"'}, "upstream.signing_key_file"),
        ({"protocol": '"4"'}, "upstream.protocol"),
        ({"cert_file": "CA"}, "upstream.cert_file"),
    ],
)
def test_config_errors_name_the_key(tmp_path, pki, over, key):
    if over.get("cert_file") == "CA":
        over = {"cert_file": '"%s"' % pki.ca_cert}
    with pytest.raises(GatewayConfigError) as ei:
        load_config(_config(tmp_path, pki, **over))
    assert ei.value.key == key and "\n" not in str(ei.value)


def test_config_loose_key_file_one_line_exit_2(tmp_path, pki):
    k = tmp_path / "loose.key"
    k.write_bytes(pki.gateways["gw1"]["signing_key"].read_bytes())
    os.chmod(k, 0o640)
    p = _config(tmp_path, pki, signing_key_file='"%s"' % k)
    r = subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", "status", "--config", str(p)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "upstream.signing_key_file" in r.stderr and "chmod 600" in r.stderr
    assert "PRIVATE KEY" not in r.stderr
