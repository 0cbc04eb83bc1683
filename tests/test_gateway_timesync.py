"""Time sync, unsynced-ride correction and bad input, against the REAL private
Mosquitto and the gateway daemon (liftcard_testing.daemonrig, as in
test_gateway_daemon.py)."""

import queue
import secrets
import sqlite3
import time

import paho.mqtt.client as mqtt
import pytest

from liftcard_gateway import daemon
from liftcard_gateway.broker import find_tool
from liftcard_protocol import link
from liftcard_protocol.codes import Flag
from liftcard_protocol.epoch import epoch_from_unix
from liftcard_protocol.ride import RideRecord
from liftcard_gateway.store import Store
from liftcard_testing.daemonrig import INTRUDER, daemon_broker, daemon_rig, db_rides
from liftcard_testing.logcapture import EventLog
from liftcard_testing.simreader import CARD, SimReader

READERS = {7: 12, 8: 12}

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def broker():
    with daemon_broker(READERS) as b:  # with INTRUDER, a client that may write anywhere: forged traffic
        yield b


@pytest.fixture(scope="module")
def keys():
    return {rid: secrets.token_bytes(32) for rid in READERS}


@pytest.fixture
def gw(tmp_path, broker, keys):
    with daemon_rig(tmp_path, broker, keys, EventLog()) as rig:  # (g, cfg, log, reader)
        yield rig


class TimeReader(SimReader):
    """A SimReader that tells ACKs from TIMEs on its down topic."""

    def __init__(self, *a, **kw):
        self.times = queue.Queue()
        super().__init__(*a, **kw)

    def _on_message(self, client, userdata, msg):
        m = link.parse(self.key, msg.payload, self.rid, self.bid, link.DOWN, self.last_down)
        self.last_down = m.counter
        if m.kind == link.TIME:
            self.times.put(m.epoch_s)
        else:
            self.acks.put(m.seq)

    def status(self, uptime=100, synced=True, boot=None):
        st = link.ReaderStatus(
            uptime=uptime,
            free_heap=90000,
            backlog=0,
            wl_version=1,
            flags=link.ST_CLOCK_SYNCED if synced else 0,
            boot=self.boot if boot is None else boot,
        )
        self.publish(link.build_status(self.key, self.rid, self.bid, self.counter(), st), topic="status")

    def time_msg(self, timeout=10):
        return self.times.get(timeout=timeout)

    def no_time(self, wait=0.7):
        with pytest.raises(queue.Empty):
            self.times.get(timeout=wait)


def now_epoch():
    return epoch_from_unix(int(time.time()))


