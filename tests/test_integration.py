"""End to end, all real (issue 3, "Tests", first part): a private Mosquitto
(MosquittoInstance), the gateway daemon as its own process
(`python -m liftcard_gateway run`), and three virtual readers (firmware/main.py
under the real micropython, 192K heap) in the same building, each with its own
reader id, key and broker password, registered in the broker and in the
gateway's TOML config.

Every scenario taps ~30 rides per reader (granted with fees, granted free and
denied), then waits until every reader's log is acknowledged and checks the
gateway's SQLite (opened read-only) against each reader's `DUMP`: the same seqs,
the same record bytes, nothing twice, and per-reader fee totals equal to the
fen. Faults: kill -9 of the gateway mid-stream, a Mosquitto restart, and the
broker gone for a few seconds while the readers keep tapping.

Only generous timeouts and polling; no timing is asserted."""

import json
import os
import random
import signal
import sqlite3
import time
import uuid
import zlib
from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt.client")

from liftcard_gateway.broker import MosquittoInstance, find_tool  # noqa: E402
from liftcard_protocol.card import CardRecord  # noqa: E402
from liftcard_protocol.ride import RideRecord
from liftcard_protocol.whitelist import build_whitelist
from test_gateway_daemon import start_proc  # noqa: E402
from test_reader_badinput import CONFIG, VirtualReader  # noqa: E402

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)

BUILDING = 12
READER_IDS = (101, 102, 103)
TAPS = 30
SYNC_TIMEOUT = 60.0


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(0.1)


