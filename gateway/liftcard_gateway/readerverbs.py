"""`liftcard-gateway readers add | remove | rotate-key | list` (docs/operations.md,
"Readers"; docs/gateway.md, "Readers").

`add` registers a reader (readerreg.py: its key file and entry in the config's
readers_dir), gives it a broker login (its passwd line made by mosquitto_passwd
alone, merged: nobody else's plain password is needed), renders the ACL and
reloads a running Mosquitto (opsetup.sync_broker), and writes the reader's
enrolment file for the technician (liftcard_protocol.enrolment; 0600). With
`--from FILE` the key and broker password come from an enrolment file the
technician made instead. Adding a reader twice with the same key changes
nothing; with another key it is refused: that is `rotate-key`.

The daemon re-reads its readers on SIGHUP: after an add, remove or
rotate-key the command sends it one when data_dir/gateway.pid names a running
`liftcard-gateway run` (daemon.signal_reload), and otherwise says how
(`systemctl reload liftcard-gateway`).

Every check runs before anything is written; keys and passwords go only into
0600 files, never to the terminal.
"""

from __future__ import annotations

import hmac
import json
import secrets
import sys
from pathlib import Path

from liftcard_protocol.enrolment import Enrolment, dumps_enrolment, enrolment_doc, loads_enrolment, parse_enrolment
from liftcard_protocol.errors import ConfigError as EnrolmentError
from liftcard_protocol.fields import ID_MAX
from liftcard_protocol.keys import write_private
from liftcard_protocol.readertls import trust_anchor
from liftcard_protocol.topics import reader_user

from . import broker as mq
from . import readerreg
from .config import GatewayConfig, GatewayConfigError, load_config
from .daemon import signal_reload
from .opsetup import SetupError, check_owner, check_renderable, report_sync, say, sync_broker
from .tables import render_table
from .tomlconf import Secret

MAX_ENROLMENT_FILE = 65536
RELOAD = (
    "no running gateway daemon was signalled: it reads its readers when it starts "
    "(if it runs: systemctl reload liftcard-gateway, or send it SIGHUP)"
)


def _reload_daemon(cfg: GatewayConfig) -> None:
    pid = signal_reload(cfg.data_dir)
    if pid is None:
        say(RELOAD)
    else:
        say("sent the gateway daemon (pid %d) SIGHUP: it re-reads its readers (its log says config_reloaded)" % pid)


