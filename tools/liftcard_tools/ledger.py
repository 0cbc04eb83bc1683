"""The reference bank ledger (docs/ledger.md; its upstream contract: docs/upstream.md).

    liftcard-ledger run --config ledger.toml       # until SIGTERM/SIGINT
    liftcard-ledger totals --config ledger.toml [--json]
    liftcard-ledger publish-card --config ledger.toml --gateway gw1 --file update.bin
    liftcard-ledger households import FILE.csv --config ledger.toml
    liftcard-ledger households list --config ledger.toml --building B
    liftcard-ledger cost --config ledger.toml --building B --amount-fen N --memo TEXT [--date YYYY-MM-DD]
    liftcard-ledger statement --config ledger.toml --building B --month YYYY-MM [--household H] [--html OUT.html]
    liftcard-ledger verify --config ledger.toml

`run` connects to the bank broker over TLS with the ledger's client
certificate (persistent session, QoS 1), subscribes to liftcard/gw/+/batches
(with `shared_group`, the MQTT 5 shared subscription $share/<group>/...: the
broker hands each message to one of the group's workers), and for each
BATCH: checks the topic's gateway id is registered and equals the batch's,
verifies the Ed25519 signature with that gateway's registered public key,
stores the rides and posts the charged ones (accountbook.py) in ONE
transaction keyed (gateway_id, reader_id, seq) -- a duplicate, an
overlapping resend or another worker's copy stores and posts nothing new --
and only after the commit publishes the signed ACK on
liftcard/gw/<id>/acks. Anything refused is logged (one JSON line, reason)
and not acked.

Config (TOML; relative paths from the file's directory):

    [ledger]
    data_dir = "ledger-data"                  # ledger.db (SQLite, WAL)
    signing_key_file = "ledger-signing.key"   # mode 0600: the ledger's Ed25519 key
    # database = "postgresql://ledger@db.bank.example/ledger"   # PostgreSQL instead of ledger.db
    # database_password_file = "db.pass"      # mode 0600; never in the URL
    # utc_offset_min = 480                    # the bank's local time: statement months, cost dates

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca_file = "ca.crt"
    cert_file = "ledger.crt"
    key_file = "ledger.key"                   # mode 0600
    # client_id = "liftcard-ledger"           # the broker uses the certificate's CN
    # keepalive = 30
    # shared_group = "ledger"                 # several workers on one stream (MQTT 5)

    [cards]                                   # publish-card's own identity (optional)
    cert_file = "cards.crt"
    key_file = "cards.key"                    # mode 0600

    [[gateways]]
    gateway_id = "gw1"
    public_key_file = "gw1-signing.pub"       # the gateway's registered Ed25519 public key
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import signal
import ssl
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from liftcard_protocol import keys
from liftcard_protocol import upstream as uf
from liftcard_protocol.topics import parse_upstream_topic, upstream_all, upstream_topics

from liftcard_gateway import logs
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
    secret_text,
    string,
    table,
)

from .accountbook import (
    MAX_COST_FEN,
    MAX_HOUSEHOLD,
    MAX_ID,
    DIGITS_RE,
    BookError,
    check_cost,
    enter_cost,
    import_register,
    parse_register,
    register,
    verify_books,
)
from .ledgerdb import MIGRATIONS, LedgerDB, db_errors, is_postgres_url
from .statement import parse_month, render_html, render_text, statement

__all__ = ["LedgerConfig", "LedgerDB", "Ledger", "MIGRATIONS", "load_config", "main"]

PROG = "liftcard-ledger"
LOGGER = "liftcard.ledger"
BATCHES_SUB = upstream_all("batches")
SHARE_GROUP_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def batches_subscription(shared_group: str | None) -> str:
    """The batches' topic filter; with a group, an MQTT 5 shared subscription:
    the broker hands each message to one of the group's workers."""
    return BATCHES_SUB if shared_group is None else "$share/%s/%s" % (shared_group, BATCHES_SUB)


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
    # PostgreSQL instead of data_dir/ledger.db (docs/ledger.md): a URL without
    # its password, which comes from a 0600 file.
    database: str | None = None
    database_password: Secret | None = field(default=None, repr=False)
    utc_offset_min: int = 480  # the bank's local time: statement months and hours, cost dates
    shared_group: str | None = None  # several workers on one stream ($share/<group>/..., MQTT 5)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ledger.db"

    @property
    def db_target(self):
        """What LedgerDB opens: the PostgreSQL URL when configured, else the SQLite file."""
        return self.database if self.database is not None else self.db_path

    def open_db(self) -> LedgerDB:
        return LedgerDB(self.db_target, self.database_password)