@pytest.fixture
def treader(gw, broker, keys):
    g, cfg, log, _ = gw
    made = []

    def make(rid, **kw):
        r = TimeReader(broker, rid, keys[rid], **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def n_events(log, event, **match):
    return len([x for x in log.records if x["event"] == event and all(x.get(k) == v for k, v in match.items())])


# -- 1. time sync -------------------------------------------------------------------


def test_time_sent_when_unsynced(gw, treader):
    g, cfg, log, _ = gw
    r = treader(7)
    r.status(synced=False)
    t = r.time_msg()
    assert abs(t - now_epoch()) <= 2
    rec = log.wait(lambda x: x["event"] == "time_sent" and x["reader_id"] == 7)
    assert rec["why"] == "unsynced" and rec["epoch_s"] == t
    r.status(uptime=160, synced=False)  # still unsynced (the TIME was lost): sent again
    assert abs(r.time_msg() - now_epoch()) <= 2
    row = (
        sqlite3.connect(str(cfg.db_path))
        .execute("SELECT time_sent_epoch, time_sent_at FROM readers WHERE reader_id=7")
        .fetchone()
    )
    assert row[0] is not None and row[1] is not None


def test_time_on_first_status_then_periodic(gw, treader, monkeypatch):
    g, cfg, log, _ = gw
    r = treader(8)
    r.status(uptime=10, synced=True)  # first STATUS since the gateway started: a (re)connect
    r.time_msg()
    assert log.wait(lambda x: x["event"] == "time_sent")["why"] == "connect"
    r.status(uptime=70, synced=True)  # synced, recently sent: nothing
    r.no_time()
    monkeypatch.setattr(daemon, "TIME_SYNC_INTERVAL_S", 0.0)
    r.status(uptime=130, synced=True)
    r.time_msg()
    assert log.wait(lambda x: x["event"] == "time_sent" and x["why"] == "periodic")
    monkeypatch.setattr(daemon, "TIME_SYNC_INTERVAL_S", 600.0)
    # a Last Will: the next STATUS is a reconnect
    r.publish(b"offline", topic="status")
    log.wait(lambda x: x["event"] == "reader_offline" and x["reader_id"] == 8)
    r.status(uptime=200, synced=True)
    r.time_msg()
    assert n_events(log, "time_sent", reader_id=8, why="connect") == 2
    # a reboot (smaller uptime, new boot) while synced
    r.status(uptime=5, synced=True, boot=2)
    r.time_msg()
    assert log.wait(lambda x: x["event"] == "time_sent" and x["why"] == "reboot")
    # down counters kept growing across ACK and TIME (TimeReader's parse checks it)
    r.send([1])
    assert r.ack() == 1


# -- 2. unsynced rides corrected from uptime ----------------------------------------


def ride(seq, t, uptime, unsynced, boot=1):
    return RideRecord(
        seq=seq,
        time=t,
        uptime=uptime,
        card_id=CARD,
        household=7,
        floor=4,
        fee=40,
        result=0,
        flags=int(Flag.CLOCK_UNSYNCED) if unsynced else 0,
        boot=boot,
    )


def test_store_corrects_unsynced_rides(tmp_path):
    s = Store(tmp_path / "g.db")
    s.ensure_reader(7, 12)
    # boot 1: three rides before the sync (a stale clock: 100 + uptime), then synced ones
    res = s.store_batch(7, 1, [ride(1, 110, 10, True), ride(2, 150, 50, True)])
    assert res.corrected == 0
    res = s.store_batch(
        7, 2, [ride(3, 190, 90, True), ride(4, 90_000_100, 100, False), ride(5, 90_000_200, 200, False)]
    )
    assert res.corrected == 3
    # boot 2: unsynced, never synced: stays uncorrected
    s.store_batch(7, 3, [ride(6, 30, 30, True, boot=2)])
    # a resend (duplicates) corrects nothing more
    assert s.store_batch(7, 4, [ride(3, 190, 90, True)]).corrected == 0
    got = {r["seq"]: r for r in s.ride_times(7)}
    assert [got[i]["time_corrected"] for i in (1, 2, 3)] == [90_000_010, 90_000_050, 90_000_090]
    assert all(got[i]["time_ref_seq"] == 4 for i in (1, 2, 3))
    assert [got[i]["time"] for i in (1, 2, 3)] == [110, 150, 190]  # the logged time is kept
    assert got[4]["time_corrected"] is None and got[5]["time_corrected"] is None  # synced: as logged
    assert got[6]["time_corrected"] is None and got[6]["time_ref_seq"] is None
    s.close()


def test_store_corrects_when_reference_came_first(tmp_path):
    s = Store(tmp_path / "g.db")
    s.ensure_reader(7, 12)
    s.store_batch(7, 1, [ride(3, 90_000_100, 100, False)])  # reordered: the synced ride first
    res = s.store_batch(7, 2, [ride(1, 5, 5, True), ride(2, 40, 40, True)])
    assert res.corrected == 2
    got = {r["seq"]: r["time_corrected"] for r in s.ride_times(7)}
    assert got == {1: 90_000_005, 2: 90_000_040, 3: None}
    s.close()


def test_schema_upgrade_adds_columns(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(str(db))
    con.execute(
        "CREATE TABLE rides (reader_id INTEGER, seq INTEGER, time INTEGER, uptime INTEGER, "
        "card_id TEXT, household INTEGER, floor INTEGER, fee INTEGER, result INTEGER, flags INTEGER, "
        "boot INTEGER, received_at FLOAT, up_counter INTEGER, PRIMARY KEY (reader_id, seq))"
    )
    con.commit()
    con.close()
    s = Store(db)
    assert {"time_corrected", "time_ref_seq"} <= set(s.db["rides"].columns_dict)
    s.close()


def test_daemon_stores_corrected_times(gw, treader):
    g, cfg, log, _ = gw
    r = treader(7)
    recs = [ride(1, 20, 20, True), ride(2, 60, 60, True), ride(3, 90_000_100, 100, False)]
    r.publish(link.build_rides(r.key, 7, 12, r.counter(), recs))
    assert r.ack() == 3
    assert log.wait(lambda x: x["event"] == "stored")["corrected"] == 2
    con = sqlite3.connect(str(cfg.db_path))
    rows = con.execute("SELECT seq, time, time_corrected FROM rides WHERE reader_id=7 ORDER BY seq").fetchall()
    assert rows == [(1, 20, 90_000_020), (2, 60, 90_000_060), (3, 90_000_100, None)]


# -- 3. bad input over the real broker ------------------------------------------------


def gateway_client(broker):
    # An intruder that may write anywhere under lc/ (the broker fixture's extra
    # user): the gateway's own credentials would take over its session.
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="inject-%d" % time.monotonic_ns(), protocol=mqtt.MQTTv311
    )
    c.username_pw_set(INTRUDER, broker.credentials[INTRUDER])
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    return c


def refusals(log):
    return [x for x in log.records if x["event"] == "refused"]


def wait_refusals(log, n):
    log.wait(lambda x: len(refusals(log)) >= n)
    return refusals(log)


def test_oversized_payload_refused(gw, treader):
    g, cfg, log, _ = gw
    r = treader(7)
    big = r.rides_msg([1]) + b"\0" * 5000  # longer than any link message (4148)
    r.publish(big)
    rec = wait_refusals(log, 1)[0]
    assert (rec["reader_id"], rec["reason"]) == (7, "size")
    r.no_ack()
    r.send([1, 2])
    assert r.ack() == 2 and db_rides(cfg, 7) == [1, 2]


def test_rides_for_a_on_b_topic_refused(gw, treader, keys):
    g, cfg, log, _ = gw
    a, b = treader(7), treader(8)
    # B's credentials, B's topic (the ACL lets it), a RIDES MAC'd with A's key naming A
    b.publish(link.build_rides(keys[7], 7, 12, a.counter(), [ride(1, 10, 10, False)]))
    # ... and one MAC'd with B's key that names A
    b.publish(link.build_rides(keys[8], 7, 12, b.counter(), [ride(1, 10, 10, False)]))
    got = wait_refusals(log, 2)
    assert [(x["reader_id"], x["reason"]) for x in got] == [(8, "mac"), (8, "reader")]
    a.no_ack(0.2)
    b.no_ack(0.2)
    assert db_rides(cfg, 7) == [] and db_rides(cfg, 8) == []
    b.send([1])
    assert b.ack() == 1 and db_rides(cfg, 8) == [1]


def test_unknown_reader_and_bad_topics_refused(gw, treader, broker):
    g, cfg, log, _ = gw
    c = gateway_client(broker)
    try:
        fake = link.build_rides(bytes(32), 99, 12, 1, [ride(1, 10, 10, False)])
        c.publish("lc/12/reader-99/up", fake, qos=1).wait_for_publish(10)
        c.publish("lc/12/reader-99/status", b"offline", qos=1).wait_for_publish(10)
        c.publish("lc/12/notareader/up", fake, qos=1).wait_for_publish(10)
        c.publish("lc/13/reader-7/up", fake, qos=1).wait_for_publish(10)  # reader 7 is in building 12
        got = wait_refusals(log, 4)
        assert [x["reason"] for x in got] == ["unknown_reader", "unknown_reader", "topic", "topic"]
    finally:
        c.disconnect()
        c.loop_stop()
    r = treader(7)
    r.send([1])
    assert r.ack() == 1 and db_rides(cfg, 7) == [1]


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b'{"rides": [1, 2', "size"),  # short JSON-ish garbage
        (b'{"reader_id": 7, "rides": [' + b'{"seq": 1}, ' * 8 + b']}', "magic"),  # long enough, not LCLK
        (b"LCLK\x02" + b"\0" * 60, "version"),
        (b"LCLK\x01" + b"\x01" + b"\0" * 58, "mac"),
        (b"\xff" * 40, "magic"),
    ],
)
def test_garbage_refused_daemon_keeps_storing(gw, treader, payload, reason):
    g, cfg, log, _ = gw
    r = treader(7)
    r.publish(payload)
    r.publish(payload, topic="status")
    got = wait_refusals(log, 2)
    assert [x["reason"] for x in got] == [reason, reason]
    assert not [x for x in log.records if x["event"] == "error"]
    r.send([1, 2, 3])
    assert r.ack() == 3 and db_rides(cfg, 7) == [1, 2, 3]
