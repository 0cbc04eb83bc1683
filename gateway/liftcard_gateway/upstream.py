"""The gateway's upstream to the bank ledger (docs/upstream.md).

Rides stored by store.Store in `rides` are sent to the ledger over MQTT/TLS
(client certificate, persistent session, QoS 1) as Ed25519-signed BATCH
messages (liftcard_protocol.upstream), per reader in storage order (rowid), at most
one batch in flight per reader and at most `max_inflight` in all. A batch is
built and committed to `upstream_batches` (id, reader, rowid range, the exact
payload) BEFORE it is published, so after a kill -9 the identical bytes are
sent again under the same id. It is resent until the ledger's signed ACK
arrives (after ack_timeout_s, then doubling up to max_backoff_s, and at every
reconnect). Only a verified ACK that matches the batch in flight advances the
reader's ledger-acked position (`upstream_readers.acked_rowid`), in one
transaction; then the reader's next batch may go.

Memory is bounded by the batches in flight: rides are read with a LIMIT from an
index on rides(reader_id) (whose implicit order is rowid), never all at once.

Threads: paho's network thread verifies ACKs and hands them to the worker
through a queue; the worker thread owns the SQLite connection and does all
reading, persisting and publishing. `wake()` (the daemon calls it after each
committed reader batch) makes the worker look for new rides at once; it also
scans every scan_interval_s.

Card updates from the bank (topic .../cards) are passed, as bytes, to the
`on_card_update` callback given to the constructor (None: ignored).

The MQTT client is an mqttservice.MqttService; its tables are in schema.py
(gateway.db, db.py); events go to the logger `liftcard.upstream` (logs.py).
"""

from __future__ import annotations

import argparse
import logging
import queue
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol import upstream as uf
from liftcard_protocol.topics import upstream_topics

from .config import GatewayConfigError, load_config
from .db import transaction
from .logs import events
from .mqttservice import MqttService, MqttSettings, TlsFiles
from .schema import open_gateway_db
from .tables import format_upstream_status

LOGGER = "liftcard.upstream"


def bank_settings(conf) -> MqttSettings:
    """The bank broker link of an [upstream] section: TLS client certificate,
    persistent session, MQTT 3.1.1 or 5, room for every batch in flight."""
    return MqttSettings(
        conf.host,
        conf.port,
        conf.client_id,
        conf.keepalive,
        protocol=conf.protocol,
        username=conf.username,
        password=conf.password,
        tls=TlsFiles(conf.ca_file, conf.cert_file, conf.key_file),
        max_inflight=max(20, 2 * conf.max_inflight),
    )


@dataclass
class _InFlight:
    batch_id: int
    reader_id: int
    first_seq: int
    last_seq: int
    rides: int
    last_rowid: int
    payload: bytes
    sends: int = 0
    next_due: float = 0.0
    backoff: float = 0.0
    mi: object = None  # paho MQTTMessageInfo of the last publish


def _published(mi) -> bool:
    """True when the broker PUBACKed this copy, or paho no longer holds it (a
    publish made while the link was down reports an error instead of queueing)."""
    try:
        return mi.is_published()
    except (RuntimeError, ValueError):
        return True


