"""A compound on this computer, all real: several buildings, each with its
elevators' virtual readers, one gateway for them all, and the bank.

- the local broker: a private Mosquitto with the generated passwords and ACL
  (MosquittoInstance), every reader registered with its building;
- the gateway daemon as its own process, with `[upstream]` to the bank and
  `[cards]` trusting the bank's card key;
- the bank: a development PKI made at start (devpki), the TLS bank broker
  (BankBroker), the reference ledger as its own process, and the bank's
  Ed25519 card key (0600);
- one virtual reader per elevator (firmware/main.py under the real micropython,
  192K heap, VirtualReader), configured with `reader_config(reader_id,
  building_id)` and an uplink; no whitelist: it comes from the gateway. A
  reader listed in `cuttable` reaches the broker through a NetCut relay, so
  its network can be dropped and restored.

site.py is the single building of tests/test_site.py; this is its
generalisation for liftcard_tools.compound (the demo) and its test. Every
process ends in close(), pass or fail.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path

from liftcard_protocol.keys import new_signing_key
from liftcard_protocol.ride import RideRecord

from . import procs
from .bankbroker import BankBroker
from .configs import upstream_section, write_gateway_config, write_ledger_config
from .devpki import make_dev_pki
from .mosquitto import MosquittoInstance
from .netcut import NetCut
from .programs import start_gateway, start_ledger
from .reader import VirtualReader
from .wait import wait_for

COMPOUND_ID = 1
DUMP_PAGE = 1000


class CompoundSite:
    """buildings: {building_id: [reader_id, ...]}. Started in the constructor;
    close() ends every process. Work files under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        buildings: dict,
        reader_config,
        gateway_id: str = "gw-0001",
        cuttable=(),
        compound_id: int = COMPOUND_ID,
        start_time: int = 0,
    ):
        self.dir = Path(workdir)
        self.buildings = {b: list(rs) for b, rs in buildings.items()}
        self.building_of = {r: b for b, rs in self.buildings.items() for r in rs}
        self.gateway_id = gateway_id
        self.compound_id = compound_id
        self.readers: dict[int, VirtualReader] = {}
        self.cuts: dict[int, NetCut] = {}
        self.gw = self.ledger = self.bank = None
        self.gw_logs: list[Path] = []
        self.ledger_log = self.dir / "logs" / "ledger.log"
        self.broker = MosquittoInstance(readers=self.building_of, workdir=self.dir / "local-broker").start()
        try:
            self.pki = make_dev_pki(self.dir / "pki", [gateway_id])
            self.bank = BankBroker(self.pki, [gateway_id], workdir=self.dir / "bank-broker").start()
            bank = self.dir / "bank"
            bank.mkdir(parents=True, exist_ok=True)
            self.bank_key = bank / "bank.key"
            self.bank_pub = bank / "bank.pub"
            new_signing_key(self.bank_key, self.bank_pub)
            keys = {r: os.urandom(32) for r in self.building_of}  # the OS CSPRNG
            self.cfg_path = self._gateway_config(keys)
            self.db_path = self.dir / "gw" / "data" / "gateway.db"
            self.ledger_cfg = write_ledger_config(self.dir / "ledger", self.pki, self.bank, [gateway_id])
            self.ledger_db = self.dir / "ledger" / "ledger-data" / "ledger.db"
            self.start_ledger(wait=True)
            self.start_gateway(wait=True)
            wait_for(lambda: '"upstream_connected"' in self.gw_log_text(), 30, "the gateway's link to the bank")
            for rid in cuttable:
                self.cuts[rid] = NetCut(self.broker.port, self.broker.host)
            for rid, bid in self.building_of.items():
                self._start_reader(rid, bid, keys[rid], reader_config(rid, bid), start_time)
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------
    def _gateway_config(self, keys) -> Path:
        extra = (
            upstream_section(
                self.pki,
                self.bank,
                self.gateway_id,
                batch_rides=50,
                ack_timeout_s=2,
                max_backoff_s=2,
                scan_interval_s=1,
            )
            + '\n[cards]\nbank_public_key_file = "%s"\n' % self.bank_pub
        )
        return write_gateway_config(
            self.dir / "gw",
            self.broker,
            keys,
            self.building_of,
            extra=extra,
            first_seq=1,
            gateway_id=self.gateway_id,
            compound_id=self.compound_id,
        )

    def _start_reader(self, rid, bid, key: bytes, cfg: dict, start_time: int) -> None:
        d = self.dir / ("reader-%d" % rid)
        d.mkdir(parents=True, exist_ok=True)
        r = VirtualReader(d)
        self.readers[rid] = r  # close() ends it, whatever happens next
        link = self.cuts.get(rid, self.broker)
        cfg = dict(
            cfg,
            reader_id=rid,
            building_id=bid,
            key=key.hex(),
            uplink={
                "host": link.host,
                "port": link.port,
                "password": self.broker.credentials["reader-%d" % rid],
                "keepalive_s": 10,
            },
        )
        path = r.file("config.json", json.dumps(cfg).encode())
        os.chmod(path, 0o600)
        reply = r.command("CONFIG " + path)
        if not reply.startswith("OK config reader %d" % rid):
            raise AssertionError("reader %d refused its config: %s" % (rid, reply))
        if start_time:
            r.command("TIME %d" % start_time)

    # -- processes ------------------------------------------------------------------
    def start_gateway(self, wait: bool = False) -> None:
        logf = self.dir / "logs" / ("gateway-%s.log" % uuid.uuid4().hex[:6])
        self.gw_logs.append(logf)
        self.gw = start_gateway(self.cfg_path, logf, ready="subscribed" if wait else None)

    def kill_gateway(self) -> None:
        procs.kill(self.gw)

    def start_ledger(self, wait: bool = False) -> None:
        n = self._ledger_subscriptions()
        self.ledger = start_ledger(self.ledger_cfg, self.ledger_log)
        if wait:
            wait_for(lambda: self._ledger_subscriptions() > n, 30, "the ledger to subscribe")

    def _ledger_subscriptions(self) -> int:
        return self.ledger_log.read_text().count('"subscribed"') if self.ledger_log.exists() else 0

    def kill_ledger(self) -> None:
        procs.kill(self.ledger)

    def cut(self, rid: int) -> None:
        self.cuts[rid].cut()

    def restore(self, rid: int) -> None:
        self.cuts[rid].restore()

    # -- what the parts hold ----------------------------------------------------------
    def gw_log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.gw_logs if p.exists())

    def gw_events(self, name: str) -> list:
        needle = '"event":"%s"' % name
        return [json.loads(ln) for ln in self.gw_log_text().splitlines() if needle in ln]

    def gw_readers(self) -> dict:
        """The gateway's readers table: {reader_id: row}."""
        return {r["reader_id"]: r for r in _rows(self.db_path, "SELECT * FROM readers")}

    def gw_rides(self) -> list:
        return _rows(self.db_path, "SELECT * FROM rides ORDER BY reader_id, seq")

    def ledger_rides(self) -> list:
        return _rows(
            self.ledger_db, "SELECT * FROM rides WHERE gateway_id=? ORDER BY reader_id, seq", (self.gateway_id,)
        )

    def counts(self) -> tuple:
        """(rides at the gateway, rides of this gateway at the ledger)."""
        gw = _rows(self.db_path, "SELECT COUNT(*) AS n FROM rides")
        led = _rows(self.ledger_db, "SELECT COUNT(*) AS n FROM rides WHERE gateway_id=?", (self.gateway_id,))
        return (gw[0]["n"] if gw else 0, led[0]["n"] if led else 0)

    def dump(self, rid: int) -> list:
        """The reader's whole log (its DUMP), as raw records in seq order."""
        r = self.readers[rid]
        out, start = [], 1
        while True:
            r.send(b"DUMP %d %d\n" % (start, DUMP_PAGE))
            lines = r.until(("OK", "ERR"))
            if not lines[-1].startswith("OK"):
                raise AssertionError("reader %d: DUMP refused: %s" % (rid, lines[-1].strip()))
            page = [bytes.fromhex(ln.split()[1]) for ln in lines if ln.startswith("REC ")]
            out += page
            if len(page) < DUMP_PAGE:
                return out
            start = RideRecord.unpack(page[-1]).seq + 1

    def close(self) -> None:
        """End every process: readers (SIGKILL), gateway, ledger, both brokers, the relays;
        each even if another fails to stop."""
        try:
            for r in self.readers.values():
                r.kill()
            for c in self.cuts.values():
                c.close()
            procs.stop(self.gw, 15)
        finally:
            try:
                procs.stop(self.ledger, 15)
            finally:
                try:
                    if self.bank is not None:
                        self.bank.close()
                finally:
                    self.broker.close()


def _rows(db: Path, sql: str, args=()) -> list:
    """Rows as dicts from a database another process writes (opened read-only); [] before it exists."""
    if not Path(db).exists():
        return []
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
