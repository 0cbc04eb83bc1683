"""/metrics (metrics.py): a scrape reads the database (no bookkeeping of its
own), parses as Prometheus text, agrees with `status --json`; counters stay
whole after retention; every alert rule names only metrics the gateway
exports."""

import re
import sqlite3
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from liftcard_gateway import metrics, overview, refusals, retention
from liftcard_gateway.db import connect, transaction
from liftcard_gateway.store import Store
from liftcard_protocol import link
from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.ride import RideRecord

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "liftcard-alerts.yml"
T0 = 1_780_000_000.0


def ride(seq, fee=40, result=0, flags=0):
    return RideRecord(seq, 5000 + seq, seq, 0xABCDEF, 7, 3, fee, result, flags, 1)


def scrape(db_path, upstream=True, cards=True) -> dict:
    """{sample name: {labels tuple: value}} of one scrape."""
    text = metrics.render(metrics.registry_for(db_path, upstream, cards)).decode()
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def populated(tmp_path) -> Path:
    st = Store(tmp_path / "gateway.db")
    st.ensure_reader(7, 12)
    st.ensure_reader(8, 12)
    st.store_batch(
        7,
        1,
        [
            ride(1, 40),
            ride(2, 0, flags=int(Flag.LEGACY_UID)),
            ride(3, 0, result=int(Result.AUTH_FAILED)),
            ride(4, 25),
        ],
        now=T0,
    )
    st.store_batch(7, 2, [ride(9, 10)], now=T0)  # gap 5..8
    st.store_status(
        7,
        3,
        link.ReaderStatus(
            100,
            54321,
            3,
            5,
            flags=link.ST_CLOCK_SYNCED,
            time=1000,
            acked_seq=4,
            oldest_seq=5,
            rssi=-61,
            fw_version=(0, 1, 0),
            wl_capacity=36279,
        ),
    )
    st.store_batch(8, 1, [ride(1, 30)], now=T0)
    refusals.record(st.conn, 8, "mac", known=True)
    refusals.record(st.conn, 99, "unknown_reader", known=False)
    c = st.conn
    with transaction(c):  # the card database at version 7; the upstream: reader 7 acked through its 4th ride
        c.execute("INSERT INTO card_meta (key, value) VALUES ('version', 7)")
        c.execute(
            "INSERT INTO upstream_batches (reader_id, building_id, first_rowid, last_rowid, first_seq, last_seq, "
            "rides, created_at, acked_at) VALUES (7, 12, 1, 4, 1, 4, 4, ?, ?), (7, 12, 5, 5, 9, 9, 1, ?, NULL)",
            (T0, T0, T0 + 10),
        )
        c.execute(
            "INSERT INTO upstream_readers (reader_id, sent_rowid, acked_rowid, acked_rides, acked_batches, last_ack_at) "
            "VALUES (7, 5, 4, 4, 1, ?)",
            (T0,),
        )
    st.close()
    return tmp_path / "gateway.db"


def test_scrape_reads_the_database_and_matches_status(tmp_path):
    db = populated(tmp_path)
    m = scrape(db)
    r7 = (("building", "12"), ("reader", "7"))
    r8 = (("building", "12"), ("reader", "8"))
    assert m["liftcard_up"][()] == 1
    assert m["liftcard_reader_online"] == {r7: 1, r8: 1}
    assert m["liftcard_reader_backlog_rides"] == {r7: 3}  # reader 8 sent no heartbeat
    assert m["liftcard_reader_free_heap_bytes"][r7] == 54321
    assert m["liftcard_reader_whitelist_version"][r7] == 5
    assert m["liftcard_reader_card_version_lag"] == {r7: 2}
    assert m["liftcard_reader_rssi_dbm"] == {r7: -61}  # reader 8 never said
    assert m["liftcard_reader_whitelist_capacity_cards"] == {r7: 36279}
    assert m["liftcard_reader_whitelist_too_big"] == {r7: 0, r8: 0}
    assert m["liftcard_card_database_version"][()] == 7
    assert m["liftcard_rides_stored"] == {r7: 5, r8: 1}
    assert m["liftcard_reader_open_gaps"] == {r7: 1, r8: 0}
    assert m["liftcard_gaps_open"][()] == 1
    assert m["liftcard_reader_legacy_rides"][r7] == 1
    taps = m["liftcard_taps_total"]
    assert taps[r7[:1] + (("reader", "7"), ("result", "granted"))] == 4
    assert taps[r7[:1] + (("reader", "7"), ("result", "auth_failed"))] == 1
    assert m["liftcard_fees_fen_total"] == {r7: 75, r8: 30}
    assert m["liftcard_refusals_total"] == {
        (("reader", "0"), ("reason", "unknown_reader")): 1,
        (("reader", "8"), ("reason", "mac")): 1,
    }
    assert m["liftcard_upstream_backlog_rides"] == {(("reader", "7"),): 1, (("reader", "8"),): 1}
    assert m["liftcard_upstream_oldest_unacked_batch_age_seconds"][()] > 0
    assert m["liftcard_db_size_bytes"][()] > 0 and m["liftcard_data_disk_size_bytes"][()] > 0

    # The same figures as status --json.
    conn = connect(db, readonly=True)
    snap = overview.snapshot(conn)
    conn.close()
    for r in snap["readers"]:
        lab = (("building", str(r["building_id"])), ("reader", str(r["reader_id"])))
        assert m["liftcard_rides_stored"][lab] == r["stored"]
        assert m["liftcard_reader_open_gaps"][lab] == r["open_gaps"]
    assert sum(m["liftcard_upstream_backlog_rides"].values()) == snap["upstream"]["backlog"]

    # Every family the module lists is in a full scrape, and nothing else.
    assert {n for n in m if not n.endswith("_created")} == set(metrics.METRIC_NAMES)