def _id(text: str, name: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        v = 0
    if not 1 <= v <= ID_MAX:
        raise SetupError("%s must be an integer 1 .. %d" % (name, ID_MAX), 2)
    return v


def _reader_id(text: str) -> int:
    return _id(text, "READER_ID")


def add_parser(sub) -> None:
    p = sub.add_parser("readers", help="add, remove, re-key and list the gateway's readers")
    rs = p.add_subparsers(dest="readers_cmd", required=True)
    a = rs.add_parser("add", help="register a reader, give it a broker login, write its enrolment file")
    a.add_argument("reader_id", nargs="?", help="the reader's id (1 .. 2^30-1); with --from, taken from the file")
    a.add_argument("--building", help="its building id (with --from, checked against the file)")
    a.add_argument(
        "--from",
        dest="from_file",
        help="an enrolment file the technician made (liftcard-provision register); - reads it from stdin",
    )
    a.add_argument("--out", help="where to write the enrolment file (default: enrolment_dir/reader-<id>.json)")
    a.add_argument("--config", required=True, help="the gateway's TOML config")
    r = rs.add_parser("remove", help="unregister a reader: its key, broker login and ACL go")
    r.add_argument("reader_id")
    r.add_argument("--config", required=True, help="the gateway's TOML config")
    k = rs.add_parser("rotate-key", help="a new key for a reader (its broker password stays) and a new enrolment file")
    k.add_argument("reader_id")
    k.add_argument("--from", dest="from_file", help="take the new key from the technician's enrolment file (- : stdin)")
    k.add_argument("--out", help="where to write the enrolment file (default: enrolment_dir/reader-<id>.json)")
    k.add_argument("--config", required=True, help="the gateway's TOML config")
    ls = rs.add_parser("list", help="the readers table (never a key)")
    ls.add_argument("--json", action="store_true", help="one JSON array for scripts")
    ls.add_argument("--config", required=True, help="the gateway's TOML config")


def command(cfg: GatewayConfig, args) -> int:
    verb = args.readers_cmd
    if verb == "list":
        return list_readers(cfg, args.json)
    check_owner(cfg.path)
    if cfg.broker.dir is not None:
        check_renderable(cfg)
    if verb == "add":
        return add(cfg, args)
    if verb == "remove":
        return remove(cfg, _reader_id(args.reader_id))
    return rotate_key(cfg, args)


# -- helpers -------------------------------------------------------------------------


def _readers_dir(cfg: GatewayConfig) -> Path:
    if cfg.readers_dir is None:
        raise SetupError(
            "gateway.readers_dir is not set in %s: name a directory for the readers (init writes one)" % cfg.path, 2
        )
    return cfg.readers_dir


def _not_hand_listed(cfg: GatewayConfig, rid: int) -> None:
    r = cfg.readers.get(rid)
    if r is not None and r.entry is None:
        raise SetupError(
            "reader %d is listed in [[readers]] of %s: edit it there, or delete it there first" % (rid, cfg.path)
        )


def _shown(path: str) -> str:
    return "the enrolment file on stdin" if path == "-" else path


def _read_enrolment(path: str) -> Enrolment:
    """`-` is stdin: the technician's file sits in the operator's home, which
    the liftcard user these commands run as cannot read, and the operator's
    own shell can open it for them (`--from - < reader-7.json`)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_ENROLMENT_FILE + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_ENROLMENT_FILE + 1)
    except PermissionError as e:
        raise SetupError("cannot read %s: %s (give it on stdin: --from - < %s)" % (path, e.strerror, path)) from None
    except OSError as e:
        raise SetupError("cannot read %s: %s" % (path, e.strerror or type(e).__name__)) from None
    try:
        return loads_enrolment(data)
    except EnrolmentError as e:
        raise SetupError("%s: %s" % (_shown(path), e), 2) from None


def _enrolment_path(cfg: GatewayConfig, rid: int, out: str | None) -> Path | None:
    if out:
        return Path(out).expanduser()
    if cfg.enrolment_dir is None:
        return None
    return cfg.enrolment_dir / ("reader-%d.json" % rid)


def _enrolment(cfg: GatewayConfig, rid: int, bid: int, key: bytes, password: str) -> bytes:
    b = cfg.broker
    port, tls = b.port, {}
    try:  # the TLS listener's chain ends with the CA readers are given (docs/operations.md, step 4)
        anchor = trust_anchor(b.tls_cert_file.read_bytes()) if b.tls_cert_file else None
    except (OSError, EnrolmentError):
        anchor = None
    if anchor is not None:
        port, tls = b.tls_port, {"tls": {"server_name": b.reader_host}, "tls_ca": anchor}
    try:
        doc = enrolment_doc(rid, bid, key, b.reader_host, password, port=port, **tls)
    except EnrolmentError as e:  # a reader_host the reader config cannot hold
        raise SetupError("broker.reader_host: %s" % e, 2) from None
    return dumps_enrolment(parse_enrolment(doc))


def _wrote_enrolment(cfg: GatewayConfig, out: Path, what: str) -> None:
    say("wrote %s (0600): %s" % (out, what))
    if cfg.broker.reader_host in ("127.0.0.1", "localhost", "::1"):
        # Right for a test bench, never for a reader in a lift car.
        say(
            "note: it sends the reader to %s (broker.reader_host): a reader on Wi-Fi needs the Pi's address there"
            % cfg.broker.reader_host
        )


def _sync(cfg: GatewayConfig) -> None:
    """Re-read the config (the registry changed) and bring the broker's files along."""
    try:
        fresh = load_config(cfg.path)
    except GatewayConfigError as e:
        raise SetupError("config error: %s" % e, 2) from None
    if fresh.broker.dir is None:
        say("broker.dir is not set: the broker's files were not touched (render them with liftcard-gateway broker)")
        return
    report_sync(sync_broker(fresh))


def _same_key(r, key: bytes) -> bool:
    return hmac.compare_digest(r.key.value, key)


# -- verbs ---------------------------------------------------------------------------


def add(cfg: GatewayConfig, args) -> int:
    rdir = _readers_dir(cfg)
    enr = None
    if args.from_file:
        enr = _read_enrolment(args.from_file)
        rid, bid = enr.reader_id, enr.building_id
        if args.reader_id is not None and _reader_id(args.reader_id) != rid:
            raise SetupError("%s is for reader %d, not %s" % (_shown(args.from_file), rid, args.reader_id), 2)
        if args.building is not None and _id(args.building, "--building") != bid:
            raise SetupError("%s is for building %d, not %s" % (_shown(args.from_file), bid, args.building), 2)
        if args.out:
            raise SetupError("--out goes with a new key, not with --from (the technician has the file)", 2)
    else:
        if args.reader_id is None:
            raise SetupError("READER_ID is needed (or --from FILE)", 2)
        rid = _reader_id(args.reader_id)
        if args.building is None:
            raise SetupError("--building is needed: the reader's building id", 2)
        bid = _id(args.building, "--building")
    _not_hand_listed(cfg, rid)
    old = cfg.readers.get(rid)
    if old is not None:
        if old.building_id != bid:
            raise SetupError(
                "reader %d is registered in building %d, not %d: remove it first" % (rid, old.building_id, bid)
            )
        if enr is None:
            say("reader %d is registered already (building %d): nothing changed" % (rid, bid))
            return 0
        if not _same_key(old, enr.key):
            raise SetupError(
                "reader %d is registered with another key: `liftcard-gateway readers rotate-key %d --from %s` replaces it"
                % (rid, rid, _shown(args.from_file))
            )
        if not (old.broker_hash and mq.password_matches(old.broker_hash, enr.password)):
            raise SetupError("reader %d is registered with another broker password: remove it first" % rid)
        say("reader %d is registered already with this key: nothing changed" % rid)
        return 0
    if enr is not None:
        key, password, out = enr.key, enr.password, None
    else:
        key, password = secrets.token_bytes(32), mq.new_password()
        out = _enrolment_path(cfg, rid, args.out)
        if out is None:
            raise SetupError("--out is needed: gateway.enrolment_dir is not set in %s" % cfg.path, 2)
        if out.exists():
            raise SetupError("%s exists: move it away or name another --out" % out)
    doc = _enrolment(cfg, rid, bid, key, password) if out is not None else None
    try:
        pw_hash = mq.hash_password(reader_user(rid), password)
    except mq.BrokerError as e:
        raise SetupError(str(e)) from None
    if doc is not None:
        write_private(out, doc)
    readerreg.write_entry(rdir, rid, bid, Secret(key), pw_hash)
    say("added reader %d (building %d, broker user %s)" % (rid, bid, reader_user(rid)))
    if enr is not None and (enr.uplink["host"], enr.uplink["port"]) != (cfg.broker.reader_host, cfg.broker.port):
        say(
            "note: %s sends the reader to %s:%d, this broker is %s:%d (broker.reader_host, port)"
            % (_shown(args.from_file), enr.uplink["host"], enr.uplink["port"], cfg.broker.reader_host, cfg.broker.port)
        )
    if doc is not None:
        _wrote_enrolment(cfg, out, "the reader's key and broker password, for the technician")
    _sync(cfg)
    _reload_daemon(cfg)
    return 0


def remove(cfg: GatewayConfig, rid: int) -> int:
    rdir = _readers_dir(cfg)
    _not_hand_listed(cfg, rid)
    if not readerreg.remove_entry(rdir, rid):
        say("reader %d is not registered: nothing changed" % rid)
        return 0
    say("removed reader %d: its key and broker login are gone" % rid)
    if cfg.enrolment_dir is not None:
        ef = cfg.enrolment_dir / ("reader-%d.json" % rid)
        if ef.exists():
            ef.unlink()
            say("removed %s" % ef)
    _sync(cfg)
    _reload_daemon(cfg)
    return 0


def rotate_key(cfg: GatewayConfig, args) -> int:
    rdir = _readers_dir(cfg)
    rid = _reader_id(args.reader_id)
    _not_hand_listed(cfg, rid)
    old = cfg.readers.get(rid)
    if old is None:
        raise SetupError("reader %d is not registered: add it with `liftcard-gateway readers add`" % rid)
    bid = old.building_id
    if args.from_file:
        enr = _read_enrolment(args.from_file)
        if (enr.reader_id, enr.building_id) != (rid, bid):
            raise SetupError(
                "%s is for reader %d of building %d, not reader %d of building %d"
                % (_shown(args.from_file), enr.reader_id, enr.building_id, rid, bid),
                2,
            )
        if args.out:
            raise SetupError("--out goes with a new key, not with --from (the technician has the file)", 2)
        key, password, out = enr.key, enr.password, None
        if _same_key(old, key) and old.broker_hash and mq.password_matches(old.broker_hash, password):
            say("reader %d has this key already: nothing changed" % rid)
            return 0
    else:
        key = secrets.token_bytes(32)
        out = _enrolment_path(cfg, rid, args.out)
        if out is None:
            raise SetupError("--out is needed: gateway.enrolment_dir is not set in %s" % cfg.path, 2)
        password = _kept_password(cfg, old)
    if password is not None and old.broker_hash and mq.password_matches(old.broker_hash, password):
        pw_hash, kept = old.broker_hash, True
    else:
        password, kept = password or mq.new_password(), False
        try:
            pw_hash = mq.hash_password(reader_user(rid), password)
        except mq.BrokerError as e:
            raise SetupError(str(e)) from None
    doc = _enrolment(cfg, rid, bid, key, password) if out is not None else None
    if doc is not None:
        write_private(out, doc)
    readerreg.write_entry(rdir, rid, bid, Secret(key), pw_hash)
    say("reader %d has a new key%s" % (rid, " (its broker password stays)" if kept else " and a new broker password"))
    # The gateway keeps the board's link counters and sequence numbers under
    # its id: a fresh board there would be refused as a replay.
    say("for the same board only: a new board in its place needs a new reader id (readers add)")
    if doc is not None:
        _wrote_enrolment(cfg, out, "configure the reader with it")
    _sync(cfg)
    _reload_daemon(cfg)
    return 0


def _kept_password(cfg: GatewayConfig, old) -> str | None:
    """The reader's broker password from its last enrolment file, if that is
    still there and still matches its login; None otherwise (a new one is made)."""
    if cfg.enrolment_dir is None or not old.broker_hash:
        return None
    p = cfg.enrolment_dir / ("reader-%d.json" % old.reader_id)
    try:
        enr = loads_enrolment(p.read_bytes()[: MAX_ENROLMENT_FILE + 1])
    except (OSError, EnrolmentError):
        return None
    if enr.reader_id != old.reader_id or not mq.password_matches(old.broker_hash, enr.password):
        return None
    return enr.password


def list_readers(cfg: GatewayConfig, as_json: bool) -> int:
    rows = []
    for rid in sorted(cfg.readers):
        r = cfg.readers[rid]
        ef = cfg.enrolment_dir / ("reader-%d.json" % rid) if cfg.enrolment_dir is not None else None
        rows.append(
            {
                "reader_id": rid,
                "building_id": r.building_id,
                "listed_in": str(r.entry) if r.entry is not None else str(cfg.path),
                "broker_user": reader_user(rid),
                "broker_login": bool(r.broker_hash) if r.entry is not None else None,
                "key_file": str(r.key_file),
                "enrolment_file": str(ef) if ef is not None and ef.exists() else None,
            }
        )
    if as_json:
        say(json.dumps(rows, indent=1))
        return 0
    if not rows:
        say("no readers (add one: liftcard-gateway readers add READER_ID --building B --config %s)" % cfg.path)
        return 0

    def login(v):
        return "-" if v is None else ("yes" if v else "no")

    say(
        render_table(
            ("reader", "building", "broker user", "login", "listed in", "enrolment file"),
            [
                (
                    str(x["reader_id"]),
                    str(x["building_id"]),
                    x["broker_user"],
                    login(x["broker_login"]),
                    "readers_dir" if x["listed_in"] != str(cfg.path) else "config",
                    x["enrolment_file"] or "-",
                )
                for x in rows
            ],
        )
    )
    return 0
