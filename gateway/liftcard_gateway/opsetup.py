"""The operator's set-up commands (docs/operations.md): `liftcard-gateway init`
(the data directory, a config skeleton, the gateway's broker password, the
keys for the bank link) and `liftcard-gateway broker` (the local Mosquitto's
files rendered from the config, then a reload).

Both are idempotent: `init` never overwrites a key or a config (it says what
it kept); `broker` renders the same files from the same config. Every check
runs before the first file is written, so a refusal (one line, exit 1 or 2)
changes nothing. Secrets go only into 0600 files, never to the terminal.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol.fields import ID_MAX
from liftcard_protocol.keys import new_signing_key, write_private
from liftcard_protocol.topics import reader_user

from . import broker as mq
from .config import GatewayConfig, GatewayConfigError, check_gateway_id, valid_address
from .pki import new_tls_request

PROG = "liftcard-gateway"
PID_FILE = "mosquitto.pid"


class SetupError(Exception):
    """A refusal: str() is the one line for stderr; `status` the exit status."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def say(msg: str) -> None:
    print(msg, flush=True)


def add_parsers(sub) -> None:
    """`init` and `broker` on the command table of cli.py."""
    p = sub.add_parser("init", help="set up a gateway: data directory, config skeleton, broker password, bank keys")
    p.add_argument("--config", required=True, help="the config to write (kept if it exists)")
    p.add_argument("--data-dir", help="the database's directory (default /var/lib/liftcard)")
    p.add_argument(
        "--gateway-id", help="this gateway's identity on the bank link, e.g. gw-0001 (needed the first time)"
    )
    p.add_argument("--compound-id", help="the bank's number for this compound (default: the gateway id's number)")
    p.add_argument("--listen", help="the local broker's listener address (default 127.0.0.1)")
    p.add_argument("--reader-host", help="the address readers are given (default: the listener's)")
    p.add_argument("--port", help="the local broker's port (default 1883)")
    b = sub.add_parser("broker", help="render the local Mosquitto's config, passwd and ACL; reload it if it runs")
    b.add_argument("--config", required=True, help="the gateway's TOML config")


def check_owner(path: Path) -> None:
    """As root, refuse to write into another user's gateway: the files would be
    root's, 0600, and the daemon (User=liftcard) could not read them."""
    if os.geteuid() != 0:
        return
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    uid = p.stat().st_uid
    if uid == 0:
        return
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    raise SetupError(
        "%s belongs to %s: run this as %s (sudo -u %s liftcard-gateway ...), so the daemon can read what it writes"
        % (p, name, name, name)
    )


# -- init -----------------------------------------------------------------------------------


def _toml_str(v) -> str:
    # A JSON string with ASCII escapes is a TOML basic string.
    return json.dumps(str(v), ensure_ascii=True)


@dataclass
class _Plan:
    config: Path
    confdir: Path
    data_dir: Path
    gateway_id: str
    compound_id: int
    listen: str
    reader_host: str
    port: int

    readers_dir: Path | None = None
    enrolment_dir: Path | None = None
    password_file: Path | None = None

    def __post_init__(self):
        self.readers_dir = self.readers_dir or self.confdir / "readers"
        self.enrolment_dir = self.enrolment_dir or self.confdir / "enrolment"
        self.password_file = self.password_file or self.confdir / "broker.pass"

    @property
    def upstream(self) -> Path:
        return self.confdir / "upstream"

    def skeleton(self) -> str:
        c, u = self.confdir, self.upstream
        return f"""\
# The liftcard gateway's config: written by `liftcard-gateway init`, yours to edit
# (docs/gateway.md has every key). Relative paths are taken from this file's directory.

[gateway]
# The identity: the bank broker's topics and the certificate's CN (docs/upstream.md),
# and the bank's number for this compound in card updates (docs/cards.md).
gateway_id = {_toml_str(self.gateway_id)}
compound_id = {self.compound_id}
data_dir = {_toml_str(self.data_dir)}
# Readers added by `liftcard-gateway readers add`, and their enrolment files.
readers_dir = {_toml_str(self.readers_dir)}
enrolment_dir = {_toml_str(self.enrolment_dir)}

# The local Mosquitto (`liftcard-gateway broker`, docs/broker.md): its listener
# (the Pi's Wi-Fi address lets readers in) and the address the readers are given.
[broker]
listen = {_toml_str(self.listen)}
port = {self.port}
reader_host = {_toml_str(self.reader_host)}
username = "gateway"
password_file = {_toml_str(self.password_file)}
dir = {_toml_str(c / "broker")}

# When the bank has returned upstream/gw.crt, upstream/ca.crt and upstream/ledger.pub,
# uncomment (docs/upstream.md):
# [upstream]
# host = "mqtt.bank.example"
# port = 8883
# ca_file = {_toml_str(u / "ca.crt")}
# cert_file = {_toml_str(u / "gw.crt")}
# key_file = {_toml_str(u / "gw.key")}
# signing_key_file = {_toml_str(u / "signing.key")}
# ledger_public_key_file = {_toml_str(u / "ledger.pub")}

# With the bank's card-update public key (docs/cards.md):
# [cards]
# bank_public_key_file = {_toml_str(c / "bank.pub")}

# The read-only web console and Prometheus /metrics, on loopback (reach it through
# SSH); uncomment to serve it (docs/gateway.md, "Web console"):
# [console]
# listen = "127.0.0.1:8480"

# Pruning the rides the ledger acknowledged; without it nothing is ever deleted
# (docs/gateway.md, "Retention"):
# [retention]
# acked_ride_days = 90
"""


