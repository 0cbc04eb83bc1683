"""The reader's MQTT uplink, end to end and real: a private Mosquitto
(MosquittoInstance), the virtual reader (firmware/main.py under the real
micropython, 192K heap) with an "uplink" section in its config, and a small
CPython gateway (liftcard_testing.minigateway: paho-mqtt 2.x as user
`gateway`) that verifies RIDES with liftcard_protocol.link and answers with ACKs.

Checked: rides arrive exactly as logged and acks reach the reader's log; a
broker restart is survived (reconnect + resubscribe); a blackholed broker
(accepts, never answers) and a frozen one (SIGSTOP) never delay a tap; the
Last Will reaches the gateway when the reader is killed or frozen; an idle link
stays up on the reader's own PINGREQs; a broker answering garbage (each way
umqtt.simple's asserts would trip) never stops the uplink for good; the packet
id wraps; a recorded TIME cannot be replayed after a reboot."""

import json
import os
import signal
import socket
import threading
import time

import pytest

from liftcard_gateway.broker import find_tool
from liftcard_protocol import link as U
from liftcard_protocol.card import CardRecord
from liftcard_protocol.delta import build_delta
from liftcard_testing.firmware import run_micropython
from liftcard_testing.minigateway import MiniGateway
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.reader import CARD, CONFIG, KEY, READER, BUILDING, VirtualReader, configured_reader
from liftcard_testing.wait import wait_for

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto not installed", allow_module_level=True)


def dump(r):
    r.send(b"DUMP 1 100000\n")
    lines = r.until(("OK", "ERR"))
    assert lines[-1].startswith("OK"), lines[-1]
    return {int(ln.split()[1][:8], 16): bytes.fromhex(ln.split()[1]) for ln in lines if ln.startswith("REC ")}


@pytest.fixture
def broker():
    with MosquittoInstance(readers={READER: BUILDING}) as b:
        yield b


def test_rides_acks_restart_and_last_will(broker, tmp_path):
    gw = MiniGateway(broker)
    r = configured_reader(tmp_path, broker.host, broker.port, broker.credentials["reader-%d" % READER])
    try:
        assert "password" not in r.command("STATUS")
        wait_for(lambda: r.status()["uplink"] == "up", 15, "the uplink to come up")
        wait_for(lambda: gw.statuses, 10, "a STATUS heartbeat")
        st = gw.statuses[0]
        assert st.wl_version == 1 and st.free_heap > 0

        for i in range(40):  # more than one batch of 32
            r.tap(CARD if i % 2 else 0x8000000000000000, 5)
        last = r.status()["next_seq"] - 1
        wait_for(lambda: r.status()["acked"] == last, 20, "acks for every ride")
        with gw.lock:
            assert gw.rides == dump(r), "rides at the gateway differ from the reader's log"
            assert not gw.refused

        # TIME and DELTA down-messages go through the reader's own paths; a
        # replayed one is refused and changes nothing.
        gw.send(U.build_time, 92000000)
        wait_for(lambda: r.status()["time"] >= 92000000, 10, "TIME applied")
        new = CardRecord(0x0102030405060708, 503, 0b11)
        delta = build_delta(KEY, READER, BUILDING, 1, 2, [("upsert", new)])
        replay = gw.send(U.build_delta, delta)
        wait_for(lambda: r.status()["whitelist_version"] == 2, 10, "DELTA applied")
        assert r.tap(new.card_id, 1).result == 0
        gw.c.publish(gw.down, replay, qos=1).wait_for_publish(5)
        wait_for(lambda: r.status()["uplink_refused"] == 1, 10, "the replayed DELTA refused")
        assert r.status()["whitelist_version"] == 2 and r.status()["uplink"] == "up"
        last = r.status()["next_seq"] - 1
        wait_for(lambda: r.status()["acked"] == last, 20, "the ack of the new card's ride")

        # Broker restart: the reader reconnects, resubscribes and resumes.
        connects = r.status()["uplink_connects"]
        broker.restart()
        wait_for(
            lambda: r.status()["uplink_connects"] > connects and r.status()["uplink"] == "up",
            40,
            "the reader to reconnect after a broker restart",
        )
        for i in range(5):
            r.tap(CARD, 5)
        last = r.status()["next_seq"] - 1
        wait_for(lambda: r.status()["acked"] == last, 40, "acks after the restart (resubscribed)")
        with gw.lock:
            assert gw.rides == dump(r)
            assert max(gw.rides) == last

        # Last Will: the reader vanishes without DISCONNECT.
        os.kill(r.p.pid, signal.SIGKILL)
        r.p.wait()
        wait_for(lambda: gw.wills, 10, "the Last Will on status")
        assert gw.wills[0] == b"offline"
    finally:
        r.kill()
        gw.close()


