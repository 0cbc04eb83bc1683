"""Retention (retention.py): only rides the ledger acknowledged, old enough,
inside a reader's contiguous run are pruned; (reader, seq) dedupe holds after
pruning; totals stay whole; the database stops growing at a steady load."""

import json
import sqlite3
import subprocess
import sys

from liftcard_gateway import overview, retention
from liftcard_gateway.config import RetentionConf
from liftcard_gateway.db import transaction
from liftcard_gateway.metrics import tap_totals
from liftcard_gateway.store import Store
from liftcard_protocol.codes import Result
from liftcard_protocol.ride import RideRecord
from liftcard_testing.paths import REPO

DAY = 86400
T0 = 1_780_000_000.0  # a Unix time in 2026


def ride(seq, fee=40, result=0, household=7):
    return RideRecord(
        seq=seq, time=5000 + seq, uptime=seq, card_id=0xABCDEF, household=household, floor=3,
        fee=fee, result=result, flags=0, boot=1,
    )  # fmt: skip


def ack_upstream(conn, reader_id, now, through_seq=None):
    """What upstream.py records when the ledger acknowledges a batch: the
    reader's rides up to through_seq (default: all) are acked."""
    q = "SELECT min(rowid), max(rowid), count(*), min(seq), max(seq) FROM rides WHERE reader_id=?"
    args = [reader_id]
    if through_seq is not None:
        q += " AND seq<=?"
        args.append(through_seq)
    lo, hi, n, fs, ls = conn.execute(q, args).fetchone()
    with transaction(conn):
        conn.execute(
            "INSERT INTO upstream_batches (reader_id, building_id, first_rowid, last_rowid, first_seq, last_seq, "
            "rides, created_at, acked_at) VALUES (?, 12, ?, ?, ?, ?, ?, ?, ?)",
            (reader_id, lo, hi, fs, ls, n, now, now),
        )
        conn.execute(
            "INSERT INTO upstream_readers (reader_id, sent_rowid, acked_rowid, acked_rides, acked_batches, "
            "last_ack_at) VALUES (?,?,?,?,1,?) ON CONFLICT(reader_id) DO UPDATE SET sent_rowid=excluded.sent_rowid, "
            "acked_rowid=excluded.acked_rowid, acked_rides=acked_rides+excluded.acked_rides, "
            "acked_batches=acked_batches+1, last_ack_at=excluded.last_ack_at",
            (reader_id, hi, hi, n, now),
        )


def seqs(st, rid):
    return [r.seq for r in st.rides(rid)]


def make_store(tmp_path):
    st = Store(tmp_path / "gateway.db")
    st.ensure_reader(7, 12)
    st.ensure_reader(8, 12)
    return st


def test_prunes_only_acked_old_rides_and_dedupe_holds(tmp_path):
    st = make_store(tmp_path)
    st.store_batch(7, 1, [ride(s) for s in range(1, 11)], now=T0)
    st.store_batch(8, 1, [ride(s) for s in range(1, 11)], now=T0)
    ack_upstream(st.conn, 7, T0 + 60)  # reader 8's rides never reached the ledger
    st.store_batch(7, 2, [ride(s) for s in range(11, 13)], now=T0 + 89 * DAY)  # young
    ack_upstream(st.conn, 7, T0 + 89 * DAY)

    res = retention.prune(st.conn, 90, now=T0 + 91 * DAY)
    assert res.rides == 10 and res.readers == {7: 10}
    assert seqs(st, 7) == [11, 12]  # acked, but younger than 90 days
    assert seqs(st, 8) == list(range(1, 11))  # never acked by the ledger: kept, however old
    assert st.reader(7)["pruned_seq"] == 10

    # A reader resending rides the gateway pruned: duplicates, acked, nothing stored again.
    r = st.store_batch(7, 3, [ride(s) for s in range(1, 11)], now=T0 + 92 * DAY)
    assert (r.inserted, r.duplicates, r.ack_seq) == (0, 10, 12)
    assert seqs(st, 7) == [11, 12]
    r = st.store_batch(7, 4, [ride(s) for s in range(5, 15)], now=T0 + 92 * DAY)
    assert (r.inserted, r.duplicates, r.ack_seq) == (2, 8, 14)
    assert seqs(st, 7) == [11, 12, 13, 14]
    st.close()


