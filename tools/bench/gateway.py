"""Gateway benchmark driver (CPython).

    .venv/bin/python tools/bench/gateway.py [--readers 20] [--rides 100000] [--backlog 1000000] [--quick]

Everything real: private Mosquitto instances (the local broker, and when the
upstream is measured the bank's broker with TLS and client certificates), the
gateway daemon as its own process (`python -m liftcard_gateway run`) with SQLite
in WAL mode and synchronous=FULL, and the reference ledger as its own process.

Phases (one JSON document on stdout, progress on stderr):

* live: R simulated readers (CPython, each its own broker user and link key)
  publish sealed RIDES messages of 32 records, each keeping at most `--window`
  messages unacknowledged (a real reader keeps one). The clock runs from the
  first publish until every ride is acknowledged: to the reader by the gateway
  (`gateway_ack`), and, with the upstream, by the ledger to the gateway
  (`ledger_ack`). Messages are sealed before the clock starts.
* baseline: the same rides inserted with plain sqlite3 into a table of the same
  shape, same journal mode and synchronous setting, one transaction per 32 rides
  (the gateway commits once per RIDES message), in this process. Ratios are
  gateway / baseline.
* backlog: a gateway database pre-filled with B rides (and one with B/10) is
  drained to the ledger by a freshly started gateway; the gateway's peak RSS
  (VmHWM) and the drain rate are recorded. A flat peak from B/10 to B shows the
  memory does not grow with the backlog.

Timings are wall-clock on a shared machine; the broker, the gateway, the ledger
and this driver share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for sub in ("gateway", "tools"):
    if str(REPO / sub) not in sys.path:
        sys.path.insert(0, str(REPO / sub))

import paho.mqtt.client as mqtt  # noqa: E402

from liftcard_protocol import link  # noqa: E402
from liftcard_protocol.ride import RideRecord  # noqa: E402
from liftcard_protocol.topics import reader_topics  # noqa: E402
from liftcard_gateway.store import Store  # noqa: E402
from liftcard_testing import configs, procs, programs, rides  # noqa: E402
from liftcard_testing.bankbroker import BankBroker  # noqa: E402
from liftcard_testing.devpki import make_dev_pki  # noqa: E402
from liftcard_testing.mosquitto import MosquittoInstance  # noqa: E402

BUILDING = 12
FIRST_READER = 1001
PER_MSG = link.MAX_RIDES  # 32


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def proc_mem(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def fs_type(path: Path) -> str:
    """The filesystem under path (fsync cost depends on it)."""
    best, typ = "", "?"
    p = str(path.resolve())
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and p.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, typ = parts[1], parts[2]
    except OSError:
        pass
    return typ


def ride(seq: int, boot: int = 1) -> RideRecord:
    # Fees vary so the totals are a real check; every ride is synced.
    return RideRecord(
        seq=seq,
        time=91_000_000 + seq,
        uptime=seq,
        card_id=0x1000_0000_0000_0000 + seq % 997,
        household=1 + seq % 50,
        floor=1 + seq % 6,
        fee=seq % 4 * 10,
        result=0,
        flags=0,
        boot=boot,
    )


# -- simulated readers ------------------------------------------------------------


class LoadReader:
    """One reader's link: sealed RIDES messages, at most `window` unacked."""

    def __init__(self, broker: MosquittoInstance, rid: int, key: bytes, rides: int, window: int):
        self.rid, self.key = rid, key
        self.topics = reader_topics(BUILDING, rid)
        self.window = threading.Semaphore(window)
        self.pending: deque = deque()  # last seq of each unacked message
        self.lock = threading.Lock()
        self.acked = 0
        self.last_down = 0
        self.total = rides
        self.done = threading.Event()
        self.msgs = []
        for i, first in enumerate(range(1, rides + 1, PER_MSG)):
            seqs = range(first, min(first + PER_MSG, rides + 1))
            self.msgs.append(
                (seqs[-1], link.build_rides(key, rid, BUILDING, link.counter_of(1, i + 1), [ride(s) for s in seqs]))
            )
        self._sub = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{rid}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311
        )
        c.username_pw_set(f"reader-{rid}", broker.credentials[f"reader-{rid}"])
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._sub.set()
        c.on_connect = lambda cl, *a: cl.subscribe(self.topics["down"], qos=1)
        c.max_inflight_messages_set(max(20, window * 2))
        c.connect(broker.host, broker.port, 60)
        c.loop_start()
        if not self._sub.wait(20):
            raise RuntimeError(f"simulated reader {rid} could not subscribe")
        self.client = c

    def _on_message(self, client, userdata, msg):
        try:
            m = link.parse(self.key, bytes(msg.payload), self.rid, BUILDING, link.DOWN, self.last_down)
        except Exception:
            return
        self.last_down = m.counter
        if m.kind != link.ACK:
            return
        with self.lock:
            self.acked = max(self.acked, m.seq)
            while self.pending and self.pending[0] <= self.acked:
                self.pending.popleft()
                self.window.release()
        if self.acked >= self.total:
            self.done.set()

    def run(self) -> None:
        for last, payload in self.msgs:
            self.window.acquire()
            with self.lock:
                self.pending.append(last)
            self.client.publish(self.topics["up"], payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- processes ------------------------------------------------------------------


def write_gateway_config(d: Path, broker: MosquittoInstance, keys: dict, extra: str = "") -> Path:
    return configs.write_gateway_config(
        d,
        broker,
        keys,
        {rid: BUILDING for rid in keys},
        extra=extra,
        first_seq=1,
        client_id=f"gw-bench-{uuid.uuid4().hex[:8]}",
        gateway_id="gw1",
    )


def start_gateway(cfg: Path, logdir: Path) -> subprocess.Popen:
    return programs.start_gateway(cfg, logdir / f"gateway-{time.monotonic_ns()}.log")


def wait_log(path_glob_dir: Path, needle: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in path_glob_dir.glob("gateway-*.log"):
            if needle in p.read_text(errors="replace"):
                return True
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen) -> None:
    procs.stop(proc, 20)


class MemSampler(threading.Thread):
    """Samples a process's RSS every 50 ms; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.05):
            m = proc_mem(self.pid)
            if not m:
                return
            self.peak_rss = max(self.peak_rss, m.get("VmRSS", 0))
            self.samples += 1

    def stop(self) -> dict:
        m = proc_mem(self.pid)
        self._halt.set()
        self.join(2)
        return {
            "peak_rss_kib": max(self.peak_rss, m.get("VmRSS", 0)),
            "vm_hwm_kib": m.get("VmHWM"),
            "samples": self.samples,
        }


# -- phases ---------------------------------------------------------------------


class Upstream:
    """The bank side: a TLS Mosquitto with client certificates and the
    reference ledger process."""

    def __init__(self, work: Path):
        self.work = work
        self.pki = make_dev_pki(work / "pki", ["gw1"])
        self.ledger = None
        self.bank = BankBroker(self.pki, ["gw1"]).start()
        try:
            self.ledger_cfg = configs.write_ledger_config(work / "ledger", self.pki, self.bank)
        except BaseException:
            self.bank.close()
            raise
        self.ledger_db = work / "ledger" / "ledger-data" / "ledger.db"

    def section(self, **extra) -> str:
        return configs.upstream_section(self.pki, self.bank, **extra)

    def start_ledger(self) -> None:
        self.ledger = programs.start_ledger(self.ledger_cfg, self.work / "ledger.log")

    def held(self) -> int:
        return sum(n for n, _ in rides.ledger_counts(self.ledger_db).values())

    def fees(self) -> int:
        return sum(f for _, f in rides.ledger_counts(self.ledger_db).values())

    def close(self) -> None:
        try:
            stop(self.ledger)
        finally:
            self.bank.close()


def wait_until(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def phase_live(work: Path, n_readers: int, rides: int, window: int, up: Upstream | None, batch_rides: int) -> dict:
    per = max(1, rides // n_readers)
    total = per * n_readers
    rids = [FIRST_READER + i for i in range(n_readers)]
    keys = {rid: secrets.token_bytes(32) for rid in rids}
    extra = up.section(batch_rides=batch_rides) if up else ""
    with MosquittoInstance(readers={rid: BUILDING for rid in rids}, workdir=work / "broker-live") as broker:
        d = work / "gw-live"
        cfg = write_gateway_config(d, broker, keys, extra)
        gw = start_gateway(cfg, d)
        try:
            if not wait_log(d, '"event":"subscribed"', 30):
                raise RuntimeError("the gateway did not subscribe within 30 s")
            log(f"live: sealing {total} rides for {n_readers} readers")
            readers = [LoadReader(broker, rid, keys[rid], per, window) for rid in rids]
            mem = MemSampler(gw.pid)
            mem.start()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=r.run, daemon=True) for r in readers]
            for t in threads:
                t.start()
            for r in readers:
                if not r.done.wait(600):
                    raise RuntimeError(f"reader {r.rid}: acked {r.acked} of {r.total} after 600 s")
            t_gw = time.perf_counter() - t0
            t_ledger = None
            if up is not None:
                wait_until(lambda: up.held() >= total, 600, "the ledger to hold every ride")
                t_ledger = time.perf_counter() - t0
            memo = mem.stop()
            for r in readers:
                r.close()
        finally:
            stop(gw)
        st = Store(d / "data" / "gateway.db")
        try:
            stored = st.ride_count()
        finally:
            st.close()
    out = {
        "readers": n_readers,
        "rides": total,
        "window": window,
        "rides_per_message": PER_MSG,
        "gateway_ack": {
            "seconds": round(t_gw, 3),
            "rides_per_s": round(total / t_gw, 1),
            "messages_per_s": round(total / PER_MSG / t_gw, 1),
        },
        "stored": stored,
        "gateway_exactly_once": stored == total,
        "gateway_memory": memo,
    }
    if up is not None:
        held = up.held()
        want_fees = sum(ride(s).fee for s in range(1, per + 1)) * n_readers
        out["ledger_ack"] = {
            "seconds": round(t_ledger, 3),
            "rides_per_s": round(total / t_ledger, 1),
            "batch_rides": batch_rides,
        }
        out["ledger_exactly_once"] = held == total
        out["ledger_fees_match"] = up.fees() == want_fees
    return out


def phase_backlog(work: Path, n: int, n_readers: int, up: Upstream, batch_rides: int, tag: str) -> dict:
    """A gateway database holding n rides not yet sent, drained to the ledger."""
    # Reader ids of their own: the ledger keys rides on (gateway, reader, seq),
    # so rides of an earlier phase must not count as these.
    first = FIRST_READER + 1000 * (2 if tag == "small" else 3)
    rids = {first + i: BUILDING for i in range(n_readers)}
    keys = {rid: secrets.token_bytes(32) for rid in rids}
    per = n // n_readers
    before = up.held()
    with MosquittoInstance(readers=rids, workdir=work / f"broker-{tag}") as broker:
        d = work / f"gw-{tag}"
        cfg = write_gateway_config(d, broker, keys, up.section(batch_rides=batch_rides))
        log(f"backlog {tag}: pre-filling {per * n_readers} rides")
        t = time.perf_counter()
        rides.prefill_fast(d / "data" / "gateway.db", rids, per)
        fill_s = time.perf_counter() - t
        gw = start_gateway(cfg, d)
        try:
            mem = MemSampler(gw.pid)
            mem.start()
            t0 = time.perf_counter()
            wait_until(lambda: up.held() - before >= per * n_readers, 1800, f"the ledger to drain {tag}")
            elapsed = time.perf_counter() - t0
            memo = mem.stop()
        finally:
            stop(gw)
    return {
        "rides": per * n_readers,
        "readers": n_readers,
        "batch_rides": batch_rides,
        "prefill_seconds": round(fill_s, 2),
        "drain_seconds": round(elapsed, 2),
        "rides_per_s": round(per * n_readers / elapsed, 1),
        "gateway_memory": memo,
        "ledger_exactly_once": up.held() - before == per * n_readers,
    }


RIDES_DDL = (
    "CREATE TABLE rides (reader_id INTEGER NOT NULL, seq INTEGER NOT NULL, time INTEGER, uptime INTEGER, "
    "card_id TEXT, household INTEGER, floor INTEGER, fee INTEGER, result INTEGER, flags INTEGER, "
    "boot INTEGER, received_at FLOAT, up_counter INTEGER, time_corrected INTEGER, time_ref_seq INTEGER, "
    "PRIMARY KEY (reader_id, seq))"
)


def phase_baseline(work: Path, n_readers: int, rides: int) -> dict:
    """Plain sqlite3 inserts of the same rides, one transaction per 32."""
    per = max(1, rides // n_readers)
    path = work / "baseline.db"
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(RIDES_DDL)
    rows = []
    for i in range(n_readers):
        rid = FIRST_READER + i
        for s in range(1, per + 1):
            r = ride(s)
            rows.append(
                (
                    rid,
                    s,
                    r.time,
                    r.uptime,
                    "%016x" % r.card_id,
                    r.household,
                    r.floor,
                    r.fee,
                    r.result,
                    r.flags,
                    r.boot,
                    0.0,
                    1,
                )
            )
    t0 = time.perf_counter()
    for k in range(0, len(rows), PER_MSG):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO rides (reader_id, seq, time, uptime, card_id, household, floor, "
            "fee, result, flags, boot, received_at, up_counter) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows[k : k + PER_MSG],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    n = conn.execute("SELECT count(*) FROM rides").fetchone()[0]
    conn.close()
    return {
        "rides": n,
        "transactions": (len(rows) + PER_MSG - 1) // PER_MSG,
        "seconds": round(elapsed, 3),
        "rides_per_s": round(n / elapsed, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="liftcard gateway benchmark (JSON on stdout, progress on stderr)")
    ap.add_argument("--readers", type=int, default=20, help="simulated readers in the live phase (default 20)")
    ap.add_argument("--rides", type=int, default=100_000, help="rides in the live phase (default 100,000)")
    ap.add_argument("--window", type=int, default=4, help="unacked RIDES messages per reader (default 4)")
    ap.add_argument(
        "--backlog",
        type=int,
        default=1_000_000,
        help="rides in the backlog phase (default 1,000,000; also run with a tenth; 0: skip)",
    )
    ap.add_argument("--batch-rides", type=int, default=500, help="rides per ledger batch (default 500)")
    ap.add_argument(
        "--quick", action="store_true", help="small run for the tests: 3 readers, 3,000 rides, backlog 20,000"
    )
    ap.add_argument("--tmp", help="directory for the databases and brokers (default: the system temp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.readers, args.rides, args.backlog = 3, 3000, 20_000
    for name in ("readers", "rides", "window", "batch_rides"):
        if getattr(args, name) < 1:
            print(f"gateway bench: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.backlog < 0:
        print("gateway bench: --backlog must be 0 or more", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lc-gwbench-", dir=args.tmp))
    doc = {
        "benchmark": "gateway",
        "command": " ".join(["tools/bench/gateway.py", *(argv or sys.argv[1:])]),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "tmp_fs": fs_type(work),
        },
        "targets": {"rides_per_s": 10_000, "backlog": 1_000_000},
    }
    up = None
    try:
        log("baseline: plain sqlite3 inserts")
        doc["baseline"] = phase_baseline(work, args.readers, args.rides)
        up = Upstream(work)
        up.start_ledger()
        log(f"live: {args.readers} readers, {args.rides} rides, reader -> gateway -> ledger")
        doc["live"] = phase_live(work, args.readers, args.rides, args.window, up, args.batch_rides)
        base = doc["baseline"]["rides_per_s"]
        doc["ratios"] = {
            "gateway_ack_vs_baseline": round(doc["live"]["gateway_ack"]["rides_per_s"] / base, 3),
            "ledger_ack_vs_baseline": round(doc["live"]["ledger_ack"]["rides_per_s"] / base, 3),
        }
        if args.backlog:
            small = max(args.readers, args.backlog // 10)
            doc["backlog"] = [
                phase_backlog(work, small, args.readers, up, args.batch_rides, "small"),
                phase_backlog(work, args.backlog, args.readers, up, args.batch_rides, "full"),
            ]
            a, b = (x["gateway_memory"]["peak_rss_kib"] for x in doc["backlog"])
            doc["ratios"]["backlog_peak_rss_full_vs_tenth"] = round(b / a, 3)
    finally:
        if up is not None:
            up.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    json.dump(doc, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
