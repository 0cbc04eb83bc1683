"""A building on this computer, all real: a private Mosquitto
(MosquittoInstance), the gateway daemon as its own process (`python -m
liftcard_gateway run`), and three virtual readers (firmware/main.py under the
real micropython, 192K heap) in one building, each with its own reader id, key
and broker password, registered in the broker and in the gateway's config.

`Site` taps rides on every reader and checks the gateway's SQLite (opened
read-only) against each reader's `DUMP`: the same seqs, the same record bytes,
nothing twice, per-reader fee totals to the fen. `close()` ends every process,
pass or fail. tests/test_site.py adds the bank to it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from pathlib import Path

from liftcard_protocol.card import CardRecord
from liftcard_protocol.ride import RideRecord
from liftcard_protocol.whitelist import build_whitelist

from . import procs
from .configs import write_gateway_config
from .mosquitto import MosquittoInstance
from .programs import start_gateway
from .reader import CONFIG, VirtualReader
from .wait import wait_for

BUILDING = 12
READER_IDS = (101, 102, 103)
SYNC_TIMEOUT = 60.0


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
        return write_gateway_config(
            self.tmp / "gw", self.broker, self.keys, {rid: BUILDING for rid in READER_IDS}, first_seq=1
        )

    def start_gateway(self):
        logf = self.tmp / ("gw-%s.log" % uuid.uuid4().hex[:6])
        self.gw_logs.append(logf)
        self.gw = start_gateway(self.cfg_path, logf, ready="subscribed")

    def kill_gateway(self):
        procs.kill(self.gw)

    def _start_reader(self, rid):
        d = self.tmp / f"reader-{rid}"
        d.mkdir()
        r = VirtualReader(d)
        self.readers[rid] = r  # close() ends it, whatever happens next
        cfg = dict(
            CONFIG,
            reader_id=rid,
            building_id=BUILDING,
            key=self.keys[rid].hex(),
            uplink={
                "host": self.broker.host,
                "port": self.broker.port,
                "password": self.broker.credentials[f"reader-{rid}"],
                "keepalive_s": 10,
            },
        )
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
            raise AssertionError(
                "not all acked: last=%r\nreaders=%r\ngateway log tail:\n%s" % (last, st, self.gw_log_text()[-3000:])
            )
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
            rec = RideRecord.from_fields(row)
            assert row["reader_id"] in by_reader, "a ride from an unknown reader: %r" % (key,)
            by_reader[row["reader_id"]][row["seq"]] = rec.pack()
        assert open_gaps == 0
        for rid in READER_IDS:
            log = self.dump(rid)
            assert len(log) == last[rid] >= min_rides, (rid, len(log), last[rid])
            assert sorted(log) == list(range(1, last[rid] + 1))
            assert set(by_reader[rid]) == set(log), "reader %d: DB seqs differ from the log (missing %r, extra %r)" % (
                rid,
                sorted(set(log) - set(by_reader[rid]))[:10],
                sorted(set(by_reader[rid]) - set(log))[:10],
            )
            for seq, raw in log.items():
                assert by_reader[rid][seq] == raw, "reader %d seq %d: DB record differs from the log" % (rid, seq)
            fees = sum(RideRecord.unpack(raw).fee for raw in log.values())
            assert db_fees.get(rid, 0) == fees, (rid, db_fees.get(rid), fees)
            assert readers[rid]["acked_seq"] == last[rid]
        return by_reader

    def close(self):
        """End every process of the site: readers (SIGKILL), gateway (SIGTERM,
        then SIGKILL), broker; each even if another fails to stop."""
        try:
            for r in self.readers.values():
                r.kill()
            procs.stop(self.gw, 15)
        finally:
            self.broker.close()