class Blackhole:
    """A TCP listener that accepts and never says a word."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.conns = []
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.s.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.s.accept()
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.t.join()
        for c in self.conns:
            c.close()
        self.s.close()


def _timed_taps(r, n):
    t0 = time.monotonic()
    worst = 0.0
    for i in range(n):
        t = time.monotonic()
        rec = r.tap(CARD, 5)
        worst = max(worst, time.monotonic() - t)
        assert rec.result in (0, 6) or rec.result >= 0
        time.sleep(0.1)  # let idle() (and the uplink) run between taps
    return time.monotonic() - t0, worst


def test_blackholed_broker_never_delays_a_tap(tmp_path):
    hole = Blackhole()
    r = configured_reader(tmp_path, "127.0.0.1", hole.port, "not-checked-by-a-blackhole")
    try:
        wait_for(lambda: hole.conns, 10, "the reader to connect to the blackhole")
        total, worst = _timed_taps(r, 20)
        assert total < 10, "20 taps took %.1f s with a blackholed uplink" % total
        s = r.status()
        assert s["uplink"] != "up" and s["next_seq"] == 21
        # The connect timed out and was retried with backoff.
        wait_for(lambda: r.status()["uplink_connects"] >= 2, 20, "a reconnect attempt")
        assert r.quit() == 0
    finally:
        r.kill()
        hole.close()


def test_frozen_broker_never_delays_a_tap(broker, tmp_path):
    # Connected, then the broker stops answering (SIGSTOP): publishes go into
    # the kernel's buffers, no ACK/PINGRESP comes; taps go on, and the
    # keepalive declares the link dead.
    gw = MiniGateway(broker)
    r = configured_reader(tmp_path, broker.host, broker.port, broker.credentials["reader-%d" % READER], keepalive=4)
    pid = broker._proc.pid
    try:
        wait_for(lambda: r.status()["uplink"] == "up", 15, "the uplink to come up")
        os.kill(pid, signal.SIGSTOP)
        try:
            total, worst = _timed_taps(r, 20)
            assert total < 10, "20 taps took %.1f s with a frozen broker" % total
            wait_for(lambda: r.status()["uplink"] != "up", 15, "the keepalive to notice the frozen broker")
        finally:
            os.kill(pid, signal.SIGCONT)
        last = r.status()["next_seq"] - 1
        wait_for(lambda: r.status()["acked"] == last, 60, "acks once the broker thaws")
        with gw.lock:
            assert gw.rides == dump(r)
    finally:
        r.kill()
        gw.close()


BAD_UPLINKS = [
    ("[1]", "config: uplink must be an object"),
    ({"port": 1883, "password": "pw-SECRET-1"}, "config: uplink.host must be"),
    ({"host": "a b", "password": "pw-SECRET-1"}, "config: uplink.host must be"),
    ({"host": "127.0.0.1", "port": 0, "password": "pw-SECRET-1"}, "config: uplink.port must be 1..65535"),
    ({"host": "127.0.0.1", "port": "1883", "password": "pw-SECRET-1"}, "config: uplink.port must be an integer"),
    ({"host": "127.0.0.1"}, "config: uplink.password must be"),
    ({"host": "127.0.0.1", "password": "pw-SECRET-\n"}, "config: uplink.password must be"),
    ({"host": "127.0.0.1", "password": "pw-SECRET-1", "keepalive_s": 1}, "config: uplink.keepalive_s must be 4..3600"),
]


def test_bad_uplink_config_is_refused_without_echoing_the_password(tmp_path):
    r = configured_reader(tmp_path, "127.0.0.1", 1, "pw-SECRET-good")
    try:
        before = r.status()
        for i, (u, expect) in enumerate(BAD_UPLINKS):
            cfg = dict(CONFIG, uplink=json.loads(u) if isinstance(u, str) else u)
            reply = r.command("CONFIG " + r.file("bad%d.json" % i, json.dumps(cfg).encode()))
            assert reply.startswith("ERR " + expect), reply
            assert "SECRET" not in reply
        after = r.status()
        assert "SECRET" not in r.command("STATUS")
        assert after["reader_id"] == before["reader_id"] and after["whitelist_version"] == 1
        assert r.tap(CARD, 5).result == 0
        assert r.quit() == 0
    finally:
        r.kill()


WRAP_SCRIPT = r"""
import os, select, socket, sys, time
from liftcard.mqttclient import Client as _Client
host, port, pw = sys.argv[1], int(sys.argv[2]), os.getenv("LC_PW")
c = _Client(b"reader-1017", host, port, user=b"reader-1017", password=pw.encode(), keepalive=10)
c.set_callback(lambda t, m: None)
c.open(socket.getaddrinfo(host, port)[0][-1])
def wait(mask):
    for _ in range(200):
        if c.ready(mask):
            return
        time.sleep(0.02)
    raise SystemExit("timeout")
