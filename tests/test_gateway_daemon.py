"""The gateway daemon against a REAL private Mosquitto and a simulated reader
(CPython, building its messages with link.py and its own broker credentials)."""

import json
import os
import queue
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from liftcard_protocol import link
from liftcard_gateway.broker import MosquittoInstance, find_tool, reader_topics
from liftcard_gateway.config import load_config
from liftcard_gateway.daemon import Gateway
from liftcard_gateway.logs import MemoryLog
from liftcard_protocol.ride import RideRecord

REPO = Path(__file__).resolve().parents[1]
READERS = {7: 12, 8: 12}
CARD = 0xFEDCBA9876543210

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


INTRUDER = "intruder"  # a client on the broker that may write anywhere: forged traffic


@pytest.fixture(scope="module")
def broker():
    with MosquittoInstance(readers=READERS, extra_users={INTRUDER: ("topic readwrite lc/#",)}) as b:
        yield b


@pytest.fixture(scope="module")
def keys():
    return {rid: secrets.token_bytes(32) for rid in READERS}


def write_config(tmp_path, broker, keys, readers_=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pw = tmp_path / "broker.pass"
    pw.write_text(broker.credentials["gateway"] + "\n")
    os.chmod(pw, 0o600)
    readers = ""
    for rid, bid in (readers_ or READERS).items():
        kf = tmp_path / f"reader-{rid}.key"
        kf.write_text(keys[rid].hex())
        os.chmod(kf, 0o600)
        readers += f"[[readers]]\nreader_id = {rid}\nbuilding_id = {bid}\nkey_file = \"{kf.name}\"\n"
    p = tmp_path / "gw.toml"
    p.write_text(f"""
[gateway]
data_dir = "data"
[broker]
host = "{broker.host}"
port = {broker.port}
username = "gateway"
password_file = "broker.pass"
client_id = "gw-{uuid.uuid4().hex[:12]}"
{readers}""")
    return p


class ListLog(MemoryLog):
    def keep(self, rec):
        json.dumps(rec)  # must be one JSON object
        super().keep(rec)

    def wait(self, pred, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for r in list(self.records):
                if pred(r):
                    return r
            time.sleep(0.02)
        raise AssertionError("no such log record; have %r" % self.records[-10:])


class SimReader:
    """A reader speaking the link format over the real broker with its own user."""

    def __init__(self, broker, rid, key, boot=1, bid=None):
        self.rid, self.bid, self.key = rid, bid if bid is not None else READERS[rid], key
        self.topics = reader_topics(self.bid, rid)
        self.boot, self.msgno = boot, 0
        self.last_down = 0
        self.acks = queue.Queue()
        self.sun = queue.Queue()  # the entries of each down SUNCTR
        self._sub = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{rid}-{uuid.uuid4().hex[:8]}",
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(f"reader-{rid}", broker.credentials[f"reader-{rid}"])
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._sub.set()
        c.on_connect = lambda cl, *a: cl.subscribe(self.topics["down"], qos=1)
        c.connect(broker.host, broker.port, 30)
        c.loop_start()
        assert self._sub.wait(10)
        self.client = c

    def _on_message(self, client, userdata, msg):
        m = link.parse(self.key, msg.payload, self.rid, self.bid, link.DOWN, self.last_down)
        self.last_down = m.counter
        if m.kind == link.SUNCTR_DOWN:
            self.sun.put(m.sun)
        else:
            self.acks.put(m.seq)

    def counter(self):
        self.msgno += 1
        return link.counter_of(self.boot, self.msgno)

    def rides_msg(self, seqs, counter=None):
        recs = [RideRecord(seq=s, time=5000 + s, uptime=s, card_id=CARD, household=7, floor=4, fee=40,
                           result=0, flags=0, boot=self.boot) for s in seqs]
        return link.build_rides(self.key, self.rid, self.bid, counter or self.counter(), recs)

    def publish(self, payload, topic="up"):
        self.client.publish(self.topics[topic], payload, qos=1).wait_for_publish(10)

    def send(self, seqs):
        self.publish(self.rides_msg(seqs))

    def ack(self, timeout=10):
        return self.acks.get(timeout=timeout)

    def no_ack(self, wait=0.5):
        with pytest.raises(queue.Empty):
            self.acks.get(timeout=wait)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def db_acked(cfg, rid):
    con = sqlite3.connect(str(cfg.db_path))
    try:
        return con.execute("SELECT acked_seq FROM readers WHERE reader_id=?", (rid,)).fetchone()[0]
    finally:
        con.close()


def db_rides(cfg, rid):
    con = sqlite3.connect(str(cfg.db_path))
    try:
        return [r[0] for r in con.execute("SELECT seq FROM rides WHERE reader_id=? ORDER BY seq", (rid,))]
    finally:
        con.close()


@pytest.fixture
def gw(tmp_path, broker, keys):
    cfg = load_config(write_config(tmp_path, broker, keys))
    log = ListLog()
    g = Gateway(cfg, log=log)
    t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    assert g.wait_ready(10)
    readers = []

    def reader(rid, **kw):
        r = SimReader(broker, rid, keys[rid], **kw)
        readers.append(r)
        return r

    yield g, cfg, log, reader
    for r in readers:
        r.close()
    g.stop()
    t.join(10)
    assert not t.is_alive()


def test_store_and_ack_dedupe(gw):
    g, cfg, log, reader = gw
    r = reader(7)
    r.send(range(1, 6))
    assert r.ack() == 5
    r.send(range(1, 6))  # resent after a "lost" ack: a new message, same records
    assert r.ack() == 5
    assert db_rides(cfg, 7) == [1, 2, 3, 4, 5]
    assert db_acked(cfg, 7) == 5  # the ack says what the DB holds
    r.send(range(6, 10))
    assert r.ack() == 9 == db_acked(cfg, 7)


def test_reorder_gap_then_filled(gw):
    g, cfg, log, reader = gw
    r = reader(7)
    r.send(range(1, 5))
    assert r.ack() == 4
    r.send(range(9, 13))
    assert r.ack() == 4
    gap = log.wait(lambda x: x["event"] == "gap")
    assert (gap["reader_id"], gap["from_seq"], gap["to_seq"]) == (7, 5, 8)
    r.send(range(5, 9))
    assert r.ack() == 12 == db_acked(cfg, 7)
    assert db_rides(cfg, 7) == list(range(1, 13))


def test_rides_in_legacy_uid_mode_are_reported(gw):
    g, cfg, log, reader = gw
    r = reader(7)
    recs = [RideRecord(seq=s, time=5000 + s, uptime=s, card_id=0xDEADBEEF, household=7, floor=4, fee=40,
                       result=0, flags=0x02 if s != 2 else 0, boot=r.boot) for s in (1, 2, 3)]
    r.publish(link.build_rides(r.key, r.rid, r.bid, r.counter(), recs))
    assert r.ack() == 3
    ev = log.wait(lambda x: x["event"] == "legacy_rides")
    assert (ev["reader_id"], ev["rides"]) == (7, 2)
    r.send(range(4, 6))  # plain rides: no report
    assert r.ack() == 5
    time.sleep(0.3)
    assert len([x for x in log.records if x["event"] == "legacy_rides"]) == 1


def test_replay_refused(gw):
    g, cfg, log, reader = gw
    r = reader(7)
    msg = r.rides_msg([1, 2])
    r.publish(msg)
    assert r.ack() == 2
    r.publish(msg)  # the very same bytes again
    rec = log.wait(lambda x: x["event"] == "refused")
    assert rec["reason"] == "replay" and rec["reader_id"] == 7
    r.no_ack()
    # an older counter is refused too
    r.publish(r.rides_msg([3], counter=1))
    log.wait(lambda x: x["event"] == "refused" and len([y for y in log.records if y["event"] == "refused"]) == 2)
    assert db_rides(cfg, 7) == [1, 2]


def test_bad_payloads_refused_and_logged(gw):
    g, cfg, log, reader = gw
    r = reader(7)
    good = bytearray(r.rides_msg([1]))
    good[30] ^= 1  # a flipped ciphertext bit: MAC fails
    r.publish(bytes(good))
    # reader 7's key, but the header names reader 8: refused, whatever the topic says
    r.publish(link.build_rides(r.key, 8, 12, r.counter(), []))
    r.publish(b"garbage")
    r.publish(link.build_status(r.key, 7, 12, r.counter(), link.ReaderStatus(1, 2, 3, 4)))  # wrong kind on up
    want = ["mac", "reader", "size", "kind"]
    log.wait(lambda x: len([y for y in log.records if y["event"] == "refused"]) >= len(want))
    refused = [x for x in log.records if x["event"] == "refused"]
    assert [x["reason"] for x in refused] == want
    assert all(x["reader_id"] == 7 for x in refused)
    text = json.dumps(log.records)
    assert "%x" % CARD not in text and str(CARD) not in text and r.key.hex() not in text
    r.no_ack()
    assert db_rides(cfg, 7) == []
    # the link still works
    r.send([1])
    assert r.ack() == 1


def test_status_updates_readers_table(gw):
    g, cfg, log, reader = gw
    r = reader(8)
    r.publish(link.build_status(r.key, 8, 12, r.counter(),
                                  link.ReaderStatus(uptime=100, free_heap=90000, backlog=17, wl_version=5)),
              topic="status")
    log.wait(lambda x: x["event"] == "status" and x["reader_id"] == 8)
    out = subprocess.run([sys.executable, "-m", "liftcard_gateway", "status", "--config", str(cfg.path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = lines[0]
    for col in ("reader", "building", "last seen", "acked seq", "backlog", "wl version", "gaps"):
        assert col in head
    row8 = [ln.split() for ln in lines[2:] if ln.split()[0] == "8"][0]
    assert row8[1] == "12" and "17" in row8 and "5" in row8 and "90000" in row8


# -- the real process ------------------------------------------------------------

def start_proc(cfg_path, tmp_path):
    errf = open(tmp_path / f"gw-{uuid.uuid4().hex[:6]}.log", "w+")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "liftcard_gateway", "run", "--config", str(cfg_path)],
                         stdout=subprocess.DEVNULL, stderr=errf, env=env)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if '"event":"subscribed"' in Path(errf.name).read_text():
            return p, Path(errf.name)
        assert p.poll() is None, Path(errf.name).read_text()
        time.sleep(0.05)
    p.kill()
    raise AssertionError("gateway did not subscribe: " + Path(errf.name).read_text())


def test_sigterm_clean_exit(tmp_path, broker, keys):
    cfg = write_config(tmp_path, broker, keys)
    p, logf = start_proc(cfg, tmp_path)
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    text = logf.read_text()
    assert "Traceback" not in text
    assert json.loads(text.strip().splitlines()[-1])["event"] == "stopped"
    for ln in text.strip().splitlines():
        json.loads(ln)  # every line one JSON object


def test_kill9_restart_no_duplicates_acks_resume(tmp_path, broker, keys):
    cfg_path = write_config(tmp_path, broker, keys)
    cfg = load_config(cfg_path)
    p, _ = start_proc(cfg_path, tmp_path)
    r = SimReader(broker, 7, keys[7])
    try:
        r.send(range(1, 33))
        assert r.ack() == 32
        p.kill()
        p.wait(10)
        # while the gateway is dead: a resend (ack "lost") and a new batch, queued by the broker
        r.send(range(1, 33))
        r.send(range(33, 65))
        p, logf = start_proc(cfg_path, tmp_path)
        got = [r.ack(15), r.ack(15)]
        assert got[-1] == 64  # acks resume, with down counters still growing (SimReader checks)
        assert db_rides(cfg, 7) == list(range(1, 65))
        assert db_acked(cfg, 7) == 64
        r.send(range(1, 10))  # an old resend after the restart is acked, not stored again
        assert r.ack(15) == 64
        assert db_rides(cfg, 7) == list(range(1, 65))
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        r.close()
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("body, key", [
    ("[gateway]\n", "gateway.data_dir"),
    ("not toml [[[", "not valid TOML"),
])
def test_bad_config_one_line_error(tmp_path, body, key):
    p = tmp_path / "gw.toml"
    p.write_text(body)
    out = subprocess.run([sys.executable, "-m", "liftcard_gateway", "run", "--config", str(p)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and key in out.stderr


def test_bad_config_secret_not_shown(tmp_path, broker, keys):
    cfg = write_config(tmp_path, broker, keys)
    os.chmod(tmp_path / "broker.pass", 0o644)
    out = subprocess.run([sys.executable, "-m", "liftcard_gateway", "status", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "broker.password_file" in out.stderr and "0600" in out.stderr
    assert broker.credentials["gateway"] not in out.stderr + out.stdout


# ---------------------------------------------------------------------------
# NTAG SUN counters shared by the readers of a building (docs/link.md, SUNCTR)
# ---------------------------------------------------------------------------

SUN_READERS = {7: 12, 8: 12, 9: 13}
FOB = 0x04A21B9C11223344
FOB2 = 0x0123456789ABCDEF


@pytest.fixture(scope="module")
def sun_broker():
    with MosquittoInstance(readers=SUN_READERS) as b:
        yield b


@pytest.fixture
def sun_gw(tmp_path, sun_broker):
    keys = {rid: secrets.token_bytes(32) for rid in SUN_READERS}
    cfg = load_config(write_config(tmp_path, sun_broker, keys, SUN_READERS))
    log = ListLog()
    g = Gateway(cfg, log=log)
    t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    assert g.wait_ready(10)
    readers = []

    def reader(rid, **kw):
        r = SimReader(sun_broker, rid, keys[rid], bid=SUN_READERS[rid], **kw)
        readers.append(r)
        return r

    yield g, cfg, log, reader
    for r in readers:
        r.close()
    g.stop()
    t.join(10)
    assert not t.is_alive()


def db_sun(cfg, bid):
    con = sqlite3.connect(str(cfg.db_path))
    try:
        return dict(con.execute("SELECT card_id, counter FROM sun_counters WHERE building_id=?", (bid,)))
    finally:
        con.close()


def _drain(q, quiet=1.0):
    out = []
    while True:
        try:
            out.append(q.get(timeout=quiet))
        except queue.Empty:
            return out


def _sunctr(r, entries):
    r.publish(link.build_sunctr(r.key, r.rid, r.bid, r.counter(), entries))


def test_sun_counters_stored_forwarded_to_the_building_max_merged(sun_gw):
    g, cfg, log, reader = sun_gw
    a, b, other = reader(7), reader(8), reader(9)
    _sunctr(a, [(FOB, 42), (FOB2, 5)])
    assert b.sun.get(timeout=10) == ((FOB, 42), (FOB2, 5))
    ev = log.wait(lambda x: x["event"] == "sun_counters" and x["reader_id"] == 7)
    assert (ev["entries"], ev["raised"], ev["forwarded_to"]) == (2, 2, [8])
    assert db_sun(cfg, 12) == {"%016x" % FOB: 42, "%016x" % FOB2: 5} and db_sun(cfg, 13) == {}
    # A lower or equal counter neither lowers the table nor is forwarded; a
    # higher one is forwarded alone, to the building's other readers (here: 7).
    _sunctr(b, [(FOB, 41), (FOB2, 5)])
    log.wait(lambda x: x["event"] == "sun_counters" and x["reader_id"] == 8 and x["raised"] == 0)
    _sunctr(b, [(FOB, 40), (FOB2, 6)])
    assert a.sun.get(timeout=10) == ((FOB2, 6),)
    assert db_sun(cfg, 12) == {"%016x" % FOB: 42, "%016x" % FOB2: 6}
    with pytest.raises(queue.Empty):
        b.sun.get(timeout=0.5)  # never back to the sender
    assert other.sun.empty() and a.sun.empty()  # another building hears nothing
    # A replayed SUNCTR is refused and changes nothing.
    msg = link.build_sunctr(a.key, 7, 12, a.counter(), [(FOB, 99)])
    a.publish(msg)
    b.sun.get(timeout=10)
    a.publish(msg)
    log.wait(lambda x: x["event"] == "refused" and x["reader_id"] == 7 and x["reason"] == "replay")
    assert db_sun(cfg, 12)["%016x" % FOB] == 99
    # Card ids are never logged.
    text = json.dumps(log.records)
    for cid in (FOB, FOB2):
        assert "%016x" % cid not in text and str(cid) not in text


def test_sun_table_sent_at_a_readers_first_status(sun_gw):
    g, cfg, log, reader = sun_gw
    a = reader(7)
    entries = [(0x1000 + i, i) for i in range(150)]
    for i in range(0, 150, 64):
        _sunctr(a, entries[i : i + 64])
    log.wait(lambda x: x["event"] == "sun_counters" and x["entries"] == 150 - 128)
    b = reader(8)  # was offline: connects, says STATUS
    b.publish(link.build_status(b.key, 8, 12, b.counter(), link.ReaderStatus(1, 2, 3, 4)), topic="status")
    log.wait(lambda x: x["event"] == "sun_table_sent" and x["reader_id"] == 8)
    got = _drain(b.sun)[-2:]  # forwards of the last messages may have reached it just before
    assert [len(m) for m in got] == [64, 64]
    flat = got[0] + got[1]
    assert len(set(flat)) == 128 and set(flat) <= set(entries)
    assert set(entries[128:]) <= set(flat) and flat[:22] == tuple(sorted(entries[128:]))  # the most recent first
    # Its next STATUS (same boot, later uptime) is no reconnect: nothing again.
    b.publish(link.build_status(b.key, 8, 12, b.counter(), link.ReaderStatus(61, 2, 3, 4)), topic="status")
    log.wait(lambda x: x["event"] == "status" and x["reader_id"] == 8 and x["uptime"] == 61)
    with pytest.raises(queue.Empty):
        b.sun.get(timeout=0.5)
    # After its Last Will it catches up again.
    b.publish(b"offline", topic="status")
    log.wait(lambda x: x["event"] == "reader_offline" and x["reader_id"] == 8)
    b.publish(link.build_status(b.key, 8, 12, b.counter(), link.ReaderStatus(62, 2, 3, 4)), topic="status")
    assert len(b.sun.get(timeout=10)) == 64