class Upstream:
    """conf: the [upstream] section (config.UpstreamConf); log: the logger for
    its events (default `liftcard.upstream`)."""

    def __init__(self, conf, db_path, log: logging.Logger | None = None, on_card_update=None):
        self.conf = conf
        self.log = events(log or LOGGER)
        self.on_card_update = on_card_update
        self.db_path = Path(db_path)
        self.topics = upstream_topics(conf.gateway_id)
        self._key = conf.signing_key.value
        self._ledger_pub = conf.ledger_public_key
        self._conn = open_gateway_db(self.db_path)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._reconnected = threading.Event()
        self._acks: queue.Queue = queue.Queue()
        self._inflight: dict[int, _InFlight] = {}
        self._sent_rowid: dict[int, int] = {}
        self._rr = 0
        self._thread: threading.Thread | None = None
        self.stats = {"batches_sent": 0, "batches_acked": 0, "rides_acked": 0, "resends": 0, "refused_acks": 0}
        self._load_state()
        self.mqtt = MqttService(
            bank_settings(conf),
            [(self.topics["acks"], 1), (self.topics["cards"], 1)],
            self.log,
            self._handle,
            on_connect=self._on_connect,
            on_disconnect=self._connected.clear,
            prefix="upstream_",
        )
        self.client = self.mqtt.client

    def __repr__(self) -> str:  # no keys
        return "<Upstream %s -> %s:%d inflight=%d>" % (
            self.conf.gateway_id,
            self.conf.host,
            self.conf.port,
            len(self._inflight),
        )

    # -- state ----------------------------------------------------------------------
    def _load_state(self) -> None:
        c = self._conn
        self._next_id = (c.execute("SELECT COALESCE(MAX(batch_id), 0) FROM upstream_batches").fetchone()[0]) + 1
        for rid, sent in c.execute("SELECT reader_id, sent_rowid FROM upstream_readers"):
            self._sent_rowid[rid] = sent
        for bid, rid, fs, ls, n, last, payload in c.execute(
            "SELECT batch_id, reader_id, first_seq, last_seq, rides, last_rowid, payload FROM upstream_batches "
            "WHERE acked_at IS NULL ORDER BY batch_id"
        ):
            if rid in self._inflight:  # cannot happen (one per reader), but never lose track of one
                continue
            self._inflight[rid] = _InFlight(
                bid, rid, fs, ls, n, last, bytes(payload), backoff=float(self.conf.ack_timeout_s)
            )

    # -- public ---------------------------------------------------------------------
    def wake(self) -> None:
        """New rides were committed: look now (cheap; safe from any thread)."""
        self._wake.set()

    def start(self) -> "Upstream":
        self.log(
            "upstream_starting",
            gateway_id=self.conf.gateway_id,
            host=self.conf.host,
            port=self.conf.port,
            inflight=len(self._inflight),
        )
        self.mqtt.start()
        self._thread = threading.Thread(target=self._worker, name="liftcard-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.mqtt.stop()
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self.log("upstream_stopped")

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self.mqtt.wait_ready(timeout)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- mqtt callbacks (paho's thread) -----------------------------------------------
    def _on_connect(self, session_present: bool) -> None:
        self._connected.set()
        self._reconnected.set()
        self._wake.set()

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self.topics["acks"]:
            try:
                ack = uf.parse_ack(self._ledger_pub, payload, expect_gateway=self.conf.gateway_id)
            except uf.UpstreamFormatError as e:
                self.stats["refused_acks"] += 1
                self.log("upstream_refused", reason=e.reason, topic=topic)
                return
            self._acks.put(ack)
            self._wake.set()
        elif topic == self.topics["cards"]:
            if self.on_card_update is None:
                self.log("card_update_ignored", bytes=len(payload))
                return
            try:
                self.on_card_update(payload)
            except Exception as e:
                self.log("upstream_error", topic=topic, error=type(e).__name__)
        else:
            self.log("upstream_refused", reason="topic", topic=topic)

    # -- the worker -------------------------------------------------------------------
    def _worker(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self._wait_time())
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self._process_acks()
                    if self._connected.is_set():
                        if self._reconnected.is_set():
                            self._reconnected.clear()
                            now = time.monotonic()
                            for f in self._inflight.values():
                                f.next_due = now
                        self._resend_due()
                        self._fill()
                except sqlite3.Error as e:
                    self.log("upstream_error", where="db", error=type(e).__name__, detail=str(e)[:120])
                    self._stop.wait(1.0)
                except Exception as e:  # never let the worker die: log, pause, go on
                    self.log("upstream_error", where="worker", error=type(e).__name__)
                    self._stop.wait(1.0)
        except Exception as e:  # pragma: no cover - logged, the daemon keeps storing
            self.log("upstream_error", where="worker_exit", error=type(e).__name__)

    def _wait_time(self) -> float:
        t = float(self.conf.scan_interval_s)
        if self._inflight and self._connected.is_set():
            now = time.monotonic()
            t = min(t, max(0.01, min(f.next_due for f in self._inflight.values()) - now))
        return t

    def _publish(self, f: _InFlight) -> None:
        f.mi = self.client.publish(self.topics["batches"], f.payload, qos=1)
        f.sends += 1
        now = time.monotonic()
        if f.sends == 1 or f.backoff <= 0:
            f.backoff = float(self.conf.ack_timeout_s)
        f.next_due = now + f.backoff
        f.backoff = min(f.backoff * 2, float(self.conf.max_backoff_s))

    def _resend_due(self) -> None:
        now = time.monotonic()
        for f in list(self._inflight.values()):
            if f.next_due > now:
                continue
            if f.mi is not None and not _published(f.mi):
                # paho still holds the previous copy (no PUBACK yet) and resends it itself.
                f.next_due = now + f.backoff
                continue
            if f.sends:
                self.stats["resends"] += 1
                self.log("upstream_resent", reader_id=f.reader_id, batch_id=f.batch_id, sends=f.sends + 1)
            self._publish(f)

    def _readers(self) -> list[tuple[int, int]]:
        return self._conn.execute("SELECT reader_id, building_id FROM readers ORDER BY reader_id").fetchall()

    def _fill(self) -> None:
        """New batches for readers with nothing in flight, up to max_inflight."""
        readers = self._readers()
        if not readers:
            return
        n = len(readers)
        start = self._rr % n
        self._rr += 1
        for i in range(n):
            if len(self._inflight) >= self.conf.max_inflight or self._stop.is_set():
                return
            rid, bid = readers[(start + i) % n]
            if rid in self._inflight or bid is None:
                continue
            f = self._make_batch(rid, bid)
            if f is not None:
                self._publish(f)
                self.stats["batches_sent"] += 1

    def _make_batch(self, reader_id: int, building_id: int) -> _InFlight | None:
        c = self._conn
        after = self._sent_rowid.get(reader_id, 0)
        rows = c.execute(
            "SELECT rowid, seq, time, uptime, card_id, household, floor, fee, result, flags, boot, "
            "time_corrected FROM rides WHERE reader_id=? AND rowid>? ORDER BY rowid LIMIT ?",
            (reader_id, after, self.conf.batch_rides),
        ).fetchall()
        if not rows:
            return None
        batch_id = self._next_id
        try:
            payload = uf.build_batch_from_rows(
                self._key, self.conf.gateway_id, batch_id, reader_id, building_id, [r[1:] for r in rows]
            )
        except uf.UpstreamFormatError as e:
            self.log("upstream_error", where="build", reader_id=reader_id, error=e.reason)
            return None
        first_rowid, last_rowid = rows[0][0], rows[-1][0]
        now = time.time()
        with transaction(c):
            c.execute(
                "INSERT INTO upstream_batches (batch_id, reader_id, building_id, first_rowid, last_rowid, "
                "first_seq, last_seq, rides, created_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    batch_id,
                    reader_id,
                    building_id,
                    first_rowid,
                    last_rowid,
                    rows[0][1],
                    rows[-1][1],
                    len(rows),
                    now,
                    payload,
                ),
            )
            c.execute(
                "INSERT INTO upstream_readers (reader_id, sent_rowid) VALUES (?, ?) "
                "ON CONFLICT(reader_id) DO UPDATE SET sent_rowid=excluded.sent_rowid",
                (reader_id, last_rowid),
            )
        self._next_id = batch_id + 1
        self._sent_rowid[reader_id] = last_rowid
        f = _InFlight(batch_id, reader_id, rows[0][1], rows[-1][1], len(rows), last_rowid, payload)
        self._inflight[reader_id] = f
        return f

    def _process_acks(self) -> None:
        todo = []
        while True:
            try:
                ack = self._acks.get_nowait()
            except queue.Empty:
                break
            f = self._inflight.get(ack.reader_id)
            if f is None or f.batch_id != ack.batch_id:
                row = self._conn.execute(
                    "SELECT acked_at FROM upstream_batches WHERE batch_id=? AND reader_id=?",
                    (ack.batch_id, ack.reader_id),
                ).fetchone()
                if row is not None and row[0] is not None:
                    self.log("upstream_ack_duplicate", reader_id=ack.reader_id, batch_id=ack.batch_id)
                else:
                    self.stats["refused_acks"] += 1
                    self.log(
                        "upstream_refused",
                        reason="unknown_batch",
                        reader_id=ack.reader_id,
                        batch_id=ack.batch_id,
                        topic=self.topics["acks"],
                    )
                continue
            if (ack.first_seq, ack.last_seq, ack.count) != (f.first_seq, f.last_seq, f.rides):
                self.stats["refused_acks"] += 1
                self.log(
                    "upstream_refused",
                    reason="mismatch",
                    reader_id=ack.reader_id,
                    batch_id=ack.batch_id,
                    topic=self.topics["acks"],
                )
                continue
            if any(t.batch_id == f.batch_id for t in todo):
                continue
            todo.append(f)
        if not todo:
            return
        now = time.time()
        c = self._conn
        with transaction(c):
            for f in todo:
                c.execute("UPDATE upstream_batches SET acked_at=?, payload=NULL WHERE batch_id=?", (now, f.batch_id))
                c.execute(
                    "INSERT INTO upstream_readers (reader_id, sent_rowid, acked_rowid, acked_rides, "
                    "acked_batches, last_ack_at) VALUES (?,?,?,?,1,?) ON CONFLICT(reader_id) DO UPDATE SET "
                    "acked_rowid=excluded.acked_rowid, acked_rides=acked_rides+excluded.acked_rides, "
                    "acked_batches=acked_batches+1, last_ack_at=excluded.last_ack_at",
                    (f.reader_id, f.last_rowid, f.last_rowid, f.rides, now),
                )
        for f in todo:
            self._inflight.pop(f.reader_id, None)
            self.stats["batches_acked"] += 1
            self.stats["rides_acked"] += f.rides
            self.log("upstream_acked", reader_id=f.reader_id, batch_id=f.batch_id, rides=f.rides, sends=f.sends)


# -- status ---------------------------------------------------------------------------------
def upstream_status(db_path) -> list[dict]:
    """Per reader: stored rides, ledger-acked rides, backlog (stored, not acked by
    the ledger), the batch in flight and the last ack time. Safe while the daemon runs."""
    conn = open_gateway_db(db_path)
    try:
        out = []
        for (rid,) in conn.execute("SELECT reader_id FROM readers ORDER BY reader_id").fetchall():
            row = conn.execute(
                "SELECT acked_rowid, acked_rides, acked_batches, last_ack_at FROM upstream_readers WHERE reader_id=?",
                (rid,),
            ).fetchone() or (0, 0, 0, None)
            backlog = conn.execute(
                "SELECT count(*) FROM rides WHERE reader_id=? AND rowid>?", (rid, row[0])
            ).fetchone()[0]
            stored = conn.execute("SELECT count(*) FROM rides WHERE reader_id=?", (rid,)).fetchone()[0]
            inflight = conn.execute(
                "SELECT batch_id FROM upstream_batches WHERE reader_id=? AND acked_at IS NULL", (rid,)
            ).fetchone()
            out.append(
                {
                    "reader_id": rid,
                    "stored": stored,
                    "ledger_acked": row[1],
                    "backlog": backlog,
                    "acked_batches": row[2],
                    "inflight_batch": inflight[0] if inflight else None,
                    "last_ack_at": row[3],
                }
            )
        return out
    finally:
        conn.close()


def upstream_backlog(db_path) -> dict[int, int]:
    """reader_id -> rides stored but not yet acknowledged by the ledger."""
    return {r["reader_id"]: r["backlog"] for r in upstream_status(db_path)}


def main(argv=None) -> int:
    """python -m liftcard_gateway.upstream status --config gw.toml"""
    ap = argparse.ArgumentParser(prog="python -m liftcard_gateway.upstream")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("status", help="per-reader upstream backlog (rides not yet acked by the ledger)")
    p.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except GatewayConfigError as e:
        print("liftcard-gateway: config error: %s" % e, file=sys.stderr)
        return 2
    if not cfg.db_path.exists():
        print("liftcard-gateway: no database yet at %s (run the daemon first)" % cfg.db_path, file=sys.stderr)
        return 1
    print(format_upstream_status(upstream_status(cfg.db_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