class Site:
    """Broker + gateway process + three virtual readers, torn down in close()."""

    def __init__(self, tmp_path: Path, seed: int):
        self.tmp = tmp_path
        self.rng = random.Random(seed)
        self.readers = {}
        self.gw = None
        self.gw_logs = []
        self.broker = MosquittoInstance(readers={rid: BUILDING for rid in READER_IDS}).start()
        try:
            self.keys = {rid: bytes(self.rng.randrange(256) for _ in range(32)) for rid in READER_IDS}
            # Each reader's own whitelist: some paying cards, one free (exempt) class card.
            self.cards = {}
            for rid in READER_IDS:
                base = 0x1000000000000000 * (rid - 100)
                self.cards[rid] = [CardRecord(base + i, 500 + i, 0b1001) for i in range(1, 9)]
                self.cards[rid].append(CardRecord(base + 0x99, 599, 0b100001))
            self.cfg_path = self._write_gateway_config()
            self.db_path = self.tmp / "gw" / "data" / "gateway.db"
            self.start_gateway()
            for rid in READER_IDS:
                self.readers[rid] = self._start_reader(rid)
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------
    def _write_gateway_config(self) -> Path:
        d = self.tmp / "gw"
        d.mkdir()
        pw = d / "broker.pass"
        pw.write_text(self.broker.credentials["gateway"] + "\n")
        os.chmod(pw, 0o600)
        readers = ""
        for rid in READER_IDS:
            kf = d / f"reader-{rid}.key"
            kf.write_text(self.keys[rid].hex())
            os.chmod(kf, 0o600)
            readers += (f"[[readers]]\nreader_id = {rid}\nbuilding_id = {BUILDING}\n"
                        f"key_file = \"{kf.name}\"\nfirst_seq = 1\n")
        p = d / "gw.toml"
        p.write_text(f"""
[gateway]
data_dir = "data"
[broker]
host = "{self.broker.host}"
port = {self.broker.port}
username = "gateway"
password_file = "broker.pass"
client_id = "gw-{uuid.uuid4().hex[:12]}"
{readers}""")
        return p

    def start_gateway(self):
        self.gw, logf = start_proc(self.cfg_path, self.tmp)
        self.gw_logs.append(logf)

    def kill_gateway(self):
        self.gw.send_signal(signal.SIGKILL)
        self.gw.wait(10)

    def _start_reader(self, rid):
        d = self.tmp / f"reader-{rid}"
        d.mkdir()
        r = VirtualReader(d)
        cfg = dict(CONFIG, reader_id=rid, building_id=BUILDING, key=self.keys[rid].hex(),
                   uplink={"host": self.broker.host, "port": self.broker.port,
                           "password": self.broker.credentials[f"reader-{rid}"], "keepalive_s": 10})
        reply = r.command("CONFIG " + r.file("config.json", json.dumps(cfg).encode()))
        assert reply.startswith(f"OK config reader {rid}"), reply
        wl = r.file("wl1.bin", build_whitelist(self.keys[rid], rid, BUILDING, 1, self.cards[rid]))
        assert r.command("WL " + wl) == f"OK whitelist v1 {len(self.cards[rid])} cards"
        assert r.command("TIME 91000000") == "OK time 91000000"
        return r

    # -- traffic --------------------------------------------------------------
    def tap_round(self, pause=0.03):
        """One tap on every reader: mostly whitelisted cards to paying floors,
        some unknown cards (denied), some ground-floor/exempt rides (free)."""
        for rid, r in self.readers.items():
            x = self.rng.random()
            if x < 0.2:
                card = 0xDEAD000000000000 + self.rng.randrange(1 << 32)  # not on the whitelist
            else:
                card = self.rng.choice(self.cards[rid]).card_id
            rec = r.tap(card, self.rng.randrange(0, 7))
            assert rec.seq >= 1
        time.sleep(pause)  # the readers' idle() (and uplink) runs between taps

    def taps(self, n, pause=0.03):
        for _ in range(n):
            self.tap_round(pause)

    # -- checks ---------------------------------------------------------------
    def gw_log_text(self):
        return "\n".join(p.read_text(errors="replace") for p in self.gw_logs)

    def wait_all_acked(self, timeout=SYNC_TIMEOUT):
        last = {rid: r.status()["next_seq"] - 1 for rid, r in self.readers.items()}

        def done():
            return all(self.readers[rid].status()["acked"] == last[rid] for rid in last)
        try:
            wait_for(done, timeout, "every reader's log to be acknowledged")
        except AssertionError:
            st = {rid: r.status() for rid, r in self.readers.items()}
            raise AssertionError("not all acked: last=%r\nreaders=%r\ngateway log tail:\n%s"
                                 % (last, st, self.gw_log_text()[-3000:]))
        return last

    def dump(self, rid):
        r = self.readers[rid]
        r.send(b"DUMP 1 1000\n")
        lines = r.until(("OK", "ERR"))
        assert lines[-1].startswith("OK"), lines[-1]
        out = {}
        for ln in lines:
            if ln.startswith("REC "):
                raw = bytes.fromhex(ln.split()[1])
                rec = RideRecord.unpack(raw)
                assert rec.seq not in out, "the reader's DUMP repeats seq %d" % rec.seq
                out[rec.seq] = raw
        return out

    def db_rows(self):
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            con.row_factory = sqlite3.Row
            rides = con.execute("SELECT * FROM rides ORDER BY reader_id, seq").fetchall()
            readers = {row["reader_id"]: dict(row) for row in con.execute("SELECT * FROM readers")}
            open_gaps = con.execute("SELECT COUNT(*) FROM gaps WHERE filled_at IS NULL").fetchone()[0]
            fees = dict(con.execute("SELECT reader_id, SUM(fee) FROM rides GROUP BY reader_id").fetchall())
            return rides, readers, open_gaps, fees
        finally:
            con.close()

    def check_exactly_once(self, min_rides):
        last = self.wait_all_acked()
        rides, readers, open_gaps, db_fees = self.db_rows()
        seen = set()
        by_reader = {rid: {} for rid in READER_IDS}
        for row in rides:
            key = (row["reader_id"], row["seq"])
            assert key not in seen, "duplicate ride in the gateway DB: %r" % (key,)
            seen.add(key)
            rec = RideRecord(seq=row["seq"], time=row["time"], uptime=row["uptime"],
                             card_id=int(row["card_id"], 16), household=row["household"],
                             floor=row["floor"], fee=row["fee"], result=row["result"],
                             flags=row["flags"], boot=row["boot"])
            assert row["reader_id"] in by_reader, "a ride from an unknown reader: %r" % (key,)
            by_reader[row["reader_id"]][row["seq"]] = rec.pack()
        assert open_gaps == 0
        for rid in READER_IDS:
            log = self.dump(rid)
            assert len(log) == last[rid] >= min_rides, (rid, len(log), last[rid])
            assert sorted(log) == list(range(1, last[rid] + 1))
            assert set(by_reader[rid]) == set(log), \
                "reader %d: DB seqs differ from the log (missing %r, extra %r)" % (
                    rid, sorted(set(log) - set(by_reader[rid]))[:10], sorted(set(by_reader[rid]) - set(log))[:10])
            for seq, raw in log.items():
                assert by_reader[rid][seq] == raw, "reader %d seq %d: DB record differs from the log" % (rid, seq)
            fees = sum(RideRecord.unpack(raw).fee for raw in log.values())
            assert db_fees.get(rid, 0) == fees, (rid, db_fees.get(rid), fees)
            assert readers[rid]["acked_seq"] == last[rid]
        return by_reader

    def close(self):
        for r in self.readers.values():
            if r.p.poll() is None:
                r.p.kill()
                r.p.wait()
        if self.gw is not None and self.gw.poll() is None:
            self.gw.send_signal(signal.SIGTERM)
            try:
                self.gw.wait(15)
            except Exception:
                self.gw.kill()
                self.gw.wait()
        self.broker.close()


