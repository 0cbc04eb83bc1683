"""The reference bank ledger (docs/upstream.md, "The reference ledger").

    liftcard-ledger run --config ledger.toml       # until SIGTERM/SIGINT
    liftcard-ledger totals --config ledger.toml [--json]
    liftcard-ledger publish-card --config ledger.toml --gateway gw1 --file update.bin

`run` connects to the bank broker over TLS with the ledger's client
certificate (persistent session, QoS 1), subscribes to liftcard/gw/+/batches,
and for each BATCH: checks the topic's gateway id is registered and equals the
batch's, verifies the Ed25519 signature with that gateway's registered public
key, stores the rides in ONE SQLite transaction keyed (gateway_id, reader_id,
seq) -- a duplicate or overlapping resend stores nothing new -- and only after
the commit publishes the signed ACK on liftcard/gw/<id>/acks. Anything refused
is logged (one JSON line, reason) and not acked. Duplicated and reordered
deliveries are harmless: the key makes every store idempotent.

Config (TOML; relative paths from the file's directory):

    [ledger]
    data_dir = "ledger-data"                  # ledger.db (SQLite, WAL)
    signing_key_file = "ledger-signing.key"   # mode 0600: the ledger's Ed25519 key

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca_file = "ca.crt"
    cert_file = "ledger.crt"
    key_file = "ledger.key"                   # mode 0600
    # client_id = "liftcard-ledger"           # the broker uses the certificate's CN
    # keepalive = 30

    [cards]                                   # publish-card's own identity (optional)
    cert_file = "cards.crt"
    key_file = "cards.key"                    # mode 0600

    [[gateways]]
    gateway_id = "gw1"
    public_key_file = "gw-gw1-signing.pub"    # the gateway's registered Ed25519 public key
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from liftcard_protocol import keys
from liftcard_protocol import upstream as uf
from liftcard_protocol.topics import parse_upstream_topic, upstream_all, upstream_topics

from liftcard_gateway import logs
from liftcard_gateway.db import open_db, run_statements, transaction
from liftcard_gateway.mqttservice import MqttService, MqttSettings, TlsFiles, connect_kwargs, make_client
from liftcard_gateway.tables import render_table
from liftcard_gateway.tomlconf import (
    ConfigError,
    Secret,
    existing_file,
    integer,
    no_unknown_keys,
    path,
    private_file,
    read_toml,
    string,
    table,
)

PROG = "liftcard-ledger"
LOGGER = "liftcard.ledger"
BATCHES_SUB = upstream_all("batches")


@dataclass(frozen=True)
class LedgerConfig:
    path: Path
    data_dir: Path
    signing_key: Secret = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8883
    ca_file: Path = None
    cert_file: Path = None
    key_file: Path = None
    client_id: str = "liftcard-ledger"
    keepalive: int = 30
    gateways: dict = field(default_factory=dict, repr=False)  # gateway_id -> Ed25519PublicKey
    # publish-card's client certificate and key: the bank broker makes the
    # client id the CN, so the ledger's own would take over the running ledger.
    cards_cert_file: Path | None = None
    cards_key_file: Path | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ledger.db"


def load_config(config_path) -> LedgerConfig:
    """Load and validate the ledger's config; raises tomlconf.ConfigError (one line)."""
    config_path = Path(config_path)
    doc = read_toml(config_path)
    base = config_path.resolve().parent
    no_unknown_keys(doc, {"ledger", "broker", "gateways", "cards"}, "")
    lg = table(doc, "ledger")
    no_unknown_keys(lg, {"data_dir", "signing_key_file"}, "ledger")
    data_dir = path(lg, "data_dir", "ledger", base)
    skf = path(lg, "signing_key_file", "ledger", base)
    try:
        skey = keys.load_signing_key(skf)
    except keys.KeyFileError as e:
        raise ConfigError("ledger.signing_key_file", str(e)) from None
    br = table(doc, "broker")
    no_unknown_keys(br, {"host", "port", "ca_file", "cert_file", "key_file", "client_id", "keepalive"}, "broker")
    host = string(br, "host", "broker", "127.0.0.1")
    port = integer(br, "port", "broker", 1, 65535, 8883)
    files = {k: existing_file(br, k, "broker", base) for k in ("ca_file", "cert_file", "key_file")}
    private_file(files["key_file"], "broker.key_file")
    try:
        ssl.create_default_context(cafile=str(files["ca_file"])).load_cert_chain(
            str(files["cert_file"]), str(files["key_file"])
        )
    except (ssl.SSLError, OSError):
        raise ConfigError(
            "broker.cert_file",
            "%s, %s and %s are not a PEM CA, certificate and matching "
            "unencrypted key" % (files["ca_file"], files["cert_file"], files["key_file"]),
        ) from None
    client_id = string(br, "client_id", "broker", "liftcard-ledger")
    keepalive = integer(br, "keepalive", "broker", 5, 3600, 30)
    cards = {}
    if "cards" in doc:
        ct = table(doc, "cards")
        no_unknown_keys(ct, {"cert_file", "key_file"}, "cards")
        cards = {k: existing_file(ct, k, "cards", base) for k in ("cert_file", "key_file")}
        private_file(cards["key_file"], "cards.key_file")
    gl = doc.get("gateways", [])
    if not isinstance(gl, list) or not gl:
        raise ConfigError("gateways", "needs at least one [[gateways]] table")
    gws = {}
    for i, g in enumerate(gl):
        pre = "gateways[%d]" % i
        if not isinstance(g, dict):
            raise ConfigError(pre, "must be a table")
        no_unknown_keys(g, {"gateway_id", "public_key_file"}, pre)
        gid = string(g, "gateway_id", pre)
        if not uf.GATEWAY_ID_RE.fullmatch(gid):
            raise ConfigError(pre + ".gateway_id", "must be 1 .. 64 of A-Z a-z 0-9 _ -")
        if gid in gws:
            raise ConfigError(pre + ".gateway_id", "gateway %s is listed twice" % gid)
        try:
            gws[gid] = keys.load_public_key(path(g, "public_key_file", pre, base))
        except keys.KeyFileError as e:
            raise ConfigError(pre + ".public_key_file", str(e)) from None
    return LedgerConfig(
        config_path,
        data_dir,
        Secret(skey),
        host,
        port,
        files["ca_file"],
        files["cert_file"],
        files["key_file"],
        client_id,
        keepalive,
        gws,
        cards.get("cert_file"),
        cards.get("key_file"),
    )