def _existing(path: Path) -> dict:
    """What an existing config says init needs: its identity and the paths it
    names (its own checks come with load_config)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SetupError("%s exists but cannot be read as TOML (%s): fix or move it first" % (path, type(e).__name__))
    gw = doc.get("gateway") if isinstance(doc.get("gateway"), dict) else {}
    br = doc.get("broker") if isinstance(doc.get("broker"), dict) else {}

    def where(t, key):
        v = t.get(key)
        return path.parent / Path(v).expanduser() if isinstance(v, str) and v else None

    gid, cid = gw.get("gateway_id"), gw.get("compound_id")
    return {
        "gateway_id": gid if isinstance(gid, str) else None,
        "compound_id": cid if isinstance(cid, int) and not isinstance(cid, bool) else None,
        "data_dir": where(gw, "data_dir"),
        "readers_dir": where(gw, "readers_dir"),
        "enrolment_dir": where(gw, "enrolment_dir"),
        "password_file": where(br, "password_file"),
        "listen": br.get("listen", "127.0.0.1") if isinstance(br.get("listen", ""), str) else None,
        "reader_host": br.get("reader_host") if isinstance(br.get("reader_host"), str) else None,
        "port": br.get("port", 1883) if isinstance(br.get("port", 0), int) else None,
    }


def _int(text: str | None, name: str, lo: int, hi: int) -> int | None:
    if text is None:
        return None
    try:
        v = int(text, 10)
    except ValueError:
        v = lo - 1
    if not lo <= v <= hi:
        raise SetupError("%s must be %d .. %d" % (name, lo, hi), 2)
    return v


def _plan(args) -> _Plan:
    config = Path(args.config).expanduser().absolute()
    gid, cid = args.gateway_id, _int(args.compound_id, "--compound-id", 1, ID_MAX)
    old: dict = {}
    if config.exists():
        old = _existing(config)
        old_gid, old_cid = old["gateway_id"], old["compound_id"]
        if gid is not None and old_gid is not None and gid != old_gid:
            raise SetupError(
                "%s is gateway %s already, not %s: one gateway, one identity (edit the config to change it)"
                % (config, old_gid, gid)
            )
        if cid is not None and old_cid is not None and cid != old_cid:
            raise SetupError("%s has compound_id %d already, not %d" % (config, old_cid, cid))
        gid = gid or old_gid
        cid = cid or old_cid
    if gid is None:
        raise SetupError("--gateway-id is needed (this gateway's identity on the bank link, e.g. gw-0001)", 2)
    try:
        check_gateway_id(gid)
    except GatewayConfigError:
        raise SetupError("--gateway-id must be 1 .. 64 of A-Z a-z 0-9 _ - (and not ledger, cards, probe)", 2) from None
    if cid is None:
        m = re.search(r"([0-9]+)$", gid)
        if not m or not 1 <= int(m.group(1)) <= ID_MAX:
            raise SetupError("--compound-id is needed: %s ends in no number to take it from" % gid, 2)
        cid = int(m.group(1))
    listen = args.listen or "127.0.0.1"
    reader_host = args.reader_host or ("127.0.0.1" if listen in ("0.0.0.0", "::") else listen)
    for name, v in (("--listen", listen), ("--reader-host", reader_host)):
        if not valid_address(v):
            raise SetupError("%s must be a host name or an IP address" % name, 2)
    port = _int(args.port, "--port", 1, 65535) or 1883
    if old:  # init keeps a config: an option for it would be dropped without a word
        for opt, given, key in (
            ("--listen", args.listen, "listen"),
            ("--reader-host", args.reader_host, "reader_host"),
            ("--port", args.port and port, "port"),
        ):
            if given is not None and old[key] is not None and given != old[key]:
                raise SetupError(
                    "%s has [broker] %s = %s already, not %s: edit it there, then run `broker`"
                    % (config, key, json.dumps(old[key]), json.dumps(given))
                )
    data_dir = Path(args.data_dir or "/var/lib/liftcard").expanduser().absolute()
    if old.get("data_dir") is not None:
        if args.data_dir is not None and data_dir != old["data_dir"].absolute():
            raise SetupError(
                "%s keeps its data in %s, not %s (edit the config to move it)" % (config, old["data_dir"], data_dir)
            )
        data_dir = old["data_dir"].absolute()
    for p in (config, data_dir):
        if any(c in str(p) for c in "\n\r\"' #"):
            raise SetupError("%s: paths must not contain spaces, quotes, # or newlines" % p, 2)
    return _Plan(
        config,
        config.parent,
        data_dir,
        gid,
        cid,
        listen,
        reader_host,
        port,
        old.get("readers_dir"),
        old.get("enrolment_dir"),
        old.get("password_file"),
    )


def _mkdir(path: Path, done: list) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)
    done.append("made %s/" % path)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _unwritable(d: Path, probe: Path) -> str:
    """Why init cannot make or fill d (probe: d or its first existing parent,
    which this user may not write in), and the command that fixes it."""
    if probe != d:  # the guide's `install -d` was skipped: /etc is root's
        try:
            group = grp.getgrgid(os.getegid()).gr_name
        except KeyError:
            group = str(os.getegid())
        return "%s does not exist and %s is not yours: make it first (sudo install -d -o %s -g %s -m 0700 %s)" % (
            d,
            probe,
            _user(os.geteuid()),
            group,
            d,
        )
    owner = _user(probe.stat().st_uid)
    return "cannot write in %s: it belongs to %s (run this as %s: sudo -u %s liftcard-gateway ...)" % (
        probe,
        owner,
        owner,
        owner,
    )


def init(args) -> int:
    """`liftcard-gateway init`: create what is missing, keep what is there."""
    plan = _plan(args)
    check_owner(plan.config)
    for d in (plan.confdir, plan.data_dir):
        probe = d
        while not probe.exists():
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise SetupError(_unwritable(d, probe))
    done: list[str] = []
    for d in (plan.confdir, plan.data_dir, plan.upstream, plan.readers_dir, plan.enrolment_dir):
        _mkdir(d, done)
    if plan.config.exists():
        done.append("kept %s (gateway %s)" % (plan.config, plan.gateway_id))
    else:
        write_private(plan.config, plan.skeleton().encode())
        done.append("wrote %s (gateway %s, compound %d)" % (plan.config, plan.gateway_id, plan.compound_id))
    pw = plan.password_file
    if pw.exists():
        done.append("kept %s" % pw)
    else:
        write_private(pw, (mq.new_password() + "\n").encode())
        done.append("wrote %s (the gateway's broker password, 0600)" % pw)
    sk, spub = plan.upstream / "signing.key", plan.upstream / "signing.pub"
    if sk.exists():
        done.append("kept %s" % sk)
    else:
        new_signing_key(sk, spub)
        done.append("wrote %s (0600) and %s: give the bank signing.pub" % (sk, spub))
    tk, csr = plan.upstream / "gw.key", plan.upstream / "gw.csr"
    if tk.exists():
        done.append("kept %s" % tk)
    else:
        new_tls_request(tk, csr, plan.gateway_id)
        done.append("wrote %s (0600) and %s (CN=%s): give the bank gw.csr" % (tk, csr, plan.gateway_id))
    for line in done:
        say(line)
    return 0


# -- broker -----------------------------------------------------------------------------------


@dataclass
class BrokerSync:
    """What `sync_broker` did: the files it changed, the pid it reloaded (None:
    no broker running), and readers that have no broker login."""

    changed: list
    reloaded: int | None
    conf_changed: bool
    no_login: list
    workdir: Path


def broker_config(cfg: GatewayConfig) -> mq.BrokerConfig:
    b = cfg.broker
    return mq.BrokerConfig(
        port=b.port,
        bind_address=b.listen,
        readers={rid: r.building_id for rid, r in cfg.readers.items()},
        pid_file=PID_FILE,
        tls_cert=str(b.tls_cert_file.absolute()) if b.tls_cert_file else None,
        tls_key=str(b.tls_key_file.absolute()) if b.tls_key_file else None,
        tls_port=b.tls_port,
        tls_bind_address=b.listen,
    )


def _passwd_entries(cfg: GatewayConfig, old: dict) -> tuple[dict, list]:
    """user -> hash for every user of the config: the gateway's from its password
    file (the old line kept while it still matches), each added reader's from the
    registry, a hand-listed reader's from the old file; and the readers left without one."""
    b = cfg.broker
    entries, no_login = {}, []
    g = old.get(b.username)
    entries[b.username] = (
        g if g and mq.password_matches(g, b.password.value) else mq.hash_password(b.username, b.password.value)
    )
    for rid in sorted(cfg.readers):
        r, user = cfg.readers[rid], reader_user(rid)
        h = r.broker_hash or old.get(user)
        if h:
            entries[user] = h
        else:
            no_login.append(rid)
    return entries, no_login


