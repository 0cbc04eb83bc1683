"""A gateway database restored from a backup (docs/gateway.md, "Restoring a
backup"): the readers were acknowledged for rides the restored copy lacks. At
its (re)connect the gateway asks every reader for a RESEND from the first seq
it lacks, and a heartbeat ahead of its records does the same; the reader sends
again what its log still holds, and what it no longer holds becomes a lost gap,
reported, never invented, that the ack runs past."""

import secrets
import shutil
import sqlite3
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liftcard_gateway.broker import find_tool
from liftcard_gateway.store import Store
from liftcard_protocol import link
from liftcard_protocol.errors import FormatError
from liftcard_protocol.ride import RideRecord
from liftcard_testing.daemonrig import daemon_broker, daemon_rig, db_acked, db_rides
from liftcard_testing.logcapture import EventLog
from liftcard_testing.site import READER_IDS, Site
from liftcard_testing.wait import wait_for

KEY = bytes(range(32))
RID, BID = 7, 12
READERS = {7: 12, 8: 12}
u32 = st.integers(0, 2**32 - 1)


def ride(seq):
    return RideRecord(
        seq=seq, time=1000 + seq, uptime=seq, card_id=0xFEDCBA9876543210, household=42, floor=3, fee=30, result=0,
        flags=0, boot=1,
    )  # fmt: skip


# -- the link: STATUS with the seqs, RESEND ------------------------------------------------


@given(u32, u32, st.integers(1, 2**64 - 1))
def test_status_with_seqs_round_trips(acked, oldest, counter):
    s = link.ReaderStatus(1, 2, 3, 4, 0, 0, link.ST_CLOCK_SYNCED, 5, 6, acked, oldest)
    msg = link.build_status(KEY, RID, BID, counter, s)
    assert len(msg) == link.HEADER_LEN + link.STATUS_SEQS_LEN + 16
    m = link.parse(KEY, msg, RID, BID, link.UP)
    assert m.status == s and (m.status.acked_seq, m.status.oldest_seq) == (acked, oldest)


def test_status_of_older_firmware_still_reads_without_seqs():
    s = link.ReaderStatus(1, 2, 3, 4)
    m = link.parse(KEY, link.build_status(KEY, RID, BID, 9, s), RID, BID, link.UP)
    assert m.status.acked_seq is None and m.status.oldest_seq is None
    with pytest.raises(FormatError):
        link.ReaderStatus(1, 2, 3, 4, acked_seq=5)  # both or neither


@given(u32, st.integers(1, 2**64 - 1))
def test_resend_round_trips(from_seq, counter):
    m = link.parse(KEY, link.build_resend(KEY, RID, BID, counter, from_seq), RID, BID, link.DOWN)
    assert (m.kind, m.from_seq) == (link.RESEND, from_seq)
    assert "from_seq=%d" % from_seq in repr(m)
    with pytest.raises(FormatError) as e:
        link.parse(KEY, link.build_resend(KEY, RID, BID, counter, from_seq), RID, BID, link.UP)
    assert e.value.reason == "kind"


# -- the store: a heartbeat ahead of the database ---------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(RID, BID, first_seq=1)
    yield s
    s.close()


def test_a_reader_not_ahead_is_left_alone(store):
    store.store_batch(RID, 1, [ride(s) for s in range(1, 11)])
    assert store.reader_ahead(RID, 10, 1) is None
    assert store.reader_ahead(RID, 8, 1) is None  # an ACK it has not had yet
    assert store.gaps(RID) == []


def test_a_reader_ahead_that_holds_everything_is_asked_to_resend(store):
    store.store_batch(RID, 1, [ride(s) for s in range(1, 11)])
    assert store.reader_ahead(RID, 30, 1) == (11, None, 10)
    assert store.gaps(RID) == [] and store.acked_seq(RID) == 10
    assert store.store_batch(RID, 2, [ride(s) for s in range(11, 31)]).ack_seq == 30


def test_what_the_reader_no_longer_holds_is_a_lost_gap_the_ack_runs_past(store):
    """Rides 11..30 were acknowledged after the backup; the reader has
    reclaimed up to 20. 11..20 are lost (a gap, never filled, never hidden);
    21..30 are asked for again; the reader's new rides 31.. (sent before the
    heartbeat) are acknowledged once 21..30 are back."""
    store.store_batch(RID, 1, [ride(s) for s in range(1, 11)])
    r = store.store_batch(RID, 2, [ride(s) for s in range(31, 34)])
    assert r.ack_seq == 10 and r.new_gaps == ((11, 30),)
    assert store.reader_ahead(RID, 30, 21) == (21, (11, 20), 20)
    gaps = store.gaps(RID)
    assert [(g["from_seq"], g["to_seq"], g["filled_at"]) for g in gaps] == [(11, 30, None), (11, 20, None)]
    lost = store.conn.execute("SELECT from_seq, to_seq FROM gaps WHERE lost_at IS NOT NULL").fetchall()
    assert lost == [(11, 20)]
    assert store.reader_ahead(RID, 30, 21) == (21, None, 20)  # again: nothing more lost, no new row
    assert store.store_batch(RID, 3, [ride(s) for s in range(21, 31)]).ack_seq == 33
    assert store.ride_count(RID) == 10 + 10 + 3  # nothing invented for 11..20
    assert store.reader_ahead(RID, 33, 21) is None