def _v1_tables(conn) -> None:
    run_statements(
        conn,
        """
CREATE TABLE IF NOT EXISTS rides (
    gateway_id TEXT NOT NULL, reader_id INTEGER NOT NULL, seq INTEGER NOT NULL,
    building_id INTEGER NOT NULL, time INTEGER NOT NULL, uptime INTEGER NOT NULL, card_id TEXT NOT NULL,
    household INTEGER NOT NULL, floor INTEGER NOT NULL, fee INTEGER NOT NULL, result INTEGER NOT NULL,
    flags INTEGER NOT NULL, boot INTEGER NOT NULL, time_corrected INTEGER,
    batch_id INTEGER NOT NULL, stored_at REAL NOT NULL,
    PRIMARY KEY (gateway_id, reader_id, seq)
);
CREATE TABLE IF NOT EXISTS batches (
    gateway_id TEXT NOT NULL, batch_id INTEGER NOT NULL, reader_id INTEGER NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, rides INTEGER NOT NULL, inserted INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, received INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, batch_id)
);
""",
    )


# ledger.db's schema versions (liftcard_gateway.db.migrate). Version 1 is also
# what ledgers made before versions (user_version 0) hold: it creates only
# what is missing.
MIGRATIONS = (_v1_tables,)


class LedgerDB:
    """The ledger's SQLite store. rides' rowid is the order of first storage."""

    def __init__(self, db_path):
        self.conn = open_db(db_path, MIGRATIONS)  # WAL, synchronous=FULL

    def close(self):
        self.conn.close()

    def store(self, b: uf.Batch, now: float | None = None) -> int:
        """Store a verified batch in one transaction; returns the rides newly stored."""
        now = time.time() if now is None else now
        c = self.conn
        with transaction(c):
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO rides (gateway_id, reader_id, seq, building_id, time, uptime, card_id, "
                "household, floor, fee, result, flags, boot, time_corrected, batch_id, stored_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        b.gateway_id,
                        b.reader_id,
                        r.seq,
                        b.building_id,
                        r.time,
                        r.uptime,
                        "%016x" % r.card_id,
                        r.household,
                        r.floor,
                        r.fee,
                        r.result,
                        r.flags,
                        r.boot,
                        r.time_corrected,
                        b.batch_id,
                        now,
                    )
                    for r in b.rides
                ],
            )
            inserted = c.total_changes - before
            c.execute(
                "INSERT INTO batches (gateway_id, batch_id, reader_id, first_seq, last_seq, rides, inserted, "
                "first_seen, last_seen, received) VALUES (?,?,?,?,?,?,?,?,?,1) "
                "ON CONFLICT(gateway_id, batch_id) DO UPDATE SET last_seen=excluded.last_seen, "
                "received=received+1, inserted=inserted+excluded.inserted",
                (b.gateway_id, b.batch_id, b.reader_id, b.first_seq, b.last_seq, len(b.rides), inserted, now, now),
            )
        return inserted

    def totals(self) -> list[dict]:
        return [
            {"gateway_id": g, "reader_id": r, "rides": n, "fees_fen": f}
            for g, r, n, f in self.conn.execute(
                "SELECT gateway_id, reader_id, count(*), COALESCE(sum(fee), 0) FROM rides "
                "GROUP BY gateway_id, reader_id ORDER BY gateway_id, reader_id"
            )
        ]

    def seqs_in_storage_order(self, gateway_id: str, reader_id: int) -> list[int]:
        return [
            s
            for (s,) in self.conn.execute(
                "SELECT seq FROM rides WHERE gateway_id=? AND reader_id=? ORDER BY rowid", (gateway_id, reader_id)
            )
        ]