def _write_if_changed(path: Path, data: bytes, changed: list) -> bool:
    try:
        if path.read_bytes() == data:
            os.chmod(path, 0o600)
            return False
    except FileNotFoundError:
        pass
    write_private(path, data)
    changed.append(path)
    return True


def check_renderable(cfg: GatewayConfig) -> None:
    """SetupError unless `broker` can render this config's broker files (checked
    by the readers verbs too, before they change anything)."""
    if cfg.broker.username != mq.GATEWAY_USER:
        raise SetupError("broker.username must be %s for a broker this command renders" % mq.GATEWAY_USER, 2)


def sync_broker(cfg: GatewayConfig) -> BrokerSync:
    """Render mosquitto.conf, passwd and acl into [broker] dir from the config,
    write those that differ, and SIGHUP a running Mosquitto (it re-reads
    passwd and ACL). SetupError if the config names no broker dir."""
    b = cfg.broker
    if b.dir is None:
        raise SetupError("broker.dir is not set in %s: name the directory for the broker's files" % cfg.path, 2)
    check_renderable(cfg)
    wd = b.dir
    bc = broker_config(cfg)
    try:
        entries, no_login = _passwd_entries(cfg, mq.read_passwd(wd / mq.PASSWD))
        wd.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(wd, 0o700)
        (wd / mq.DB_DIR).mkdir(exist_ok=True, mode=0o700)
        changed: list = []
        passwd_text = "".join("%s:%s\n" % (u, entries[u]) for u in entries).encode()
        _write_if_changed(wd / mq.PASSWD, passwd_text, changed)
        _write_if_changed(wd / mq.ACL, mq.render_acl(bc).encode(), changed)
        conf_changed = _write_if_changed(wd / mq.CONF, mq.render_conf(bc, wd).encode(), changed)
        pid = mq.reload(wd / PID_FILE) if changed else _running(wd)
    except mq.BrokerError as e:
        raise SetupError(str(e)) from None
    except ValueError as e:
        raise SetupError("broker: %s" % e, 2) from None
    except OSError as e:
        raise SetupError("cannot write the broker's files in %s: %s" % (wd, e.strerror or e)) from None
    return BrokerSync(changed, pid, conf_changed, no_login, wd)


