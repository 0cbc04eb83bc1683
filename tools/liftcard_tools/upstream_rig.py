"""Helpers to set up the upstream link for tests, the demo and benchmarks:
a development PKI, the bank broker, a ledger config, a gateway config with an
[upstream] section, and a gateway database pre-filled with rides.

Nothing here is a mock: the files are the real configs, the broker is a real
Mosquitto (liftcard_gateway.bank_broker), the ledger is tools/liftcard_tools/ledger.py.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from liftcard_protocol.ride import RideRecord
from liftcard_gateway.store import Store

REPO = Path(__file__).resolve().parents[2]


def write_ledger_config(dir: Path, pki, bank, gateway_ids=("gw1",), data_dir: str = "ledger-data",
                        client_id: str | None = None) -> Path:
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    gws = "".join('[[gateways]]\ngateway_id = "%s"\npublic_key_file = "%s"\n\n'
                  % (g, pki.gateways[g]["public_key"]) for g in gateway_ids)
    p = dir / "ledger.toml"
    p.write_text('[ledger]\ndata_dir = "%s"\nsigning_key_file = "%s"\n\n[broker]\nhost = "%s"\nport = %d\n'
                 'ca_file = "%s"\ncert_file = "%s"\nkey_file = "%s"\nclient_id = "%s"\n\n'
                 '[cards]\ncert_file = "%s"\nkey_file = "%s"\n\n%s'
                 % (data_dir, pki.ledger_signing_key, bank.host, bank.port, pki.ca_cert, pki.ledger_cert,
                    pki.ledger_key, client_id or "ledger-%s" % secrets.token_hex(4), pki.cards_cert, pki.cards_key,
                    gws))
    return p


def upstream_section(pki, bank, gateway_id: str = "gw1", **extra) -> str:
    g = pki.gateways[gateway_id]
    lines = ["[upstream]", 'gateway_id = "%s"' % gateway_id, 'host = "%s"' % bank.host, "port = %d" % bank.port,
             'ca_file = "%s"' % pki.ca_cert, 'cert_file = "%s"' % g["cert"], 'key_file = "%s"' % g["key"],
             'signing_key_file = "%s"' % g["signing_key"], 'ledger_public_key_file = "%s"' % pki.ledger_public_key]
    for k, v in extra.items():
        lines.append("%s = %s" % (k, '"%s"' % v if isinstance(v, str) else v))
    return "\n".join(lines) + "\n"


def write_gateway_config(dir: Path, local_broker, reader_keys: dict, readers: dict, upstream: str | None,
                         client_id: str | None = None) -> Path:
    """A gateway TOML (like tests/test_gateway_daemon.py's) plus an [upstream] section."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    pw = dir / "broker.pass"
    pw.write_text(local_broker.credentials["gateway"] + "\n")
    os.chmod(pw, 0o600)
    rs = ""
    for rid, bid in readers.items():
        kf = dir / ("reader-%d.key" % rid)
        kf.write_text(reader_keys[rid].hex())
        os.chmod(kf, 0o600)
        rs += '[[readers]]\nreader_id = %d\nbuilding_id = %d\nkey_file = "%s"\n\n' % (rid, bid, kf.name)
    p = dir / "gw.toml"
    p.write_text('[gateway]\ndata_dir = "data"\n\n[broker]\nhost = "%s"\nport = %d\nusername = "gateway"\n'
                 'password_file = "broker.pass"\nclient_id = "%s"\n\n%s%s'
                 % (local_broker.host, local_broker.port, client_id or "gw-%s" % secrets.token_hex(4), rs,
                    upstream or ""))
    return p


def ride(seq: int, fee: int, card: int = 0x0123456789ABCDEF, flags: int = 0, boot: int = 1) -> RideRecord:
    return RideRecord(seq=seq, time=1_000_000 + seq, uptime=100 + seq, card_id=card, household=seq % 5000,
                      floor=1 + seq % 6, fee=fee, result=0, flags=flags, boot=boot)


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
            c.executemany("INSERT INTO rides (reader_id, seq, time, uptime, card_id, household, floor, fee, result, "
                          "flags, boot, received_at, up_counter) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          [(rid, s, 1_000_000 + s, 100 + s, "0123456789abcdef", s % 5000, 1 + s % 6, fee_of(rid, s),
                            0, 0, 1, now, 1) for s in range(lo + 1, min(per_reader, lo + chunk) + 1)])
        c.execute("COMMIT")
    c.close()


def start_ledger(config: Path, log_path: Path) -> subprocess.Popen:
    """The reference ledger as its own process (stderr -> log_path)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    out = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "liftcard_tools.ledger", "run", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, cwd=str(REPO))
    finally:
        out.close()


def start_gateway(config: Path, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    out = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "liftcard_gateway", "run", "--config", str(config)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, cwd=str(REPO))
    finally:
        out.close()


def ledger_counts(db_path: Path) -> dict:
    """{(gateway_id, reader_id): (rides, fees)} read from the ledger's DB (safe while it runs)."""
    if not Path(db_path).exists():
        return {}
    c = sqlite3.connect(str(db_path), timeout=30)
    try:
        try:
            return {(g, r): (n, f) for g, r, n, f in c.execute(
                "SELECT gateway_id, reader_id, count(*), COALESCE(sum(fee),0) FROM rides GROUP BY 1, 2")}
        except sqlite3.OperationalError:
            return {}
    finally:
        c.close()
