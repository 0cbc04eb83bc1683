"""/metrics (docs/gateway.md, "Metrics and alerts"): the gateway's figures in
the Prometheus text format, read from gateway.db at each scrape.

A prometheus_client Collector: at each scrape it opens a read-only
connection, takes overview.snapshot() (the figures `status --json` prints)
and the per-result tap totals, and turns them into metric families. Nothing
is counted twice: the daemon keeps no metric of its own, the database is the
one record. Counters that must outlive retention (taps, fees) add what
retention.py pruned (pruned_rides) to what is stored. Label values are ids,
result and reason names: never a card id.

The alert rules that read these are deploy/prometheus/liftcard-alerts.yml.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from liftcard_protocol.codes import RESULT_NAMES, Result

from . import overview
from .db import connect

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Every metric family this module exports (the alert rules' test checks
# their expressions against this list).
METRIC_NAMES = (
    "liftcard_up",
    "liftcard_reader_online",
    "liftcard_reader_last_seen_age_seconds",
    "liftcard_reader_backlog_rides",
    "liftcard_reader_free_heap_bytes",
    "liftcard_reader_rssi_dbm",
    "liftcard_reader_whitelist_capacity_cards",
    "liftcard_reader_clock_drift_seconds",
    "liftcard_reader_open_gaps",
    "liftcard_reader_legacy_rides",
    "liftcard_reader_whitelist_version",
    "liftcard_reader_card_version_lag",
    "liftcard_reader_whitelist_too_big",
    "liftcard_rides_stored",
    "liftcard_taps_total",
    "liftcard_fees_fen_total",
    "liftcard_gaps_open",
    "liftcard_gap_oldest_open_age_seconds",
    "liftcard_refusals_total",
    "liftcard_upstream_backlog_rides",
    "liftcard_upstream_oldest_unacked_batch_age_seconds",
    "liftcard_upstream_oldest_backlog_age_seconds",
    "liftcard_card_database_version",
    "liftcard_db_size_bytes",
    "liftcard_db_free_pages",
    "liftcard_data_disk_free_bytes",
    "liftcard_data_disk_size_bytes",
)


def tap_totals(conn) -> dict:
    """(reader_id, result) -> (taps, fees in fen): stored plus pruned."""
    out: dict = {}
    g = int(Result.GRANTED)
    queries = [
        "SELECT reader_id, result, count(*), COALESCE(sum(CASE WHEN result=%d THEN fee ELSE 0 END), 0) "
        "FROM rides GROUP BY reader_id, result" % g,
        "SELECT reader_id, result, rides, fees FROM pruned_rides",
    ]
    for q in queries:
        try:
            rows = conn.execute(q).fetchall()
        except sqlite3.OperationalError:  # a database from before retention
            continue
        for rid, res, n, fees in rows:
            a, b = out.get((rid, res), (0, 0))
            out[(rid, res)] = (a + n, b + (fees or 0))
    return out


class GatewayCollector(Collector):
    """db_path: gateway.db; upstream / cards: the config has those sections;
    configured: None (every reader of the database) or a function giving the
    config's reader ids at each scrape (overview.snapshot), so a reader taken
    out of the config leaves the reader families."""

    def __init__(self, db_path, upstream: bool = True, cards: bool = True, configured=None):
        self.db_path = Path(db_path)
        self.upstream = upstream
        self.cards = cards
        self.configured = configured

    def describe(self):
        return []  # families are known only at a scrape: never collect() at registration

    def collect(self):
        up = GaugeMetricFamily("liftcard_up", "1 when the gateway database could be read at this scrape")
        try:
            conn = connect(self.db_path, readonly=True)
            try:
                snap = overview.snapshot(
                    conn, self.upstream, self.cards, configured=None if self.configured is None else self.configured()
                )
                taps = tap_totals(conn)
                # A removed reader's counters keep their building label.
                buildings = {rid: str(b) for rid, b in conn.execute("SELECT reader_id, building_id FROM readers")}
            finally:
                conn.close()
        except (OSError, sqlite3.Error):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(snap, taps, buildings)
        yield from self._disk()

    def _families(self, snap: dict, taps: dict, buildings: dict | None = None):
        now = snap["generated_at"]
        rl = ["reader", "building"]

        def g(name, doc, labels=rl):
            return GaugeMetricFamily(name, doc, labels=labels)

        online = g("liftcard_reader_online", "1 while the reader is online (its Last Will not fired)")
        age = g("liftcard_reader_last_seen_age_seconds", "seconds since the reader's last message")
        backlog = g("liftcard_reader_backlog_rides", "rides the reader holds unacknowledged (its last heartbeat)")
        heap = g("liftcard_reader_free_heap_bytes", "the reader's free heap at its last heartbeat")
        drift = g("liftcard_reader_clock_drift_seconds", "the reader's clock minus the gateway's (synced readers)")
        gaps = g("liftcard_reader_open_gaps", "open gaps in the reader's sequence numbers")
        legacy = g("liftcard_reader_legacy_rides", "stored rides granted to a bare-UID card (legacy mode)")
        wl = g("liftcard_reader_whitelist_version", "the whitelist version of the reader's last heartbeat")
        rssi = g("liftcard_reader_rssi_dbm", "the reader's Wi-Fi signal at its last heartbeat (readers that say)")
        cap = g("liftcard_reader_whitelist_capacity_cards", "the cards the reader's whitelist can hold (its heartbeat)")
        stored = g("liftcard_rides_stored", "ride records (taps) held in the gateway database")
        building = dict(buildings or {})
        for r in snap["readers"]:
            lab = [str(r["reader_id"]), str(r["building_id"])]
            building[r["reader_id"]] = str(r["building_id"])
            online.add_metric(lab, 1 if r["online"] else 0)
            if r["last_seen"] is not None:
                age.add_metric(lab, max(0.0, now - r["last_seen"]))
            for fam, key in (
                (backlog, "backlog"),
                (heap, "free_heap"),
                (drift, "clock_drift_s"),
                (wl, "wl_version"),
                (rssi, "rssi"),
                (cap, "wl_capacity"),
            ):
                if r[key] is not None:
                    fam.add_metric(lab, r[key])
            gaps.add_metric(lab, r["open_gaps"])
            legacy.add_metric(lab, r["legacy"])
            stored.add_metric(lab, r["stored"])
        yield from (online, age, backlog, heap, drift, gaps, legacy, wl, stored, rssi, cap)

        tap = CounterMetricFamily(
            "liftcard_taps",
            "taps recorded by result (granted ones are rides), pruned ones included",
            labels=["reader", "building", "result"],
        )
        fees = CounterMetricFamily("liftcard_fees_fen", "fees of granted rides in fen, pruned ones included", labels=rl)
        fee_sum: dict = {}
        for (rid, res), (n, f) in sorted(taps.items()):
            b = building.get(rid, "0")
            tap.add_metric([str(rid), b, RESULT_NAMES.get(res, str(res)).lower()], n)
            fee_sum[(rid, b)] = fee_sum.get((rid, b), 0) + f
        for (rid, b), f in sorted(fee_sum.items()):
            fees.add_metric([str(rid), b], f)
        yield from (tap, fees)

        open_gaps = GaugeMetricFamily("liftcard_gaps_open", "open gaps, every reader")
        open_gaps.add_metric([], len(snap["gaps"]))
        oldest_gap = GaugeMetricFamily(
            "liftcard_gap_oldest_open_age_seconds", "age of the oldest open gap (0: none open)"
        )
        noticed = [x["noticed_at"] for x in snap["gaps"] if x["noticed_at"] is not None]
        oldest_gap.add_metric([], max(0.0, now - min(noticed)) if noticed else 0)
        ref = CounterMetricFamily(
            "liftcard_refusals",
            "refused link messages by reader (0: not a configured reader) and reason",
            labels=["reader", "reason"],
        )
        for x in snap["refusals"]:
            ref.add_metric([str(x["reader_id"]), x["reason"]], x["count"])
        yield from (open_gaps, oldest_gap, ref)

        u = snap["upstream"]
        if u is not None:
            ub = GaugeMetricFamily(
                "liftcard_upstream_backlog_rides",
                "rides stored but not yet acknowledged by the ledger",
                labels=["reader"],
            )
            for r in u["readers"]:
                ub.add_metric([str(r["reader_id"])], r["backlog"])
            batch_age = GaugeMetricFamily(
                "liftcard_upstream_oldest_unacked_batch_age_seconds",
                "age of the oldest batch sent to the ledger and not acknowledged (0: none)",
            )
            t = u["oldest_unacked_batch_at"]
            batch_age.add_metric([], max(0.0, now - t) if t is not None else 0)
            ride_age = GaugeMetricFamily(
                "liftcard_upstream_oldest_backlog_age_seconds",
                "time since the oldest ride not acknowledged by the ledger was received (0: none)",
            )
            t = u["oldest_backlog_at"]
            ride_age.add_metric([], max(0.0, now - t) if t is not None else 0)
            yield from (ub, batch_age, ride_age)

        c = snap["cards"]
        if c is not None:
            ver = GaugeMetricFamily("liftcard_card_database_version", "the card database's version (0: empty)")
            ver.add_metric([], c["version"])
            lag = g("liftcard_reader_card_version_lag", "card database version minus the reader's whitelist version")
            big = g(
                "liftcard_reader_whitelist_too_big",
                "1 while the full list the reader needs is not sent: more cards than its capacity",
            )
            for r in c["readers"]:
                lab = [str(r["reader_id"]), str(r["building_id"])]
                if r["lag"] is not None:
                    lag.add_metric(lab, r["lag"])
                big.add_metric(lab, 1 if r["state"] == "too_big" else 0)
            yield from (ver, lag, big)

        d = snap["database"]
        size = GaugeMetricFamily("liftcard_db_size_bytes", "gateway.db and its WAL on disk")
        size.add_metric([], d["bytes"])
        free = GaugeMetricFamily("liftcard_db_free_pages", "free pages inside gateway.db (reused before it grows)")
        free.add_metric([], d["free_pages"])
        yield from (size, free)

    def _disk(self):
        try:
            st = os.statvfs(self.db_path.parent)
        except OSError:
            return
        free = GaugeMetricFamily("liftcard_data_disk_free_bytes", "free bytes on the data directory's file system")
        free.add_metric([], st.f_bavail * st.f_frsize)
        size = GaugeMetricFamily("liftcard_data_disk_size_bytes", "size of the data directory's file system")
        size.add_metric([], st.f_blocks * st.f_frsize)
        yield from (free, size)


def registry_for(db_path, upstream: bool = True, cards: bool = True, configured=None) -> CollectorRegistry:
    """A registry of its own (no process metrics of the test or CLI process)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(db_path, upstream, cards, configured))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The text a scrape gets."""
    return generate_latest(registry)
