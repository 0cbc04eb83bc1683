"""The upstream over a REAL TLS Mosquitto (client certificates, ACL) with the
reference ledger as its own process: drain to exactly once, in order; forged
acks refused; clients without a valid certificate refused; card updates."""

import json
import logging
import os
import queue
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_protocol import upstream as uf
from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import load_config
from liftcard_protocol.keys import load_signing_key, write_private
from liftcard_gateway.store import Store
from liftcard_gateway.upstream import Upstream, upstream_status
from liftcard_protocol.topics import upstream_topics
from liftcard_testing import configs, procs, rides
from liftcard_testing.bankbroker import BankBroker, render_bank_conf, tls_connack
from liftcard_testing.configs import BrokerLogin
from liftcard_testing.devpki import issue, make_ca, make_dev_pki
from liftcard_testing.logcapture import EventLog
from liftcard_testing.programs import start_ledger
from liftcard_testing.wait import wait_for
from liftcard_tools.ledger import LedgerDB

REPO = Path(__file__).resolve().parents[1]
READERS = {7: 12, 8: 12, 9: 13}

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw1", "gw2"])


@pytest.fixture
def bank(pki):
    with BankBroker(pki, ["gw1", "gw2"]) as b:
        yield b


NoLocal = BrokerLogin("127.0.0.1", 1, "unused-password")  # the upstream does not talk to the local broker


def gateway_cfg(tmp_path, pki, bank, **extra):
    p = configs.write_gateway_config(
        tmp_path / "gw",
        NoLocal,
        {r: os.urandom(32) for r in READERS},
        READERS,
        gateway_id="gw1",
        extra=configs.upstream_section(pki, bank, **extra),
    )
    return load_config(p)