def test_never_prunes_past_a_gap_nor_unacked_rides(tmp_path):
    st = make_store(tmp_path)
    st.store_batch(7, 1, [ride(s) for s in range(1, 11)], now=T0)
    r = st.store_batch(7, 2, [ride(s) for s in range(15, 21)], now=T0)
    assert r.new_gaps == ((11, 14),) and r.ack_seq == 10
    ack_upstream(st.conn, 7, T0)
    st.store_batch(8, 1, [ride(1)], now=T0 + 100 * DAY)  # the top rowid is another reader's
    retention.prune(st.conn, 90, now=T0 + 100 * DAY)
    assert seqs(st, 7) == list(range(15, 21))  # past the gap: kept until it is filled
    assert st.reader(7)["pruned_seq"] == 10
    r = st.store_batch(7, 3, [ride(s) for s in range(11, 15)], now=T0 + 100 * DAY)
    assert (r.inserted, r.ack_seq) == (4, 20)  # the gap's rides were never taken for duplicates
    assert st.gaps(7, open_only=True) == []

    # Acked by the ledger only up to seq 15: nothing after it goes.
    st2 = Store(tmp_path / "b" / "gateway.db")
    st2.ensure_reader(7, 12)
    st2.store_batch(7, 1, [ride(s) for s in range(1, 31)], now=T0)
    ack_upstream(st2.conn, 7, T0, through_seq=15)
    st2.ensure_reader(8, 12)
    st2.store_batch(8, 1, [ride(1)], now=T0)
    retention.prune(st2.conn, 90, now=T0 + 100 * DAY)
    assert seqs(st2, 7) == list(range(16, 31))
    st.close()
    st2.close()


def test_keeps_the_top_rowid_so_new_rides_are_still_forwarded(tmp_path):
    """Pruning every ride would let SQLite number the next one below the
    upstream's acked position: it would never reach the ledger."""
    st = Store(tmp_path / "gateway.db")
    st.ensure_reader(7, 12)
    st.store_batch(7, 1, [ride(s) for s in range(1, 21)], now=T0)
    ack_upstream(st.conn, 7, T0)
    retention.prune(st.conn, 90, now=T0 + 100 * DAY)
    assert seqs(st, 7) == [20]
    st.store_batch(7, 2, [ride(21)], now=T0 + 100 * DAY)
    up = overview.snapshot(st.conn, upstream=True, cards=False)["upstream"]
    assert up["backlog"] == 1  # the new ride waits for the ledger
    st.close()


def test_totals_and_acked_batches_after_pruning(tmp_path):
    st = make_store(tmp_path)
    rides = [ride(s, fee=s % 7 * 10, result=0 if s % 5 else int(Result.LOST)) for s in range(1, 101)]
    for i in range(0, 100, 10):
        st.store_batch(7, i + 1, rides[i : i + 10], now=T0)
        ack_upstream(st.conn, 7, T0)
    st.store_batch(8, 1, [ride(1)], now=T0 + 100 * DAY)
    before = tap_totals(st.conn)
    res = retention.prune(st.conn, 90, now=T0 + 100 * DAY)
    assert res.rides == 100 and res.batches == 9  # the newest batch row stays: it numbers the next
    assert tap_totals(st.conn) == before
    assert st.conn.execute("SELECT count(*) FROM upstream_batches").fetchone()[0] == 1
    st.close()