def load_config(config_path) -> LedgerConfig:
    """Load and validate the ledger's config; raises tomlconf.ConfigError (one line)."""
    config_path = Path(config_path)
    doc = read_toml(config_path)
    base = config_path.resolve().parent
    no_unknown_keys(doc, {"ledger", "broker", "gateways", "cards"}, "")
    lg = table(doc, "ledger")
    no_unknown_keys(
        lg, {"data_dir", "signing_key_file", "database", "database_password_file", "utc_offset_min"}, "ledger"
    )
    data_dir = path(lg, "data_dir", "ledger", base)
    database = password = None
    if "database" in lg:
        database = string(lg, "database", "ledger")
        if not is_postgres_url(database):
            raise ConfigError("ledger.database", "must be a postgresql:// URL (without it: SQLite in data_dir)")
        if re.match(r"^[a-z]+://[^/@]*:[^/@]*@", database, re.I):
            raise ConfigError(
                "ledger.database", "must not hold a password: put it in database_password_file (mode 0600)"
            )
    if "database_password_file" in lg:
        if database is None:
            raise ConfigError("ledger.database_password_file", "needs ledger.database")
        password = secret_text(
            existing_file(lg, "database_password_file", "ledger", base), "ledger.database_password_file"
        )
    utc_offset_min = integer(lg, "utc_offset_min", "ledger", -720, 840, 480)
    skf = path(lg, "signing_key_file", "ledger", base)
    try:
        skey = keys.load_signing_key(skf)
    except keys.KeyFileError as e:
        raise ConfigError("ledger.signing_key_file", str(e)) from None
    br = table(doc, "broker")
    no_unknown_keys(
        br, {"host", "port", "ca_file", "cert_file", "key_file", "client_id", "keepalive", "shared_group"}, "broker"
    )
    shared_group = None
    if "shared_group" in br:
        shared_group = string(br, "shared_group", "broker")
        if not SHARE_GROUP_RE.fullmatch(shared_group):
            raise ConfigError("broker.shared_group", "must be 1 .. 64 of A-Z a-z 0-9 _ -")
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
        database,
        password,
        utc_offset_min,
        shared_group,
    )


def broker_settings(cfg: LedgerConfig) -> MqttSettings:
    """The ledger's link to the bank broker: TLS client certificate, persistent session."""
    return MqttSettings(
        cfg.host,
        cfg.port,
        cfg.client_id,
        cfg.keepalive,
        tls=TlsFiles(cfg.ca_file, cfg.cert_file, cfg.key_file),
        protocol="3.1.1" if cfg.shared_group is None else "5",
        reconnect_delay=(1, 10),
        max_inflight=100,
    )


class Ledger:
    """log: the logger for its events (default `liftcard.ledger`)."""

    def __init__(self, cfg: LedgerConfig, log: logging.Logger | None = None):
        self.cfg = cfg
        self.log = logs.events(log or LOGGER)
        self.db = cfg.open_db()
        self._key = cfg.signing_key.value
        self._stop = threading.Event()
        sub = batches_subscription(cfg.shared_group)
        self.mqtt = MqttService(broker_settings(cfg), [(sub, 1)], self.log, self._on_message)
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
    # Set before the disconnect: paho's loop thread can log "Client is not
    # connected" as it winds down, which is no error of this publish.
    closing = threading.Event()
    c = make_client(s, logging.getLogger(LOGGER), quiet=closing)
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
        closing.set()
        c.disconnect()
        c.loop_stop()


def format_totals(rows: list[dict]) -> str:
    head = ("gateway", "reader", "taps", "charged", "free", "denied", "fees (fen)")
    keys = ("rides", "charged", "free", "denied", "fees_fen")
    body = [(r["gateway_id"], str(r["reader_id"]), *(str(r[k]) for k in keys)) for r in rows]
    body.append(("total", "", *(str(sum(r[k] for r in rows)) for k in keys)))
    return render_table(head, body)


def _int_arg(text: str, name: str, lo: int, hi: int) -> int:
    if not DIGITS_RE.fullmatch(text or "") or not lo <= int(text) <= hi:
        raise BookError("%s must be an integer %d .. %d, not %r" % (name, lo, hi, (text or "")[:20]))
    return int(text)