@pytest.fixture
def site(tmp_path, request):
    s = Site(tmp_path, seed=zlib.crc32(request.node.name.encode()))
    try:
        wait_for(lambda: all(r.status()["uplink"] == "up" for r in s.readers.values()), 30,
                 "every reader's uplink to come up")
        yield s
    finally:
        s.close()


def _mix_is_real(by_reader):
    recs = [RideRecord.unpack(raw) for d in by_reader.values() for raw in d.values()]
    assert any(r.result == 0 and r.fee > 0 for r in recs), "no granted ride with a fee"
    assert any(r.result == 0 and r.fee == 0 for r in recs), "no free granted ride"
    assert any(r.result != 0 for r in recs), "no denied ride"


def test_happy_path_exactly_once_and_totals(site):
    site.taps(TAPS)
    by_reader = site.check_exactly_once(TAPS)
    _mix_is_real(by_reader)
    # The gateway stays up and healthy through all of it.
    assert site.gw.poll() is None
    assert '"event":"refused"' not in site.gw_log_text()


def test_gateway_kill9_mid_stream(site):
    site.taps(10)
    site.kill_gateway()
    site.taps(10)            # the readers go on tapping with no gateway
    site.start_gateway()
    site.taps(10)
    site.check_exactly_once(TAPS)
    # once more, with batches surely in flight: kill right after a burst
    site.taps(12, pause=0)
    site.kill_gateway()
    site.start_gateway()
    site.taps(3)
    site.check_exactly_once(TAPS + 15)
    assert site.gw.poll() is None and len(site.gw_logs) == 3


def test_mosquitto_restart_mid_stream(site):
    site.taps(10)
    before = {rid: r.status()["uplink_connects"] for rid, r in site.readers.items()}
    site.broker.restart()
    site.taps(20)
    by_reader = site.check_exactly_once(TAPS)
    _mix_is_real(by_reader)
    # The restart really cut every link: each reader and the gateway came back.
    assert all(r.status()["uplink_connects"] > before[rid] for rid, r in site.readers.items())
    assert site.gw_log_text().count('"event":"connected"') >= 2


def test_broker_gone_for_a_while(site):
    site.taps(10)
    site.broker.stop()
    end = time.monotonic() + 5
    n = 0
    while time.monotonic() < end:   # taps keep being decided with no broker at all
        site.tap_round(pause=0.1)
        n += 1
    wait_for(lambda: all(r.status()["uplink"] != "up" for r in site.readers.values()), 30,
             "the readers to notice the broker is gone")
    site.broker.start()
    site.taps(max(0, 20 - n) + 3)
    site.check_exactly_once(TAPS)
    assert site.gw_log_text().count('"event":"connected"') >= 2


def test_reconfigure_a_connected_reader(site):
    """A config pushed to a connected reader (a technician's configure) keeps
    its link counters growing: the gateway refuses nothing as a replay and
    never reports the reader offline, and the rides after it are acked."""
    site.taps(5)
    site.wait_all_acked()
    for _ in range(2):
        for rid, r in site.readers.items():
            reply = r.command("CONFIG " + str(r.dir / "config.json"))
            assert reply.startswith(f"OK config reader {rid}"), reply
        wait_for(lambda: all(r.status()["uplink"] == "up" for r in site.readers.values()), 30,
                 "every reader's uplink to come back up")
        site.taps(5)
    site.check_exactly_once(15)
    # Each reader heartbeats at once on a new link: its STATUS went through too.
    statuses = site.gw_log_text().count('"event":"status"')
    assert statuses >= 3 * len(site.readers), statuses
    log = site.gw_log_text()
    assert '"event":"refused"' not in log, [ln for ln in log.splitlines() if '"refused"' in ln][:5]
    assert '"event":"reader_offline"' not in log