def test_a_lost_range_keeps_what_is_stored_inside_it(store):
    store.store_batch(RID, 1, [ride(s) for s in (1, 2, 5, 6)])
    assert store.reader_ahead(RID, 9, 8) == (8, (3, 7), 7)
    lost = store.conn.execute("SELECT from_seq, to_seq FROM gaps WHERE lost_at IS NOT NULL ORDER BY from_seq")
    assert lost.fetchall() == [(3, 4), (7, 7)]


def test_a_reader_unknown_to_the_restored_database_is_asked_from_seq_1(tmp_path):
    s = Store(tmp_path / "gw.db")
    try:
        s.ensure_reader(RID, BID)
        assert s.reader_ahead(RID, 0, 1) is None
        assert s.reader_ahead(RID, 40, 17) == (1, None, 0)
    finally:
        s.close()


# -- the daemon over a real broker ---------------------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    try:
        find_tool("mosquitto")
    except Exception:  # pragma: no cover
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    with daemon_broker(READERS) as b:
        yield b


def test_the_daemon_asks_for_a_resend_at_start_and_at_a_heartbeat_ahead(tmp_path, broker):
    keys = {rid: secrets.token_bytes(32) for rid in READERS}
    with daemon_rig(tmp_path, broker, keys, EventLog()) as (g, cfg, log, reader):
        r = reader(7)
        r.send(range(1, 11))
        assert r.ack() == 10
        con = sqlite3.connect(str(cfg.db_path))
        backup = sqlite3.connect(str(tmp_path / "backup.db"))
        con.backup(backup)  # the operator's online backup
        backup.close()
        con.close()
        r.send(range(11, 31))
        assert r.ack() == 30
        r.close()
    shutil.copy(tmp_path / "backup.db", cfg.db_path)
    for extra in ("-wal", "-shm"):
        (tmp_path / "data" / ("gateway.db" + extra)).unlink(missing_ok=True)
    log = EventLog()
    with daemon_rig(tmp_path, broker, keys, log) as (g, cfg, log, reader):
        r = reader(7, boot=2)
        assert db_acked(cfg, 7) == 10
        # At its connect the gateway asked (the reader may have been offline then:
        # the heartbeat at its reconnect asks again, once the interval allows).
        ev = log.wait(lambda x: x["event"] == "resend_sent")
        assert (ev["reader_id"], ev["from_seq"], ev["why"]) == (7, 11, "connect")
        g._resent.clear()
        r.send_status(acked_seq=30, oldest_seq=16)
        got = [r.resends.get(timeout=10)]
        while got[-1] == 11:  # the connect's RESEND, if this reader subscribed in time for it
            got.append(r.resends.get(timeout=10))
        assert got[-1] == 16, got
        lost = log.wait(lambda x: x["event"] == "rides_lost")
        assert (lost["reader_id"], lost["from_seq"], lost["to_seq"], lost["acked_seq"]) == (7, 11, 15, 15)
        assert r.ack() == 15
        r.send(range(16, 31))
        assert r.ack() == 30 == db_acked(cfg, 7)
        assert db_rides(cfg, 7) == list(range(1, 11)) + list(range(16, 31))
        r.send_status(acked_seq=30, oldest_seq=16)  # caught up: nothing more asked
        time.sleep(0.5)
        assert r.resends.empty()


# -- the whole site: restore an old copy under load ----------------------------------------------


@pytest.fixture
def site(tmp_path):
    try:
        find_tool("mosquitto")
    except Exception:  # pragma: no cover
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    s = Site(tmp_path, seed=20261130)
    try:
        yield s
    finally:
        s.close()


def test_restoring_an_old_backup_under_load_keeps_every_ride_once(site, tmp_path):
    """Three virtual readers (the firmware under micropython) tap on; the
    operator backs the database up, rides go on and are acknowledged, the
    gateway is stopped, the old copy put back, and it starts again while
    the readers keep tapping: every ride of every reader is in the database
    exactly once, with no gap, and every reader fully acknowledged."""
    site.taps(6)
    site.wait_all_acked()
    con = sqlite3.connect(f"file:{site.db_path}?mode=ro", uri=True)
    backup = sqlite3.connect(str(tmp_path / "backup.db"))
    con.backup(backup)
    backup.close()
    con.close()
    site.taps(12)
    before = site.wait_all_acked()
    site.kill_gateway()
    site.taps(3)  # taps go on while the gateway is down
    shutil.copy(tmp_path / "backup.db", site.db_path)
    for extra in ("-wal", "-shm"):
        site.db_path.with_name("gateway.db" + extra).unlink(missing_ok=True)
    site.start_gateway()
    site.taps(6)
    wait_for(lambda: "resend_sent" in site.gw_log_text(), 30, "the gateway to ask for a resend")
    by_reader = site.check_exactly_once(min_rides=18)
    for rid in READER_IDS:
        assert len(by_reader[rid]) > before[rid] >= 18
