"""Rides for tests and benchmarks: deterministic records and fees, a gateway
database pre-filled with them (through the real Store, or fast by direct
inserts), and what the reference ledger holds per reader."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from liftcard_gateway.store import Store
from liftcard_protocol.ride import RideRecord


def ride(seq: int, fee: int, card: int = 0x0123456789ABCDEF, flags: int = 0, boot: int = 1) -> RideRecord:
    return RideRecord(
        seq=seq,
        time=1_000_000 + seq,
        uptime=100 + seq,
        card_id=card,
        household=seq % 5000,
        floor=1 + seq % 6,
        fee=fee,
        result=0,
        flags=flags,
        boot=boot,
    )


def fee_of(reader_id: int, seq: int) -> int:
    """A deterministic fee in fen (0 .. 250) for test rides."""
    return (reader_id * 7919 + seq * 104729) % 251


def prefill(db_path: Path, readers: dict, per_reader: int, chunk: int = 32) -> dict:
    """Store per_reader rides for each reader through store.Store.store_batch, in
    interleaved chunks (like readers uploading at once). Returns
    {reader_id: (count, fee total)}."""
    st = Store(db_path)
    try:
        for rid, bid in readers.items():
            st.ensure_reader(rid, bid)
        counters = {rid: st.last_counter(rid) for rid in readers}
        done = {rid: 0 for rid in readers}
        while any(done[r] < per_reader for r in readers):
            for rid in readers:
                lo = done[rid]
                hi = min(per_reader, lo + chunk)
                if lo >= hi:
                    continue
                counters[rid] += 1
                st.store_batch(rid, counters[rid], [ride(s, fee_of(rid, s)) for s in range(lo + 1, hi + 1)])
                done[rid] = hi
    finally:
        st.close()
    return {rid: (per_reader, sum(fee_of(rid, s) for s in range(1, per_reader + 1))) for rid in readers}


def prefill_fast(db_path: Path, readers: dict, per_reader: int, chunk: int = 10000) -> None:
    """Many rides quickly (benchmarks): direct inserts into the store's rides table."""
    st = Store(db_path)
    for rid, bid in readers.items():
        st.ensure_reader(rid, bid)
    st.close()
    c = sqlite3.connect(str(db_path), isolation_level=None)
    c.execute("PRAGMA synchronous=OFF")
    now = time.time()
    for lo in range(0, per_reader, chunk):
        c.execute("BEGIN")
        for rid in readers:
            c.executemany(
                "INSERT INTO rides (reader_id, seq, time, uptime, card_id, household, floor, fee, result, "
                "flags, boot, received_at, up_counter) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        rid,
                        s,
                        1_000_000 + s,
                        100 + s,
                        "0123456789abcdef",
                        s % 5000,
                        1 + s % 6,
                        fee_of(rid, s),
                        0,
                        0,
                        1,
                        now,
                        1,
                    )
                    for s in range(lo + 1, min(per_reader, lo + chunk) + 1)
                ],
            )
        c.execute("COMMIT")
    c.close()


def ledger_counts(db_path: Path) -> dict:
    """{(gateway_id, reader_id): (rides, fees)} read from the ledger's DB (safe while it runs)."""
    if not Path(db_path).exists():
        return {}
    c = sqlite3.connect(str(db_path), timeout=30)
    try:
        try:
            return {
                (g, r): (n, f)
                for g, r, n, f in c.execute(
                    "SELECT gateway_id, reader_id, count(*), COALESCE(sum(fee),0) FROM rides GROUP BY 1, 2"
                )
            }
        except sqlite3.OperationalError:
            return {}
    finally:
        c.close()