def broker_settings(cfg: LedgerConfig) -> MqttSettings:
    """The ledger's link to the bank broker: TLS client certificate, persistent session."""
    return MqttSettings(
        cfg.host,
        cfg.port,
        cfg.client_id,
        cfg.keepalive,
        tls=TlsFiles(cfg.ca_file, cfg.cert_file, cfg.key_file),
        reconnect_delay=(1, 10),
        max_inflight=100,
    )


class Ledger:
    """log: the logger for its events (default `liftcard.ledger`)."""

    def __init__(self, cfg: LedgerConfig, log: logging.Logger | None = None):
        self.cfg = cfg
        self.log = logs.events(log or LOGGER)
        self.db = LedgerDB(cfg.db_path)
        self._key = cfg.signing_key.value
        self._stop = threading.Event()
        self.mqtt = MqttService(broker_settings(cfg), [(BATCHES_SUB, 1)], self.log, self._on_message)
        self.client = self.mqtt.client

    def __repr__(self) -> str:
        return "<Ledger %s:%d gateways=%d>" % (self.cfg.host, self.cfg.port, len(self.cfg.gateways))

    def _on_message(self, topic: str, payload: bytes) -> None:
        # An exception here is logged by the service ("error"); the message gets no ack.
        ack = self.handle(topic, payload)
        if ack is not None:
            self.mqtt.publish(ack[0], ack[1], qos=1)

    def handle(self, topic: str, payload: bytes):
        """Verify and store one BATCH. Returns (ack topic, ack payload) or None (refused)."""
        t = parse_upstream_topic(topic)
        if t is None or t[1] != "batches":
            self.log("refused", reason="topic", topic=topic)
            return None
        gid = t[0]
        pub = self.cfg.gateways.get(gid)
        if pub is None:
            self.log("refused", reason="unknown_gateway", gateway_id=gid, topic=topic)
            return None
        try:
            batch = uf.parse_batch(pub, payload, expect_gateway=gid)
        except uf.UpstreamFormatError as e:
            self.log("refused", reason=e.reason, gateway_id=gid, topic=topic)
            return None
        inserted = self.db.store(batch)
        self.log(
            "stored",
            gateway_id=gid,
            batch_id=batch.batch_id,
            reader_id=batch.reader_id,
            rides=len(batch.rides),
            inserted=inserted,
            duplicates=len(batch.rides) - inserted,
        )
        return upstream_topics(gid)["acks"], uf.ack_for(self._key, batch)

    def stop(self, *_a):
        self._stop.set()

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self.log("starting", gateways=sorted(self.cfg.gateways))
        self.mqtt.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.mqtt.stop()
            self.db.close()
            self.log("stopped")
        return 0


