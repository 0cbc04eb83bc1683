"""The local link's broker, for real: a private Mosquitto (liftcard_testing.mosquitto)
with the generated config, password file and ACL (gateway/liftcard_gateway/broker.py,
docs/broker.md).

Non-delivery is proven without sleeps: after the forbidden message the same client
sends a marker that IS allowed; the broker handles one connection's packets in order
and delivers to one subscriber in order, so once the marker is in, the forbidden
message would have been too. Timeouts are only upper bounds for a broken run.
"""

from __future__ import annotations

import queue
import secrets
import socket
import stat

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from liftcard_gateway import broker as B
from liftcard_gateway.broker import GATEWAY_USER, BrokerConfig, BrokerError
from liftcard_testing.mosquitto import MosquittoInstance

TIMEOUT = 30.0  # generous upper bound for anything to happen on loopback
NOT_AUTHORIZED = 0x87
READERS = {7: 12, 8: 12, 9: 13}  # reader_id -> building_id


class Client:
    """A paho-mqtt 2.x client with thread-safe queues for what the broker says."""

    def __init__(
        self,
        broker: MosquittoInstance,
        user: str | None,
        password: str | None = None,
        protocol=mqtt.MQTTv5,
        client_id: str | None = None,
        will: tuple | None = None,
        clean_session: bool | None = None,
    ):
        self.broker = broker
        self.protocol = protocol
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{user}-{secrets.token_hex(4)}",
            protocol=protocol,
            reconnect_on_failure=False,
            clean_session=clean_session,
        )
        if user is not None:
            self.c.username_pw_set(user, password if password is not None else broker.credentials[user])
        if will:
            self.c.will_set(*will)
        self.connacks: queue.Queue = queue.Queue()
        self.msgs: queue.Queue = queue.Queue()
        self.subacks: dict[int, queue.Queue] = {}
        self.pubacks: dict[int, queue.Queue] = {}
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((rc, flags))
        self.disconnects: queue.Queue = queue.Queue()
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)
        self.c.on_message = lambda c, u, m: self.msgs.put((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self._q(self.subacks, mid).put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, props: self._q(self.pubacks, mid).put(rc)

    @staticmethod
    def _q(d: dict, mid: int) -> queue.Queue:
        return d.setdefault(mid, queue.Queue())

    def connect(self, clean_start=True, session_expiry: int | None = None):
        """Connect and return the CONNACK reason code (paho ReasonCode)."""
        kw = {}
        if self.protocol == mqtt.MQTTv5:
            kw["clean_start"] = clean_start
            if session_expiry is not None:
                p = Properties(PacketTypes.CONNECT)
                p.SessionExpiryInterval = session_expiry
                kw["properties"] = p
        self.c.connect(self.broker.host, self.broker.port, keepalive=30, **kw)
        self.c.loop_start()
        rc, _flags = self.connacks.get(timeout=TIMEOUT)
        return rc

    def connected(self, **kw) -> "Client":
        rc = self.connect(**kw)
        assert not rc.is_failure, f"CONNACK refused: {rc}"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> list:
        res, mid = self.c.subscribe(topic, qos)
        assert res == mqtt.MQTT_ERR_SUCCESS
        return self._q(self.subacks, mid).get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes, qos: int = 1):
        """Publish and wait for the PUBACK; return its reason code (QoS 1)."""
        info = self.c.publish(topic, payload, qos=qos)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        return self._q(self.pubacks, info.mid).get(timeout=TIMEOUT)

    def until(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including (topic, payload)."""
        got = []
        while True:
            m = self.msgs.get(timeout=TIMEOUT)
            got.append(m)
            if m == (topic, payload):
                return got

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()

    def drop(self):
        """Vanish without DISCONNECT (power cut): the broker fires the Last Will."""
        self.c.loop_stop()
        self.c.socket().close()


@pytest.fixture
def broker():
    with MosquittoInstance(readers=READERS, log_types=("all",)) as b:
        yield b


@pytest.fixture
def clients():
    made = []

    def make(broker, user, **kw):
        c = Client(broker, user, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.close()
        except Exception:
            pass


def gateway(broker, clients):
    g = clients(broker, GATEWAY_USER).connected()
    assert not g.subscribe("lc/#")[0].is_failure
    return g


def topics(broker, rid):
    return broker.topics(rid)


# ---------------------------------------------------------------------------
# Generated files (no broker needed)
# ---------------------------------------------------------------------------


def test_acl_has_explicit_user_blocks_only():
    acl = B.render_acl(BrokerConfig(readers={7: 12, 9: 13}))
    lines = [ln for ln in acl.splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "user gateway",
        "topic readwrite lc/#",
        "user reader-7",
        "topic write lc/12/reader-7/up",
        "topic write lc/12/reader-7/status",
        "topic read lc/12/reader-7/down",
        "user reader-9",
        "topic write lc/13/reader-9/up",
        "topic write lc/13/reader-9/status",
        "topic read lc/13/reader-9/down",
    ]
    assert not any(ln.startswith("pattern") or "%" in ln or "+" in ln for ln in lines)


def test_conf_plain_listener(tmp_path):
    conf = B.render_conf(BrokerConfig(port=18830, bind_address="127.0.0.1"), tmp_path)
    lines = conf.splitlines()
    assert "listener 18830 127.0.0.1" in lines
    assert "allow_anonymous false" in lines
    assert "per_listener_settings false" in lines
    assert "persistence true" in lines
    assert f"password_file {tmp_path.resolve() / 'passwd'}" in lines
    assert f"acl_file {tmp_path.resolve() / 'acl'}" in lines
    assert f"persistence_location {tmp_path.resolve() / 'data'}/" in lines
    assert sum(ln.startswith("listener") for ln in lines) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"readers": {0: 1}},
        {"readers": {1: 0}},
        {"readers": {1 << 30: 1}},
        {"readers": {"7": 1}},
        {"readers": {True: 1}},
        {"port": 0},
        {"port": 70000},
        {"bind_address": "1.2.3.4\nuser x"},
        {"log_file": "../x.log"},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        BrokerConfig(**bad)


def test_passwords_are_fresh_and_strong():
    pws = {B.new_password() for _ in range(100)}
    assert len(pws) == 100
    assert all(len(p) >= 32 for p in pws)


def test_missing_mosquitto_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(B, "_SBIN", ())
    with pytest.raises(BrokerError) as e:
        with MosquittoInstance(readers=READERS):
            pass
    assert str(e.value) == "mosquitto not found: install the Debian package mosquitto (scripts/setup.sh does)"


def test_start_failure_names_the_problem_and_shows_the_log():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        inst = MosquittoInstance(readers=READERS, port=port, start_timeout=TIMEOUT)
        with pytest.raises(BrokerError) as e:
            with inst:
                pass
    msg = str(e.value)
    first, _, tail = msg.partition("\n")
    assert f"127.0.0.1:{port}" in first and "mosquitto" in first
    assert "Address already in use" in tail


def test_generated_files_are_private_and_hold_no_password(broker, clients):
    wd = broker.workdir
    assert stat.S_IMODE(wd.stat().st_mode) == 0o700
    for name in ("mosquitto.conf", "passwd", "acl", "mosquitto.log"):
        assert stat.S_IMODE((wd / name).stat().st_mode) == 0o600, name
    # exercise the broker a bit, including a wrong password, before reading its log
    wrong = "wrong-" + B.new_password()
    assert clients(broker, "reader-7", password=wrong).connect().is_failure
    g = gateway(broker, clients)
    r = clients(broker, "reader-7").connected()
    r.publish(topics(broker, 7)["up"], b"ride")
    g.until(topics(broker, 7)["up"], b"ride")
    broker.add_reader(42, 12)
    broker.restart()
    passwd = (wd / "passwd").read_text()
    users = [ln.split(":", 1)[0] for ln in passwd.splitlines()]
    assert users == ["gateway", "reader-7", "reader-8", "reader-9", "reader-42", "probe"]
    assert all(ln.split(":", 1)[1].startswith("$7$") for ln in passwd.splitlines())  # hashed
    blobs = {p.name: p.read_bytes() for p in wd.rglob("*") if p.is_file()}
    assert blobs["mosquitto.log"]  # it does log (log_type all), just not secrets
    for user, pw in list(broker.credentials.items()) + [("wrong", wrong)]:
        for name, blob in blobs.items():
            assert pw.encode() not in blob, f"{user}'s password found in {name}"
    assert "Password" not in repr(broker) and broker.credentials["gateway"] not in repr(broker)


# ---------------------------------------------------------------------------
# The link through the real broker
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_reader_up_reaches_gateway_and_down_reaches_reader(broker, clients, protocol):
    g = gateway(broker, clients)
    t = topics(broker, 7)
    r = clients(broker, "reader-7", protocol=protocol).connected()
    granted = r.subscribe(t["down"])
    assert not granted[0].is_failure
    rc = r.publish(t["up"], b"batch-1")
    assert not rc.is_failure
    assert g.until(t["up"], b"batch-1") == [(t["up"], b"batch-1")]
    r.publish(t["status"], b"alive")
    assert g.until(t["status"], b"alive") == [(t["status"], b"alive")]
    g.publish(t["down"], b"ack-1")
    assert r.until(t["down"], b"ack-1") == [(t["down"], b"ack-1")]


def test_last_will_on_own_status_reaches_gateway(broker, clients):
    g = gateway(broker, clients)
    t = topics(broker, 8)
    r = clients(broker, "reader-8", will=(t["status"], b"offline", 1, False)).connected()
    r.publish(t["status"], b"online")
    g.until(t["status"], b"online")
    r.drop()
    assert g.until(t["status"], b"offline")[-1] == (t["status"], b"offline")


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_reader_cannot_publish_for_another_reader_or_building(broker, clients, protocol):
    g = gateway(broker, clients)
    own = topics(broker, 7)
    forbidden = [
        topics(broker, 8)["up"],  # same building, another reader
        topics(broker, 8)["status"],
        topics(broker, 9)["up"],  # another building, another reader
        "lc/13/reader-7/up",  # its own name under another building
        own["down"],  # posing as the gateway to itself
        topics(broker, 8)["down"],  # posing as the gateway to another reader
        "lc/12/reader-7/up/extra",
        "lc/12",
        "elsewhere",
    ]
    r = clients(broker, "reader-7", protocol=protocol).connected()
    for i, topic in enumerate(forbidden):
        rc = r.publish(topic, b"forged-%d" % i)
        if protocol == mqtt.MQTTv5:  # mosquitto 2.0.11 says so in the PUBACK
            assert rc.value == NOT_AUTHORIZED, (topic, rc)
    r.publish(own["up"], b"marker")
    got = g.until(own["up"], b"marker")
    assert got == [(own["up"], b"marker")], got
    assert r.c.is_connected()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_reader_cannot_read_another_readers_down(broker, clients, protocol):
    g = gateway(broker, clients)
    own = topics(broker, 7)
    r = clients(broker, "reader-7", protocol=protocol).connected()
    assert not r.subscribe(own["down"])[0].is_failure
    # mosquitto 2.0.11's acl_file grants these SUBSCRIBEs (SUBACK "Granted QoS 1") and
    # enforces `topic read` on delivery instead; a refusal (0x80 / 0x87) is fine too.
    # Either way, nothing but the reader's own down may get through.
    for topic in (
        topics(broker, 8)["down"],
        topics(broker, 9)["down"],
        "lc/13/reader-7/down",
        topics(broker, 8)["up"],
        topics(broker, 8)["status"],
        own["up"],
        "lc/#",
        "lc/12/+/down",
        "lc/+/+/up",
        "#",
    ):
        rc = r.subscribe(topic)[0]
        assert not rc.is_failure or rc.value in (0x80, NOT_AUTHORIZED), (topic, rc)
    for rid in (8, 9):
        g.publish(topics(broker, rid)["down"], b"secret-for-%d" % rid)
    c8 = clients(broker, "reader-8").connected()
    c8.publish(topics(broker, 8)["up"], b"ride-of-8")
    g.until(topics(broker, 8)["up"], b"ride-of-8")
    g.publish(own["down"], b"marker")
    got = r.until(own["down"], b"marker")
    assert {m for m in got} == {(own["down"], b"marker")}, got


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_wrong_password_and_anonymous_are_refused(broker, clients, protocol):
    cases = [
        ("reader-7", "not-the-password"),
        ("reader-7", broker.credentials["reader-8"]),  # another reader's password
        ("gateway", broker.credentials["reader-7"]),  # a reader posing as the gateway
        ("reader-99", B.new_password()),  # unknown user
        (None, None),  # anonymous
    ]
    for user, pw in cases:
        rc = clients(broker, user, password=pw, protocol=protocol).connect()
        assert rc.is_failure, (user, rc)
        assert rc.getName() in ("Not authorized", "Bad user name or password"), (user, rc)
    assert not clients(broker, "reader-7", protocol=protocol).connect().is_failure


def test_restart_keeps_credentials_port_and_queued_messages(broker, clients):
    t = topics(broker, 9)
    port = broker.port
    gid = "gw-" + secrets.token_hex(4)
    g = clients(broker, GATEWAY_USER, client_id=gid).connected(clean_start=False, session_expiry=3600)
    assert not g.subscribe("lc/#")[0].is_failure
    g.close()
    r = clients(broker, "reader-9").connected()
    assert not r.publish(t["up"], b"while-gateway-away").is_failure  # queued for the session
    r.close()
    broker.restart()
    assert broker.port == port and broker.running
    g2 = clients(broker, GATEWAY_USER, client_id=gid).connected(clean_start=False, session_expiry=3600)
    assert g2.until(t["up"], b"while-gateway-away")  # persistence kept the queued ride
    r2 = clients(broker, "reader-9").connected()
    r2.publish(t["up"], b"after-restart")
    g2.until(t["up"], b"after-restart")


def test_stop_then_start_again(broker, clients):
    broker.stop()
    assert not broker.running
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=5).close()
    broker.start()
    gateway(broker, clients)


def test_add_reader_at_runtime(broker, clients):
    g = gateway(broker, clients)
    assert clients(broker, "reader-10", password=B.new_password()).connect().is_failure
    pw = broker.add_reader(10, 13)
    assert broker.credentials["reader-10"] == pw and broker.readers[10] == 13
    t = topics(broker, 10)
    r = clients(broker, "reader-10").connected()
    assert not r.subscribe(t["down"])[0].is_failure
    assert r.publish(topics(broker, 7)["up"], b"forged").value == NOT_AUTHORIZED
    r.publish(t["up"], b"first-ride")
    assert g.until(t["up"], b"first-ride") == [(t["up"], b"first-ride")]
    g.publish(t["down"], b"welcome")
    r.until(t["down"], b"welcome")
    # the readers already there keep working on the same connection and anew
    old = clients(broker, "reader-7").connected()
    old.publish(topics(broker, 7)["up"], b"still-here")
    g.until(topics(broker, 7)["up"], b"still-here")
    with pytest.raises(ValueError):
        broker.add_reader(10, 13)


# ---------------------------------------------------------------------------
# Client ids: the broker makes each client's id its username, so nobody can
# take over another's connection or session (docs/broker.md, "Client ids")
# ---------------------------------------------------------------------------


def _attack(broker, clients, user, client_id, protocol=mqtt.MQTTv311):
    """user's own credentials, someone else's client id, a clean session: the
    broker accepts it (as user's own connection) and nobody else is touched."""
    a = clients(broker, user, client_id=client_id, protocol=protocol)
    assert not a.connect().is_failure
    a.close()


def _no_disconnect(victim):
    with pytest.raises(queue.Empty):
        victim.disconnects.get(timeout=1.0)
    assert victim.c.is_connected()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_a_reader_cannot_take_over_another_readers_client_id(broker, clients, protocol):
    g = gateway(broker, clients)
    t8 = topics(broker, 8)
    victim = clients(
        broker, "reader-8", client_id="reader-8", will=(t8["status"], b"offline", 1, False), protocol=mqtt.MQTTv311
    ).connected()
    assert not victim.subscribe(t8["down"])[0].is_failure
    _attack(broker, clients, "reader-7", "reader-8", protocol)
    _no_disconnect(victim)
    # No Last Will was fired for reader 8 (the marker comes after anything the attack caused),
    # and its link works both ways.
    victim.publish(t8["status"], b"still-here")
    assert g.until(t8["status"], b"still-here") == [(t8["status"], b"still-here")]
    g.publish(t8["down"], b"ack")
    assert victim.until(t8["down"], b"ack") == [(t8["down"], b"ack")]


def test_a_reader_cannot_take_over_the_gateways_client_id_or_wipe_its_session(broker, clients):
    t7 = topics(broker, 7)
    # The gateway as the daemon connects: MQTT 3.1.1, a persistent session.
    g = clients(broker, GATEWAY_USER, client_id="liftcard-gateway", protocol=mqtt.MQTTv311, clean_session=False)
    assert not g.connect().is_failure
    assert not g.subscribe("lc/#")[0].is_failure
    _attack(broker, clients, "reader-7", "liftcard-gateway")
    _attack(broker, clients, "reader-7", GATEWAY_USER)
    _no_disconnect(g)
    # The session survives: messages sent while the gateway is away wait for it.
    g.c.disconnect()
    g.c.loop_stop()
    _attack(broker, clients, "reader-7", "liftcard-gateway")  # a clean session with its id, while it is away
    r = clients(broker, "reader-7").connected()
    r.publish(t7["up"], b"while-away")
    back = clients(broker, GATEWAY_USER, client_id="liftcard-gateway", protocol=mqtt.MQTTv311, clean_session=False)
    assert not back.connect().is_failure
    assert back.until(t7["up"], b"while-away") == [(t7["up"], b"while-away")]


def test_conf_ties_the_client_id_to_the_username(tmp_path):
    lines = B.render_conf(BrokerConfig(), tmp_path).splitlines()
    assert lines.index("use_username_as_clientid true") > lines.index("listener 1883 127.0.0.1")
