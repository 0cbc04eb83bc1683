"""The reference ledger's verify-store-ack step (tools/liftcard_tools/ledger.py)
on a real SQLite database, and its command line. Over the real TLS broker:
tests/test_upstream_tls.py and tests/test_upstream_faults.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_protocol import upstream as uf
from liftcard_protocol.keys import load_public_key, load_signing_key
from liftcard_tools import ledger as L
from liftcard_testing.configs import write_ledger_config
from liftcard_testing.devpki import make_dev_pki
from liftcard_testing.logcapture import EventLog

REPO = Path(__file__).resolve().parents[1]


class FakeBank:  # only host/port for the config file; no connection is made here
    host, port = "127.0.0.1", 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw1", "gw2"])


@pytest.fixture
def ledger(tmp_path, pki):
    cfg = L.load_config(write_ledger_config(tmp_path, pki, FakeBank, ["gw1", "gw2"]))
    log = EventLog()
    led = L.Ledger(cfg, log=log)
    yield led, log
    led.db.close()


def rides(seqs, fee=40):
    return [uf.UpRide(s, 1000 + s, s, 0xFEDCBA9876543210, 3, 4, fee, 0, 0, 1) for s in seqs]


def gkey(pki, gid):
    return load_signing_key(pki.gateways[gid]["signing_key"])


def count(led):
    return led.db.conn.execute("SELECT count(*), COALESCE(sum(fee),0) FROM rides").fetchone()


def test_store_then_signed_ack(ledger, pki):
    led, log = ledger
    data = uf.build_batch(gkey(pki, "gw1"), "gw1", 1, 7, 12, rides(range(1, 11)))
    topic, ack = led.handle("liftcard/gw/gw1/batches", data)
    assert topic == "liftcard/gw/gw1/acks"
    a = uf.parse_ack(load_public_key(pki.ledger_public_key), ack, expect_gateway="gw1")
    assert (a.batch_id, a.reader_id, a.first_seq, a.last_seq, a.count) == (1, 7, 1, 10, 10)
    assert count(led) == (10, 400)
    assert log.records[-1]["event"] == "stored" and log.records[-1]["inserted"] == 10


def test_duplicates_overlaps_and_reordering_store_once_and_ack_again(ledger, pki):
    led, log = ledger
    k = gkey(pki, "gw1")
    b2 = uf.build_batch(k, "gw1", 2, 7, 12, rides(range(11, 21)))
    b1 = uf.build_batch(k, "gw1", 1, 7, 12, rides(range(1, 11)))
    overlap = uf.build_batch(k, "gw1", 9, 7, 12, rides(range(5, 16)))
    for data in (b2, b1, b2, b1, overlap):  # reordered, duplicated, overlapping
        assert led.handle("liftcard/gw/gw1/batches", data) is not None
    assert count(led) == (20, 800)
    assert [r["inserted"] for r in log.records if r["event"] == "stored"] == [10, 10, 0, 0, 0]
    # the same reader id under another gateway is another reader
    assert led.handle("liftcard/gw/gw2/batches", uf.build_batch(gkey(pki, "gw2"), "gw2", 1, 7, 12, rides([1])))
    assert count(led) == (21, 840)
    assert led.db.conn.execute("SELECT received FROM batches WHERE gateway_id='gw1' AND batch_id=2").fetchone() == (2,)


@pytest.mark.parametrize(
    "case",
    [
        "forged",
        "other_gateways_key",
        "names_other_gateway",
        "unknown_gateway",
        "malformed",
        "truncated",
        "ack_on_batches",
        "bad_topic",
    ],
)
def test_refused_nothing_stored_no_ack(ledger, pki, case):
    led, log = ledger
    rs = rides([1, 2, 3])
    topic = "liftcard/gw/gw1/batches"
    if case == "forged":
        data = uf.build_batch(Ed25519PrivateKey.generate(), "gw1", 1, 7, 12, rs)
        reason = "signature"
    elif case == "other_gateways_key":  # gw2 (a real, registered gateway) signs a batch as gw1
        data = uf.build_batch(gkey(pki, "gw2"), "gw1", 1, 7, 12, rs)
        reason = "signature"
    elif case == "names_other_gateway":  # gw2's genuine batch replayed on gw1's topic
        data = uf.build_batch(gkey(pki, "gw2"), "gw2", 1, 7, 12, rs)
        reason = "gateway"
    elif case == "unknown_gateway":
        topic = "liftcard/gw/gw9/batches"
        data = uf.build_batch(Ed25519PrivateKey.generate(), "gw9", 1, 7, 12, rs)
        reason = "unknown_gateway"
    elif case == "malformed":
        data = b'{"rides": [1, 2, 3]}'
        reason = "size"
    elif case == "truncated":
        data = uf.build_batch(gkey(pki, "gw1"), "gw1", 1, 7, 12, rs)[:-3]
        reason = "size"
    elif case == "ack_on_batches":
        data = uf.build_ack(gkey(pki, "gw1"), "gw1", 1, 7, 1, 3, 3)
        reason = "magic"
    else:
        topic = "liftcard/gw/gw1/acks"
        data = uf.build_batch(gkey(pki, "gw1"), "gw1", 1, 7, 12, rs)
        reason = "topic"
    assert led.handle(topic, data) is None
    assert count(led) == (0, 0)
    assert log.records[-1]["event"] == "refused" and log.records[-1]["reason"] == reason


def test_cli_totals_and_bad_input(tmp_path, pki, ledger):
    led, _ = ledger
    k = gkey(pki, "gw1")
    led.handle("liftcard/gw/gw1/batches", uf.build_batch(k, "gw1", 1, 7, 12, rides(range(1, 4), fee=125)))
    led.handle("liftcard/gw/gw1/batches", uf.build_batch(k, "gw1", 2, 8, 12, rides([1], fee=7)))
    cfgp = str(led.cfg.path)

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "liftcard_tools.ledger", *a], capture_output=True, text=True, cwd=REPO, timeout=60
        )

    r = run("totals", "--config", cfgp, "--json")
    assert r.returncode == 0
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        {"gateway_id": "gw1", "reader_id": 7, "rides": 3, "charged": 3, "free": 0, "denied": 0, "fees_fen": 375},
        {"gateway_id": "gw1", "reader_id": 8, "rides": 1, "charged": 1, "free": 0, "denied": 0, "fees_fen": 7},
    ]
    r = run("totals", "--config", cfgp)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].split() == ["total", "4", "4", "0", "0", "382"]
    # bad input: one line, non-zero, no traceback, no secret
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(cfgp).read_text().replace("[ledger]", "[ledger]\ncolour = 1"))
    r = run("totals", "--config", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == "liftcard-ledger: config error: ledger.colour: unknown key"
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.ledger_signing_key.read_bytes())
    os.chmod(loose, 0o644)
    bad.write_text(Path(cfgp).read_text().replace(str(pki.ledger_signing_key), str(loose)))
    r = run("totals", "--config", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "chmod 600" in r.stderr
    assert "PRIVATE" not in r.stderr and "Traceback" not in r.stderr
    r = run("publish-card", "--config", cfgp, "--gateway", "gw7", "--file", "x")
    assert r.returncode == 2 and "not a registered gateway" in r.stderr and r.stderr.count("\n") == 1
    r = run("publish-card", "--config", cfgp, "--gateway", "gw1", "--file", str(tmp_path / "missing.bin"))
    assert r.returncode == 2 and "cannot read" in r.stderr and r.stderr.count("\n") == 1
