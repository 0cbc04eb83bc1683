"""The gateway daemon against a REAL private Mosquitto and a simulated reader
(liftcard_testing.simreader: CPython, building its messages with link.py and
its own broker credentials)."""

import contextlib
import json
import os
import queue
import secrets
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from liftcard_protocol import link
from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import load_config
from liftcard_protocol.ride import RideRecord
from liftcard_testing import procs
from liftcard_testing.configs import write_gateway_config
from liftcard_testing.daemonrig import daemon_broker, daemon_rig, db_acked, db_rides
from liftcard_testing.logcapture import EventLog
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.programs import start_gateway
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
    recs = [
        RideRecord(
            seq=s,
            time=5000 + s,
            uptime=s,
            card_id=0xDEADBEEF,
            household=7,
            floor=4,
            fee=40,
            result=0,
            flags=0x02 if s != 2 else 0,
            boot=r.boot,
        )
        for s in (1, 2, 3)
    ]
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
    r.publish(
        link.build_status(
            r.key, 8, 12, r.counter(), link.ReaderStatus(uptime=100, free_heap=90000, backlog=17, wl_version=5)
        ),
        topic="status",
    )
    log.wait(lambda x: x["event"] == "status" and x["reader_id"] == 8)
    out = subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", "status", "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = lines[0]
    for col in ("reader", "building", "last seen", "acked seq", "backlog", "wl version", "gaps"):
        assert col in head
    row8 = [ln.split() for ln in lines[2:] if ln.split()[:1] == ["8"]][0]  # sections below are set apart by blank lines
    assert row8[1] == "12" and "17" in row8 and "5" in row8 and "90000" in row8


# -- the real process ------------------------------------------------------------


def test_sigterm_clean_exit(tmp_path, broker, keys):
    cfg = write_gateway_config(tmp_path, broker, keys, READERS)
    logf = tmp_path / "gw.log"
    with procs.running(start_gateway(cfg, logf, ready="subscribed")) as p:
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    text = logf.read_text()
    assert "Traceback" not in text
    assert json.loads(text.strip().splitlines()[-1])["event"] == "stopped"
    for ln in text.strip().splitlines():
        json.loads(ln)  # every line one JSON object


def test_kill9_restart_no_duplicates_acks_resume(tmp_path, broker, keys):
    cfg_path = write_gateway_config(tmp_path, broker, keys, READERS)
    cfg = load_config(cfg_path)
    with contextlib.ExitStack() as ends:  # the gateway processes and the reader, pass or fail

        def started(n):
            return ends.enter_context(
                procs.running(start_gateway(cfg_path, tmp_path / f"gw-{n}.log", ready="subscribed"))
            )

        p = started(1)
        r = SimReader(broker, 7, keys[7])
        ends.callback(r.close)
        r.send(range(1, 33))
        assert r.ack() == 32
        p.kill()
        p.wait(10)
        # while the gateway is dead: a resend (ack "lost") and a new batch, queued by the broker
        r.send(range(1, 33))
        r.send(range(33, 65))
        p = started(2)
        got = [r.ack(15), r.ack(15)]
        assert got[-1] == 64  # acks resume, with down counters still growing (SimReader checks)
        assert db_rides(cfg, 7) == list(range(1, 65))
        assert db_acked(cfg, 7) == 64
        r.send(range(1, 10))  # an old resend after the restart is acked, not stored again
        assert r.ack(15) == 64
        assert db_rides(cfg, 7) == list(range(1, 65))
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0


@pytest.mark.parametrize(
    "body, key",
    [
        ("[gateway]\n", "gateway.data_dir"),
        ("not toml [[[", "not valid TOML"),
    ],
)
def test_bad_config_one_line_error(tmp_path, body, key):
    p = tmp_path / "gw.toml"
    p.write_text(body)
    out = subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and key in out.stderr


def test_bad_config_secret_not_shown(tmp_path, broker, keys):
    cfg = write_gateway_config(tmp_path, broker, keys, READERS)
    os.chmod(tmp_path / "broker.pass", 0o644)
    out = subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
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
    with daemon_rig(tmp_path, sun_broker, keys, EventLog(), SUN_READERS) as rig:  # (g, cfg, log, reader)
        yield rig


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