def test_database_stops_growing_over_a_simulated_year(tmp_path):
    """Steady load, 90 days kept: the file after month 12 is about the one
    after month 4 (in pages); without retention it keeps growing."""

    def year(path, keep):
        st = Store(path)
        st.ensure_reader(7, 12)
        pages, seq, ctr = [], 0, 0
        for month in range(12):
            for day in range(30):
                now = T0 + (month * 30 + day) * DAY
                ctr += 1
                st.store_batch(7, ctr, [ride(seq + i + 1, household=(seq + i) % 50) for i in range(100)], now=now)
                seq += 100
                ack_upstream(st.conn, 7, now)
                if keep:
                    retention.prune(st.conn, 90, now=now)
            pages.append(st.conn.execute("PRAGMA page_count").fetchone()[0])
        st.close()
        return pages

    kept = year(tmp_path / "kept.db", True)
    grown = year(tmp_path / "grown.db", False)
    assert kept[11] <= kept[3] * 1.15, kept
    assert grown[11] >= grown[3] * 2, grown
    c = sqlite3.connect(tmp_path / "kept.db")
    assert (
        c.execute("SELECT sum(rides) FROM pruned_rides").fetchone()[0]
        + c.execute("SELECT count(*) FROM rides").fetchone()[0]
        == 36000
    )
    c.close()


def test_daemon_timer_runs_and_logs(tmp_path):
    st = Store(tmp_path / "gateway.db")
    st.ensure_reader(7, 12)
    st.store_batch(7, 1, [ride(s) for s in range(1, 21)], now=T0)
    ack_upstream(st.conn, 7, T0)
    st.close()
    events = []

    class Log:
        def __call__(self, event, **kw):
            events.append((event, kw))

    r = retention.Retention(RetentionConf(acked_ride_days=1), tmp_path / "gateway.db", log=None)
    r.log = Log()
    res = r.run_once()
    assert res.rides == 19
    assert events == [("pruned", {"rides": 19, "batches": 0, "readers": [7]})]


def test_benchmark_runs_quick():
    """tools/bench/retention.py --quick: the database with retention levels
    off, the one without keeps growing, a resent first day is all duplicates."""
    res = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench" / "retention.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["ratios"]["kept_month12_over_month4"] < 1.2
    assert doc["ratios"]["all_month12_over_month4"] > 2
    assert doc["with_retention"]["resend_first_day"]["inserted"] == 0
    assert doc["without_retention"]["resend_first_day"]["inserted"] == 0
    months = doc["with_retention"]["months"]
    assert months[-1]["rides_held"] + months[-1]["rides_pruned"] == doc["load"]["rides_per_month"] * 12


def test_the_daemon_prunes_on_its_timer(tmp_path):
    """A gateway with [retention]: the daemon prunes at start (then every
    every_s) while it runs, logs `pruned`, and still dedupes a resend."""
    import secrets
    import threading

    from liftcard_gateway.config import load_config
    from liftcard_gateway.daemon import Gateway
    from liftcard_testing.configs import write_gateway_config
    from liftcard_testing.daemonrig import daemon_broker
    from liftcard_testing.logcapture import EventLog
    from liftcard_testing.simreader import SimReader

    keys = {7: secrets.token_bytes(32)}
    with daemon_broker({7: 12}) as broker:
        path = write_gateway_config(
            tmp_path / "gw", broker, keys, {7: 12}, extra="\n[retention]\nacked_ride_days = 30\n"
        )
        cfg = load_config(path)
        st = Store(cfg.db_path)
        st.ensure_reader(7, 12)
        st.store_batch(7, 1, [ride(s) for s in range(1, 11)], now=T0)
        ack_upstream(st.conn, 7, T0)
        st.close()
        log = EventLog()
        g = Gateway(cfg, log=log)
        t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
        t.start()
        r = None
        try:
            assert g.wait_ready(10)
            ev = log.wait(lambda x: x["event"] == "pruned")
            assert (ev["rides"], ev["readers"]) == (9, [7])  # the newest ride stays
            r = SimReader(broker, 7, keys[7], boot=2)
            r.send(range(1, 13))  # 1..9 pruned, 10 held, 11..12 new
            assert r.ack() == 12
            st = Store(cfg.db_path)
            assert seqs(st, 7) == [10, 11, 12]
            st.close()
        finally:
            if r is not None:
                r.close()
            g.stop()
            t.join(15)
        assert not t.is_alive()