def _date_arg(text: str | None, utc_offset_min: int) -> datetime.date:
    if text is None:  # today at the bank
        return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=utc_offset_min)).date()
    try:
        d = datetime.date.fromisoformat(text)
    except ValueError:
        raise BookError("--date must be YYYY-MM-DD, not %r" % text[:20]) from None
    if d.year < 2024:
        raise BookError("--date must be 2024-01-01 or later")
    return d


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="liftcard reference bank ledger")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="receive, verify, store and ack gateway batches (until SIGTERM)")
    p.add_argument("--config", required=True)
    p = sub.add_parser("totals", help="per-reader taps, charged, free, denied and fee totals (integer fen)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="one JSON object per reader instead of a table")
    p = sub.add_parser("publish-card", help="publish a card update file on liftcard/gw/<id>/cards")
    p.add_argument("--config", required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--file", required=True)
    p = sub.add_parser("households", help="the household register (building, household, floor)")
    hs = p.add_subparsers(dest="hcmd", required=True)
    q = hs.add_parser("import", help="replace the register of each building in a CSV file")
    q.add_argument("file")
    q.add_argument("--config", required=True)
    q = hs.add_parser("list", help="a building's register")
    q.add_argument("--config", required=True)
    q.add_argument("--building", required=True)
    p = sub.add_parser("cost", help="charge a maintenance or repair cost to a building's fund, shared by floor")
    p.add_argument("--config", required=True)
    p.add_argument("--building", required=True)
    p.add_argument("--amount-fen", required=True)
    p.add_argument("--memo", required=True)
    p.add_argument("--date", help="YYYY-MM-DD, the bank's local date (default today)")
    p = sub.add_parser("statement", help="a building's monthly statement (text, or an HTML page)")
    p.add_argument("--config", required=True)
    p.add_argument("--building", required=True)
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--household", help="only this household's lines")
    p.add_argument("--html", metavar="OUT.html", help="also write the page there")
    p = sub.add_parser("verify", help="check that the books balance (exit 1 if not)")
    p.add_argument("--config", required=True)
    return ap


def _book_command(args, cfg: LedgerConfig) -> int:
    """households, cost, statement, verify: on the ledger's database."""
    if args.cmd == "households" and args.hcmd == "import":
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BookError(
                "cannot read %s: %s" % (args.file, getattr(e, "strerror", None) or "not UTF-8 text")
            ) from None
        try:
            rows = parse_register(text)
        except BookError as e:
            raise BookError("%s: %s" % (args.file, e)) from None
    elif args.cmd == "cost":
        building = _int_arg(args.building, "--building", 1, MAX_ID)
        amount = _int_arg(args.amount_fen, "--amount-fen", 1, MAX_COST_FEN)
        check_cost(building, amount, args.memo)
        day = _date_arg(args.date, cfg.utc_offset_min)
    elif args.cmd in ("statement", "households"):
        building = _int_arg(args.building, "--building", 1, MAX_ID)
        if args.cmd == "statement":
            parse_month(args.month)
            household = None if args.household is None else _int_arg(args.household, "--household", 0, MAX_HOUSEHOLD)
    if args.cmd in ("statement", "verify", "households") and getattr(args, "hcmd", "list") == "list":
        if cfg.database is None and not cfg.db_path.exists():
            raise BookError("no ledger database yet at %s" % cfg.db_path)
    db = cfg.open_db()
    try:
        if args.cmd == "households" and args.hcmd == "import":
            for b, n in import_register(db.sql, rows).items():
                print("building %d: %d households" % (b, n))
        elif args.cmd == "households":
            print(render_table(("household", "floor"), [(str(h), str(f)) for h, f in register(db.sql, building)]))
        elif args.cmd == "cost":
            cid, shares = enter_cost(db.sql, building, amount, args.memo, day, cfg.utc_offset_min)
            print(
                "cost %d: %d fen from fund:%d on %s, shared among %d households"
                % (cid, amount, building, day.isoformat(), sum(1 for s in shares if s.share))
            )
            print(
                render_table(
                    ("household", "floor", "weight", "share (fen)"),
                    [(str(s.household), str(s.floor), str(s.weight), str(s.share)) for s in shares],
                )
            )
        elif args.cmd == "statement":
            st = statement(db, building, args.month, household=household, utc_offset_min=cfg.utc_offset_min)
            if args.html:
                out = Path(args.html)
                try:
                    tmp = out.with_name(out.name + ".tmp")
                    tmp.write_text(render_html(st), encoding="utf-8")
                    tmp.replace(out)
                except OSError as e:
                    raise BookError("--html: cannot write %s: %s" % (out, e.strerror)) from None
            sys.stdout.write(render_text(st))
        else:
            problems = verify_books(db.sql)
            for p in problems:
                print(p)
            if problems:
                return 1
            print("the books balance")
    finally:
        db.close()
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print("%s: config error: %s" % (PROG, e), file=sys.stderr)
        return 2
    if args.cmd in ("households", "cost", "statement", "verify"):
        try:
            return _book_command(args, cfg)
        except BookError as e:
            print("%s: %s" % (PROG, e), file=sys.stderr)
            return 2
        except (OSError, *db_errors()) as e:
            print("%s: the ledger database: %s" % (PROG, _one_line(e)), file=sys.stderr)
            return 1
    if args.cmd == "totals":
        if cfg.database is None and not cfg.db_path.exists():
            print("%s: no ledger database yet at %s" % (PROG, cfg.db_path), file=sys.stderr)
            return 1
        try:
            db = cfg.open_db()
        except (OSError, *db_errors()) as e:
            print("%s: the ledger database: %s" % (PROG, _one_line(e)), file=sys.stderr)
            return 1
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
    except (OSError, *db_errors()) as e:
        where = "PostgreSQL" if cfg.database is not None else cfg.db_path
        print("%s: cannot open the ledger database %s: %s" % (PROG, where, _one_line(e)), file=sys.stderr)
        return 1
    return led.run()


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return "%s%s" % (e.strerror, ": %s" % e.filename if e.filename else "")
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


if __name__ == "__main__":
    sys.exit(main())