def test_a_scrape_sees_new_rides_without_restart(tmp_path):
    db = populated(tmp_path)
    reg = metrics.registry_for(db)
    first = metrics.render(reg).decode()
    st = Store(db)
    st.store_batch(8, 2, [ride(2, 5), ride(3, 5)])
    st.close()
    again = metrics.render(reg).decode()
    assert 'liftcard_rides_stored{building="12",reader="8"} 1.0' in first
    assert 'liftcard_rides_stored{building="12",reader="8"} 3.0' in again


def test_counters_stay_whole_after_retention(tmp_path):
    db = populated(tmp_path)
    before = scrape(db)
    conn = sqlite3.connect(db, isolation_level=None)
    retention.prune(conn, 1, now=T0 + 10 * 86400)
    conn.close()
    after = scrape(db)
    assert after["liftcard_rides_stored"][(("building", "12"), ("reader", "7"))] < 5  # pruned
    assert after["liftcard_taps_total"] == before["liftcard_taps_total"]
    assert after["liftcard_fees_fen_total"] == before["liftcard_fees_fen_total"]


def test_an_unreadable_database_is_liftcard_up_0(tmp_path):
    m = scrape(tmp_path / "missing" / "gateway.db")
    assert m == {"liftcard_up": {(): 0.0}}


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan",
}  # fmt: skip


def expr_metrics(expr: str) -> set:
    """The metric names a PromQL expression reads: identifiers that are not a
    function call, a keyword, a label matcher's inside or a string/duration."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function
        if m.group(0).lower() in _PROMQL_WORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # 1e3, 0.10
        names.add(m.group(0))
    return names


def test_expr_metrics_reader():
    assert expr_metrics('increase(a_total{x=~"b|c"}[5m]) > 0 and sum by (r) (d) / e < 0.10') == {
        "a_total",
        "d",
        "e",
    }


def test_every_alert_names_only_exported_metrics(tmp_path):
    exported = set(scrape(populated(tmp_path)))
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    seen = set()
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["alert"] and r["labels"]["severity"] in ("info", "warning", "critical")
        names = expr_metrics(str(r["expr"]))
        assert names, r["alert"]
        assert names <= exported, (r["alert"], names - exported)
        seen |= names
    # docs/operations.md's alerts: offline readers, gaps, the upstream, refusals and forgeries, the disk.
    for need in (
        "liftcard_reader_online",
        "liftcard_gap_oldest_open_age_seconds",
        "liftcard_upstream_oldest_backlog_age_seconds",
        "liftcard_refusals_total",
        "liftcard_taps_total",
        "liftcard_data_disk_free_bytes",
    ):
        assert need in seen, need


def test_a_reader_taken_out_of_the_config_leaves_health_but_not_the_upstream(tmp_path):
    """`readers remove` takes the login away, so no Last Will ever marks the
    reader offline: its frozen row would read online (and its open gap would
    alert) for ever. Its rides still count until the ledger has them."""
    db = populated(tmp_path)
    text = metrics.render(metrics.registry_for(db, configured=lambda: {8})).decode()
    m: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            m.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    r8 = (("building", "12"), ("reader", "8"))
    assert m["liftcard_reader_online"] == {r8: 1}
    assert m["liftcard_reader_open_gaps"] == {r8: 0}
    assert m["liftcard_gaps_open"][()] == 0
    assert m.get("liftcard_reader_card_version_lag", {}) == {}
    assert m["liftcard_upstream_backlog_rides"] == {(("reader", "7"),): 1, (("reader", "8"),): 1}
    assert m["liftcard_fees_fen_total"] == {(("building", "12"), ("reader", "7")): 75, r8: 30}

    conn = connect(db, readonly=True)
    try:
        snap = overview.snapshot(conn, configured={8})
    finally:
        conn.close()
    assert [r["reader_id"] for r in snap["readers"]] == [8]
    assert snap["gaps"] == [] and [c["reader_id"] for c in snap["cards"]["readers"]] == [8]
    assert [u["reader_id"] for u in snap["upstream"]["readers"]] == [7, 8]