wait(select.POLLOUT)
c.send_connect()
c.want_read()
wait(select.POLLIN)
c.read_connack()
c.pid = 65534
out = []
for _ in range(3):
    pid = c.send_subscribe(b"lc/12/reader-1017/down", 1)
    wait(select.POLLIN)
    assert c.wait_msg() == 0x90 and c.suback_pid == pid and c.suback_rc == 1
    out.append(pid)
c.ping()
wait(select.POLLIN)
assert c.wait_msg() == 0xD0
print(*out)
"""


def test_packet_id_wraps(broker, tmp_path):
    # umqtt.simple's pid grows past 65535; the wrapper keeps it in 1..65535,
    # and the broker's SUBACKs match across the wrap.
    (tmp_path / "wrap.py").write_text(WRAP_SCRIPT)
    out = run_micropython(
        [str(tmp_path / "wrap.py"), broker.host, str(broker.port)],
        tmp_path,
        timeout=60,
        env_extra={"LC_PW": broker.credentials["reader-%d" % READER]},
    )
    assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()
    assert out.stdout.decode().split() == ["65535", "1", "2"]


def test_a_recorded_time_cannot_be_replayed_after_a_reboot(broker, tmp_path):
    # The reader keeps the last accepted down counter on flash: a TIME captured
    # off the network and replayed after the reader restarts is refused.
    gw = MiniGateway(broker)
    password = broker.credentials["reader-%d" % READER]
    r = configured_reader(tmp_path, broker.host, broker.port, password)
    try:
        wait_for(lambda: r.status()["uplink"] == "up", 15, "the uplink to come up")
        recorded = gw.send(U.build_time, 95000000)
        wait_for(lambda: r.status()["time"] >= 95000000, 10, "TIME applied")
        assert r.quit() == 0
        r = VirtualReader(tmp_path)  # power-on: the same flash images
        wait_for(lambda: r.status()["uplink"] == "up", 15, "the uplink after the reboot")
        before = r.status()
        assert before["uplink_refused"] == 0 and before["time"] < 95000000
        gw.c.publish(gw.down, recorded, qos=1).wait_for_publish(5)
        wait_for(lambda: r.status()["uplink_refused"] == 1, 10, "the replayed TIME refused")
        assert r.status()["time"] < 95000000, "the replayed TIME moved the clock"
        # A fresh TIME from the gateway still goes through.
        gw.send(U.build_time, 95000100)
        wait_for(lambda: r.status()["time"] >= 95000100, 10, "a fresh TIME applied")
    finally:
        r.kill()
        gw.close()


def test_idle_link_lives_on_own_pings_and_a_frozen_reader_fires_its_will(broker, tmp_path):
    # umqtt.simple sends no PINGREQ by itself: an idle reader would be dropped
    # by the broker after 1.5 x keepalive, and a hung one would never trigger
    # its Last Will if it did not declare a keepalive. Here the reader idles
    # for three keepalive periods and keeps its one connection; then it is
    # frozen (SIGSTOP) and the broker, missing its pings, fires the Will.
    gw = MiniGateway(broker)
    r = configured_reader(tmp_path, broker.host, broker.port, broker.credentials["reader-%d" % READER], keepalive=4)
    try:
        wait_for(lambda: r.status()["uplink"] == "up", 15, "the uplink to come up")
        first = r.status()["uplink_connects"]
        time.sleep(12.5)  # > 3 x keepalive: dropped by the broker after 6 s without pings
        s = r.status()
        assert s["uplink"] == "up" and s["uplink_connects"] == first
        assert not gw.wills
        os.kill(r.p.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: gw.wills, 20, "the Last Will of the frozen reader")
            assert gw.wills[0] == b"offline"
        finally:
            os.kill(r.p.pid, signal.SIGCONT)
        # Thawed, it notices the broker dropped it and comes back by itself.
        wait_for(
            lambda: r.status()["uplink_connects"] > first and r.status()["uplink"] == "up",
            30,
            "the reader to reconnect after the thaw",
        )
    finally:
        r.kill()
        gw.close()


class GarbageThenProxy:
    """Answers the first `bad` connections with broken MQTT (each a different
    way umqtt.simple's assert-based checks would trip), then relays bytes to
    the real broker."""

    ANSWERS = (
        b"\x20\x02\x00\x05",  # CONNACK refusing: not authorised
        b"\xff\xff\xff\xff\xff\xff\xff\xff",  # no packet at all
        b"\x20\x02\x00\x00\x30\xff\xff\xff\xff\x7f",  # good CONNACK, then a PUBLISH with an impossible length
        b"\x20\x02\x00\x00\x90\x03\x00\x01",  # good CONNACK, then a truncated SUBACK
        b"\x20\x05\x00\x00\x00\x00\x00",  # CONNACK of the wrong length
    )

    def __init__(self, broker):
        self.target = (broker.host, broker.port)
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.accepted = 0
        self.socks = []
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self):
        self.s.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.s.accept()
            except OSError:
                continue
            self.socks.append(c)
            i = self.accepted
            self.accepted += 1
            if i < len(self.ANSWERS):
                try:
                    c.settimeout(2)
                    c.recv(4096)  # the CONNECT
                    c.sendall(self.ANSWERS[i])
                    time.sleep(0.5)
                except OSError:
                    pass
                c.close()
                continue
            up = socket.create_connection(self.target)
            self.socks.append(up)
            threading.Thread(target=self._pipe, args=(c, up), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, c), daemon=True).start()

    def close(self):
        self.stop = True
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.s.close()


def test_a_broker_speaking_garbage_never_stops_the_uplink(broker, tmp_path):
    # Every malformed answer is contained (no assert reaches the reader loop,
    # no exception ends the uplink): taps are decided throughout, and once a
    # sane broker is behind the port the rides arrive and are acknowledged.
    gw = MiniGateway(broker)
    proxy = GarbageThenProxy(broker)
    r = configured_reader(tmp_path, "127.0.0.1", proxy.port, broker.credentials["reader-%d" % READER], keepalive=4)
    try:
        total, worst = _timed_taps(r, 20)
        assert total < 10, "20 taps took %.1f s against a garbage broker" % total
        wait_for(lambda: proxy.accepted > len(GarbageThenProxy.ANSWERS), 90, "every garbage answer to be tried")
        last = r.status()["next_seq"] - 1
        wait_for(lambda: r.status()["acked"] == last, 60, "the rides acked through the sane broker")
        with gw.lock:
            assert gw.rides == dump(r)
        assert r.quit() == 0
    finally:
        r.kill()
        proxy.close()
        gw.close()
