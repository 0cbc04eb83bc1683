"""Retention benchmark (CPython): gateway.db's size over a simulated year,
with and without retention (docs/benchmarks.md, "Gateway database over a year").

    .venv/bin/python tools/bench/retention.py [--readers 20] [--rides-per-day 200] [--days-kept 90] [--quick]

Each simulated day every reader's rides go in through the real store
(store.Store.store_batches: one transaction per day, as the daemon's group
commit), the ledger then acknowledges them all (what upstream.py records: an
acked batch and upstream_readers.acked_rowid), and, in the run with
retention, retention.prune() runs with the day's clock (the daemon runs it
every `every_s`). Months are 30 days. After each month the JSON records the
database's size on disk (file + WAL), its pages, free pages and rides held.
At the end a reader resends its first day's rides to the store: with
retention they were pruned long ago and must all come back as duplicates.

One JSON document on stdout, progress on stderr. Prune times are wall-clock
on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from liftcard_gateway import retention
from liftcard_gateway.db import transaction
from liftcard_gateway.store import Store
from liftcard_protocol.ride import RideRecord

DAY = 86400
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
BUILDING = 12


def rides_of(reader_id: int, first_seq: int, n: int, day: int) -> list[RideRecord]:
    """A day's rides of a reader: fees in fen, a few free, a few denied."""
    out = []
    for i in range(n):
        s = first_seq + i
        denied = s % 23 == 0
        out.append(
            RideRecord(
                seq=s,
                time=day * DAY + i * 60,
                uptime=i * 60,
                card_id=0x1000_0000_0000 + (reader_id * 7919 + s) % 3000,
                household=1 + (reader_id * 31 + s) % 600,
                floor=1 + s % 6,
                fee=0 if denied or s % 11 == 0 else 40 + 10 * (s % 6),
                result=1 if denied else 0,
                flags=0,
                boot=1,
            )
        )
    return out


def ledger_acks(conn, reader_ids, now: float) -> None:
    """The ledger acknowledges every stored ride (upstream.py's records)."""
    with transaction(conn):
        for rid in reader_ids:
            lo, hi, n, fs, ls = conn.execute(
                "SELECT min(rowid), max(rowid), count(*), min(seq), max(seq) FROM rides WHERE reader_id=? "
                "AND rowid>(SELECT COALESCE(max(acked_rowid), 0) FROM upstream_readers WHERE reader_id=?)",
                (rid, rid),
            ).fetchone()
            if not n:
                continue
            conn.execute(
                "INSERT INTO upstream_batches (reader_id, building_id, first_rowid, last_rowid, first_seq, "
                "last_seq, rides, created_at, acked_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (rid, BUILDING, lo, hi, fs, ls, n, now, now),
            )
            conn.execute(
                "INSERT INTO upstream_readers (reader_id, sent_rowid, acked_rowid, acked_rides, acked_batches, "
                "last_ack_at) VALUES (?,?,?,?,1,?) ON CONFLICT(reader_id) DO UPDATE SET "
                "sent_rowid=excluded.sent_rowid, acked_rowid=excluded.acked_rowid, "
                "acked_rides=acked_rides+excluded.acked_rides, acked_batches=acked_batches+1, "
                "last_ack_at=excluded.last_ack_at",
                (rid, hi, hi, n, now),
            )


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(str(path) + "-wal")) if p.exists())


def year(path: Path, readers: int, per_day: int, months: int, keep_days: int | None) -> dict:
    st = Store(path)
    ids = list(range(1, readers + 1))
    for rid in ids:
        st.ensure_reader(rid, BUILDING)
    seq = {rid: 1 for rid in ids}
    counter = {rid: 0 for rid in ids}
    out, prune_s, pruned = [], [], 0
    for month in range(months):
        for d in range(30):
            day = month * 30 + d
            now = T0 + day * DAY + 3600 * 20
            items = []
            for rid in ids:
                counter[rid] += 1
                items.append((rid, counter[rid], rides_of(rid, seq[rid], per_day, day)))
                seq[rid] += per_day
            for res in st.store_batches(items, now=now):
                assert not isinstance(res, Exception), res
            ledger_acks(st.conn, ids, now)
            if keep_days is not None:
                t = time.perf_counter()
                pruned += retention.prune(st.conn, keep_days, now=now).rides
                prune_s.append(time.perf_counter() - t)
        c = st.conn
        out.append(
            {
                "month": month + 1,
                "bytes": db_bytes(path),
                "pages": c.execute("PRAGMA page_count").fetchone()[0],
                "free_pages": c.execute("PRAGMA freelist_count").fetchone()[0],
                "rides_held": c.execute("SELECT count(*) FROM rides").fetchone()[0],
                "rides_pruned": pruned,
            }
        )
        print(
            "  %s month %2d: %d bytes" % ("kept" if keep_days else "all ", month + 1, out[-1]["bytes"]), file=sys.stderr
        )
    # A reader resends its first day's rides: duplicates whether held or pruned.
    counter[1] += 1
    res = st.store_batch(1, counter[1], rides_of(1, 1, per_day, 0), now=T0 + months * 30 * DAY)
    st.close()
    return {
        "months": out,
        "resend_first_day": {"rides": per_day, "inserted": res.inserted, "duplicates": res.duplicates},
        "prune_s": {"passes": len(prune_s), "max": max(prune_s, default=0.0), "total": sum(prune_s)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--rides-per-day", type=int, default=200, help="per reader")
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--days-kept", type=int, default=90, help="[retention] acked_ride_days")
    ap.add_argument("--quick", action="store_true", help="3 readers, 40 rides a day (what the tests run)")
    ap.add_argument("--tmp", help="where the databases go (default: a temporary directory)")
    args = ap.parse_args(argv)
    if args.quick:
        args.readers, args.rides_per_day = 3, 40
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        print("with retention (%d days kept)" % args.days_kept, file=sys.stderr)
        kept = year(Path(d) / "kept.db", args.readers, args.rides_per_day, args.months, args.days_kept)
        print("without retention", file=sys.stderr)
        grown = year(Path(d) / "all.db", args.readers, args.rides_per_day, args.months, None)
    doc = {
        "benchmark": "gateway database size over a simulated year",
        "command": " ".join(["tools/bench/retention.py"] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "load": {
            "readers": args.readers,
            "rides_per_reader_per_day": args.rides_per_day,
            "rides_per_month": args.readers * args.rides_per_day * 30,
            "months": args.months,
            "days_kept": args.days_kept,
        },
        "with_retention": kept,
        "without_retention": grown,
    }
    k, g = kept["months"], grown["months"]
    if len(k) >= 12:
        doc["ratios"] = {
            "kept_month12_over_month4": round(k[11]["pages"] / k[3]["pages"], 3),
            "all_month12_over_month4": round(g[11]["pages"] / g[3]["pages"], 3),
            "kept_over_all_at_month12": round(k[11]["bytes"] / g[11]["bytes"], 3),
        }
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