def _running(wd: Path) -> int | None:
    try:
        text = (wd / PID_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and os.path.exists("/proc/%s" % text) else None


def report_sync(s: BrokerSync) -> None:
    if s.changed:
        say("wrote %s" % ", ".join(str(p) for p in s.changed))
    else:
        say("broker files in %s unchanged" % s.workdir)
    for rid in s.no_login:
        say(
            "reader %d has no broker login: it is listed in [[readers]] of the config by hand; "
            "add it with `liftcard-gateway readers add` instead" % rid
        )
    if s.reloaded is not None and s.changed:
        say("reloaded Mosquitto (pid %d): it re-read passwd and acl" % s.reloaded)
        if s.conf_changed:
            say("mosquitto.conf changed: a new listener needs a restart (systemctl restart liftcard-broker)")
    elif s.reloaded is None:
        say("no Mosquitto is running from %s: start it (systemctl start liftcard-broker)" % (s.workdir / mq.CONF))


def broker_command(cfg: GatewayConfig) -> int:
    check_owner(cfg.path)
    report_sync(sync_broker(cfg))
    return 0


def fail(e: SetupError) -> int:
    print("%s: %s" % (PROG, e), file=sys.stderr)
    return e.status


def run(fn) -> int:
    """fn()'s exit status, or a SetupError's one line and status."""
    try:
        return fn()
    except SetupError as e:
        return fail(e)