def tls_client(pki, cert, key, **kw):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="t-%s" % uuid.uuid4().hex[:10], protocol=mqtt.MQTTv311, **kw
    )
    c.tls_set(ca_certs=str(pki.ca_cert), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return c


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])  # plain MQTT, either version (clustered brokers)
def test_drain_exactly_once_in_gateway_order(tmp_path, pki, bank, protocol):
    cfg = gateway_cfg(tmp_path, pki, bank, batch_rides=100, protocol=protocol)
    assert cfg.upstream.protocol == protocol
    expected = rides.prefill(cfg.db_path, READERS, 1700)
    # Reader 9 delivers out of order: 1800..1831 is stored before 1701..1799.
    st = Store(cfg.db_path)
    c = st.last_counter(9)
    st.store_batch(9, c + 1, [rides.ride(s, rides.fee_of(9, s)) for s in range(1800, 1832)])
    st.store_batch(9, c + 2, [rides.ride(s, rides.fee_of(9, s)) for s in range(1701, 1800)])
    st.close()
    expected[9] = (1831, sum(rides.fee_of(9, s) for s in range(1, 1832)))
    led_cfg = configs.write_ledger_config(tmp_path / "ledger", pki, bank)
    with procs.running(start_ledger(led_cfg, tmp_path / "ledger.log"), 20):  # SIGTERM at the end, pass or fail
        log = EventLog(json_default=str)
        up = Upstream(cfg.upstream, cfg.db_path, log)
        try:
            # measure from a subscribed ledger (a first-time subscriber misses what was published before it)
            wait_for(lambda: b'"subscribed"' in (tmp_path / "ledger.log").read_bytes(), 30, "the ledger")
            t0 = time.monotonic()
            up.start()
            total = sum(n for n, _ in expected.values())
            ldb = tmp_path / "ledger" / "ledger-data" / "ledger.db"
            wait_for(
                lambda: sum(n for n, _ in rides.ledger_counts(ldb).values()) == total and up.inflight == 0,
                60,
                "the drain",
            )
            elapsed = time.monotonic() - t0
            print("drained %d rides in %.2fs (%.0f rides/s)" % (total, elapsed, total / elapsed))
        finally:
            up.stop()
    assert rides.ledger_counts(ldb) == {("gw1", r): v for r, v in expected.items()}
    # every reader's rides reached the ledger in the gateway's storage order
    db = LedgerDB(ldb)
    gw = Store(cfg.db_path)
    for rid in READERS:
        order = [s for (s,) in gw.conn.execute("SELECT seq FROM rides WHERE reader_id=? ORDER BY rowid", (rid,))]
        assert db.seqs_in_storage_order("gw1", rid) == order
    assert order[1700:1732] == list(range(1800, 1832))  # reader 9: not seq order
    gw.close()
    db.close()
    # the ledger-acked state: no backlog, one ack per batch
    st = {r["reader_id"]: r for r in upstream_status(cfg.db_path)}
    assert {r: (st[r]["backlog"], st[r]["ledger_acked"]) for r in READERS} == {r: (0, expected[r][0]) for r in READERS}
    assert not log.find(lambda r: r["event"] in ("upstream_refused", "upstream_error"))
    # totals from the command, in integer fen
    out = subprocess.run(
        [sys.executable, "-m", "liftcard_tools.ledger", "totals", "--config", str(led_cfg), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0
    assert {json.loads(x)["reader_id"]: json.loads(x)["fees_fen"] for x in out.stdout.splitlines()} == {
        r: f for r, (_, f) in expected.items()
    }


def test_forged_or_unknown_acks_are_refused(tmp_path, pki, bank):
    cfg = gateway_cfg(tmp_path, pki, bank, batch_rides=50, ack_timeout_s=60)
    rides.prefill(cfg.db_path, {7: 12}, 120)
    log = EventLog(json_default=str)
    up = Upstream(cfg.upstream, cfg.db_path, log)
    acks_topic = upstream_topics("gw1")["acks"]
    # the ledger's certificate: a broker-level impostor, or a ledger whose signing key is not the registered one
    c = tls_client(pki, pki.ledger_cert, pki.ledger_key)
    c.connect(bank.host, bank.port, 30)
    c.loop_start()
    try:
        up.start()
        wait_for(lambda: up.inflight == 1, 20, "a batch in flight")
        row = up_row(cfg)
        assert row[1:] == (1, 50, 50)
        bid = row[0]
        real = load_signing_key(pki.ledger_signing_key)
        forged = [
            ("signature", uf.build_ack(Ed25519PrivateKey.generate(), "gw1", bid, 7, 1, 50, 50)),
            ("signature", uf.build_ack(load_signing_key(pki.gateways["gw1"]["signing_key"]), "gw1", bid, 7, 1, 50, 50)),
            ("mismatch", uf.build_ack(real, "gw1", bid, 7, 1, 60, 60)),
            ("unknown_batch", uf.build_ack(real, "gw1", bid + 5, 7, 1, 50, 50)),
            ("gateway", uf.build_ack(real, "gw2", bid, 7, 1, 50, 50)),
            ("magic", b"ACK " + bytes(90)),
        ]
        for reason, payload in forged:
            c.publish(acks_topic, payload, qos=1).wait_for_publish(10)
            wait_for(
                lambda: log.find(lambda r: r["event"] == "upstream_refused" and r["reason"] == reason),
                10,
                "refusal " + reason,
            )
        time.sleep(0.3)
        assert up.inflight == 1 and up_row(cfg)[0] == bid  # still not acked: the rides stay in the backlog
        assert upstream_status(cfg.db_path)[0]["backlog"] == 120
        # the genuine ack moves it on
        c.publish(acks_topic, uf.build_ack(real, "gw1", bid, 7, 1, 50, 50), qos=1).wait_for_publish(10)
        wait_for(lambda: upstream_status(cfg.db_path)[0]["backlog"] == 70, 10, "the genuine ack")
        wait_for(lambda: up_row(cfg) is not None and up_row(cfg)[0] == bid + 1, 10, "the next batch")
        assert up_row(cfg)[1:] == (51, 100, 50)
    finally:
        up.stop()
        c.disconnect()
        c.loop_stop()


def up_row(cfg):
    import sqlite3

    con = sqlite3.connect(str(cfg.db_path))
    try:
        return con.execute(
            "SELECT batch_id, first_seq, last_seq, rides FROM upstream_batches WHERE acked_at IS NULL"
        ).fetchone()
    finally:
        con.close()


def test_bank_broker_refuses_clients_without_a_valid_certificate(tmp_path, pki, bank):
    g = pki.gateways["gw1"]
    assert tls_connack(bank.host, bank.port, pki.ca_cert, g["cert"], g["key"]) == 0
    with pytest.raises((ssl.SSLError, OSError)):
        tls_connack(bank.host, bank.port, pki.ca_cert, None, None)
    other = make_ca("an impostor CA")
    k, crt = issue(other, "gw1")  # the right name, the wrong issuer
    write_private(tmp_path / "x.key", k)
    (tmp_path / "x.crt").write_bytes(crt)
    with pytest.raises((ssl.SSLError, OSError)):
        tls_connack(bank.host, bank.port, pki.ca_cert, tmp_path / "x.crt", tmp_path / "x.key")
    # and paho, as the gateway would use it
    c = tls_client(pki, tmp_path / "x.crt", tmp_path / "x.key")
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (not rc.is_failure) and connected.set()
    c.connect_async(bank.host, bank.port, 30)
    c.loop_start()
    try:
        assert not connected.wait(3.0)
    finally:
        c.disconnect()
        c.loop_stop()


def test_acl_a_gateway_speaks_only_for_itself(pki, bank):
    got = queue.Queue()
    led = tls_client(pki, pki.ledger_cert, pki.ledger_key)
    sub = threading.Event()
    led.on_subscribe = lambda *a: sub.set()
    led.on_message = lambda cl, u, m: got.put((m.topic, bytes(m.payload)))
    led.connect(bank.host, bank.port, 30)
    led.subscribe("liftcard/gw/#", qos=1)
    led.loop_start()
    gw1 = tls_client(pki, pki.gateways["gw1"]["cert"], pki.gateways["gw1"]["key"])
    gw1.connect(bank.host, bank.port, 30)
    gw1.loop_start()
    try:
        assert sub.wait(10)
        for t in ("liftcard/gw/gw2/batches", "liftcard/gw/gw1/acks", "liftcard/gw/gw1/cards"):
            gw1.publish(t, b"x", qos=1).wait_for_publish(10)
        gw1.publish("liftcard/gw/gw1/batches", b"mine", qos=1).wait_for_publish(10)
        assert got.get(timeout=10) == ("liftcard/gw/gw1/batches", b"mine")
        with pytest.raises(queue.Empty):
            got.get(timeout=0.5)
    finally:
        for c in (gw1, led):
            c.disconnect()
            c.loop_stop()


def test_card_updates_reach_the_callback(tmp_path, pki, bank):
    cfg = gateway_cfg(tmp_path, pki, bank)
    got = queue.Queue()
    up = Upstream(cfg.upstream, cfg.db_path, EventLog(json_default=str), on_card_update=got.put)
    led_cfg = configs.write_ledger_config(tmp_path / "ledger", pki, bank)
    payload = os.urandom(300)
    (tmp_path / "update.bin").write_bytes(payload)
    try:
        up.start()
        assert up.wait_ready(20)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "liftcard_tools.ledger",
                "publish-card",
                "--config",
                str(led_cfg),
                "--gateway",
                "gw1",
                "--file",
                str(tmp_path / "update.bin"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert got.get(timeout=10) == payload
    finally:
        up.stop()


def test_publishing_card_updates_logs_no_error(tmp_path, pki, bank, monkeypatch):
    # paho's loop thread logs "Client is not connected" when it runs on after
    # a one-shot publisher's disconnect; the demo printed it between its
    # progress lines. A slow caller (here: 0.3 s between disconnect and
    # loop_stop) makes that window certain.
    from liftcard_tools import ledger

    real_make_client = ledger.make_client

    def slow_to_stop(*a, **kw):
        c = real_make_client(*a, **kw)
        stop = c.loop_stop
        c.loop_stop = lambda: (time.sleep(0.3), stop())[1]
        return c

    monkeypatch.setattr(ledger, "make_client", slow_to_stop)
    led_cfg = ledger.load_config(configs.write_ledger_config(tmp_path / "ledger", pki, bank))
    seen = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda rec: seen.append(rec.getMessage()) if rec.levelno >= logging.WARNING else None
    log = logging.getLogger(ledger.LOGGER)
    log.addHandler(handler)
    try:
        for _ in range(3):
            ledger.publish_card(led_cfg, "gw1", os.urandom(40))
    finally:
        log.removeHandler(handler)
    assert seen == []


class Watched:
    """A paho client over TLS that records its disconnects and messages."""

    def __init__(self, pki, cert, key, client_id, clean_session=False):
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
            reconnect_on_failure=False,
        )
        self.c.tls_set(
            ca_certs=str(pki.ca_cert), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
        self.connected, self.subscribed = threading.Event(), threading.Event()
        self.disconnects, self.msgs = queue.Queue(), queue.Queue()
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_disconnect = lambda cl, u, f, rc, p: self.disconnects.put(rc)
        self.c.on_message = lambda cl, u, m: self.msgs.put((m.topic, bytes(m.payload)))

    def start(self, bank):
        self.c.connect(bank.host, bank.port, 30)
        self.c.loop_start()
        assert self.connected.wait(10)
        return self

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def _take_over(pki, bank, ident, client_id):
    """ident's certificate, someone else's client id, a clean session."""
    a = Watched(pki, *ident, client_id, clean_session=True).start(bank)
    a.stop()


def test_a_gateway_cannot_take_over_the_ledgers_or_another_gateways_client_id(pki, bank):
    gw1 = (pki.gateways["gw1"]["cert"], pki.gateways["gw1"]["key"])
    gw2 = (pki.gateways["gw2"]["cert"], pki.gateways["gw2"]["key"])
    ledger = Watched(pki, pki.ledger_cert, pki.ledger_key, "liftcard-ledger").start(bank)
    ledger.c.subscribe("liftcard/gw/+/batches", qos=1)
    assert ledger.subscribed.wait(10)
    victim_gw = Watched(pki, *gw1, "liftcard-gateway").start(bank)
    for client_id in ("liftcard-ledger", "ledger", "liftcard-gateway", "gw1"):
        _take_over(pki, bank, gw2, client_id)
    for v in (ledger, victim_gw):
        with pytest.raises(queue.Empty):
            v.disconnects.get(timeout=1.0)
        assert v.c.is_connected()
    # The ledger's session survives a clean-session CONNECT with its id while it is away.
    ledger.stop()
    _take_over(pki, bank, gw2, "liftcard-ledger")
    _take_over(pki, bank, gw2, "ledger")
    victim_gw.c.publish("liftcard/gw/gw1/batches", b"while-away", qos=1).wait_for_publish(10)
    back = Watched(pki, pki.ledger_cert, pki.ledger_key, "liftcard-ledger").start(bank)
    try:
        assert back.msgs.get(timeout=10) == ("liftcard/gw/gw1/batches", b"while-away")
    finally:
        back.stop()
        victim_gw.stop()


def test_bank_conf_ties_the_client_id_to_the_certificate(tmp_path, pki):
    lines = render_bank_conf(8883, "127.0.0.1", tmp_path, pki.ca_cert, pki.server_cert, pki.server_key).splitlines()
    assert "use_identity_as_username true" in lines and "use_username_as_clientid true" in lines