def publish_card(cfg: LedgerConfig, gateway_id: str, payload: bytes, timeout: float = 20.0) -> None:
    """Publish a card update (opaque bytes) on liftcard/gw/<id>/cards, QoS 1; returns
    after the broker's PUBACK, as the card publisher ([cards] in the config).
    Raises RuntimeError (one line) on failure."""
    if cfg.cards_cert_file is None:
        raise RuntimeError(
            "%s has no [cards] cert_file and key_file: card updates are published with the card "
            "publisher's certificate, not the ledger's" % cfg.path
        )
    s = MqttSettings(
        cfg.host,
        cfg.port,
        "liftcard-cards",
        cfg.keepalive,
        persistent=False,
        tls=TlsFiles(cfg.ca_file, cfg.cards_cert_file, cfg.cards_key_file),
    )
    c = make_client(s, logging.getLogger(LOGGER))
    try:
        c.connect(s.host, s.port, s.keepalive, **connect_kwargs(s))
    except (OSError, ssl.SSLError) as e:
        raise RuntimeError("cannot connect to %s:%d: %s" % (cfg.host, cfg.port, type(e).__name__)) from None
    c.loop_start()
    try:
        mi = c.publish(upstream_topics(gateway_id)["cards"], payload, qos=1)
        mi.wait_for_publish(timeout)
        if not mi.is_published():
            raise RuntimeError("no PUBACK from %s:%d within %gs" % (cfg.host, cfg.port, timeout))
    finally:
        c.disconnect()
        c.loop_stop()


def format_totals(rows: list[dict]) -> str:
    head = ("gateway", "reader", "rides", "fees (fen)")
    body = [(r["gateway_id"], str(r["reader_id"]), str(r["rides"]), str(r["fees_fen"])) for r in rows]
    body.append(("total", "", str(sum(r["rides"] for r in rows)), str(sum(r["fees_fen"] for r in rows))))
    return render_table(head, body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description="liftcard reference bank ledger")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="receive, verify, store and ack gateway batches (until SIGTERM)")
    p.add_argument("--config", required=True)
    p = sub.add_parser("totals", help="per-reader ride counts and fee totals (integer fen)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="one JSON object per reader instead of a table")
    p = sub.add_parser("publish-card", help="publish a card update file on liftcard/gw/<id>/cards")
    p.add_argument("--config", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--file", required=True)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print("%s: config error: %s" % (PROG, e), file=sys.stderr)
        return 2
    if args.cmd == "totals":
        if not cfg.db_path.exists():
            print("%s: no ledger database yet at %s" % (PROG, cfg.db_path), file=sys.stderr)
            return 1
        db = LedgerDB(cfg.db_path)
        try:
            rows = db.totals()
        finally:
            db.close()
        if args.json:
            for r in rows:
                print(json.dumps(r, separators=(",", ":")))
        else:
            print(format_totals(rows))
        return 0
    if args.cmd == "publish-card":
        if args.gateway not in cfg.gateways:
            print("%s: --gateway: %s is not a registered gateway" % (PROG, args.gateway), file=sys.stderr)
            return 2
        try:
            data = Path(args.file).read_bytes()
        except OSError as e:
            print("%s: --file: cannot read %s: %s" % (PROG, args.file, e.strerror), file=sys.stderr)
            return 2
        if not data:
            print("%s: --file: %s is empty" % (PROG, args.file), file=sys.stderr)
            return 2
        try:
            publish_card(cfg, args.gateway, data)
        except RuntimeError as e:
            print("%s: %s" % (PROG, e), file=sys.stderr)
            return 1
        print("published %d bytes to %s" % (len(data), upstream_topics(args.gateway)["cards"]))
        return 0
    logs.setup()
    try:
        led = Ledger(cfg)
    except (OSError, sqlite3.Error) as e:
        print("%s: cannot open the ledger database %s: %s" % (PROG, cfg.db_path, type(e).__name__), file=sys.stderr)
        return 1
    return led.run()


if __name__ == "__main__":
    sys.exit(main())
