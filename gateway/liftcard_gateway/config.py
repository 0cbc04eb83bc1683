"""The gateway's TOML configuration (docs/gateway.md). `liftcard-gateway init`
writes one; every key can be edited by hand.

    [gateway]
    gateway_id = "gw-0001"                   # this gateway's one identity (see below)
    compound_id = 1                          # the bank's number for the same compound
    data_dir = "/var/lib/liftcard"           # holds gateway.db (SQLite, WAL)
    readers_dir = "/etc/liftcard/readers"    # optional: readers added by `readers add`
    enrolment_dir = "/etc/liftcard/enrolment"  # optional: where `readers add` writes reader-<id>.json

    [broker]
    listen = "127.0.0.1"                     # the local Mosquitto's listener (`broker`)
    port = 1883
    username = "gateway"
    password_file = "/etc/liftcard/broker.pass"   # mode 0600, the password alone
    dir = "/etc/liftcard/broker"             # mosquitto.conf, passwd, acl (`broker`)
    # host = "127.0.0.1"                     # where the daemon connects (default: listen, or loopback)
    # reader_host = "192.168.4.1"            # the address readers are given (default: listen)

    [[readers]]                              # readers listed by hand, beside readers_dir's
    reader_id = 7
    building_id = 12
    key_file = "/etc/liftcard/keys/reader-7.key"  # mode 0600, 64 hex digits
    # first_seq = 1                                # optional, see docs/gateway.md

The identity: `[gateway] gateway_id` is the gateway's name on the bank link
(its topics, its certificate's CN, exactly) and `compound_id` is the number the
bank signs card updates for; both are this gateway's and live only here. The
old places (`[upstream] gateway_id`, `[cards] compound_id`) are refused with a
line saying what to write instead.

Every problem raises `GatewayConfigError` whose message is one line naming the
key (``readers[0].key_file: ...``) and the rule, never a secret's value.
Relative paths are taken relative to the config file's directory. Secrets are
held in `Secret` objects whose repr and str show nothing. The field readers
are tomlconf.py's, shared with the reference ledger's config.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from liftcard_protocol import keys
from liftcard_protocol.fields import ID_MAX, U32
from liftcard_protocol.topics import GATEWAY_ID_RE

from . import readerreg
from .pki import RESERVED_IDENTITIES
from .tomlconf import (
    ConfigError,
    Secret,
    existing_file,
    integer,
    no_unknown_keys,
    path as path_field,
    private_file,
    read_toml,
    secret_text,
    string,
    table,
)

# A gateway config is refused: tomlconf's error, under the name the gateway's
# callers know. `key` names the offending key; str() is one line.
GatewayConfigError = ConfigError


@dataclass(frozen=True)
class ReaderConf:
    reader_id: int
    building_id: int
    key: Secret = field(repr=False, compare=False)
    key_file: Path = field(compare=False)
    first_seq: int | None = None
    # Where the reader is listed: None for gateway.toml's [[readers]], else its
    # registry entry (readerreg.py), whose broker_hash is its passwd line.
    entry: Path | None = field(default=None, compare=False)
    broker_hash: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class BrokerConf:
    host: str
    port: int
    username: str
    password: Secret = field(repr=False, compare=False)
    password_file: Path = field(compare=False)
    client_id: str = "liftcard-gateway"
    keepalive: int = 30
    listen: str = "127.0.0.1"  # the local Mosquitto's listener address
    dir: Path | None = None  # the generated broker files (`liftcard-gateway broker`)
    reader_host: str = "127.0.0.1"  # the address readers are given in their enrolment
    tls_cert_file: Path | None = None  # TLS listener for the readers (docs/broker.md)
    tls_key_file: Path | None = None
    tls_port: int = 8883


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    data_dir: Path
    broker: BrokerConf
    readers: dict[int, ReaderConf]
    upstream: "UpstreamConf | None" = None  # the [upstream] section (docs/upstream.md); None: no upstream
    cards: "CardsConf | None" = None  # the [cards] section (docs/cards.md); None: no card database
    gateway_id: str | None = None  # [gateway] gateway_id: the identity on the bank link
    compound_id: int | None = None  # [gateway] compound_id: the bank's number for it
    readers_dir: Path | None = None
    enrolment_dir: Path | None = None
    console: "ConsoleConf | None" = None  # [console] (docs/gateway.md, "Web console"); None: no console
    retention: "RetentionConf | None" = None  # [retention] (docs/gateway.md, "Retention"); None: keep every ride

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gateway.db"


def _password(p: Path, key: str) -> Secret:
    """A password file: mode 0600, the password alone on one line."""
    pw = secret_text(p, key)
    if not pw.value or "\n" in pw.value:
        raise GatewayConfigError(key, f"{p} must hold the password on one line")
    return pw


def load_config(path: str | os.PathLike) -> GatewayConfig:
    """Load and validate the config file; raises GatewayConfigError (one line)."""
    path = Path(path)
    return parse_config(read_toml(path), path)


_GATEWAY_KEYS = {"data_dir", "gateway_id", "compound_id", "readers_dir", "enrolment_dir"}
_BROKER_KEYS = {
    "host",
    "port",
    "username",
    "password_file",
    "client_id",
    "keepalive",
    "listen",
    "dir",
    "reader_host",
    "tls_cert_file",
    "tls_key_file",
    "tls_port",
}
_WILDCARDS = ("0.0.0.0", "::")
_ADDRESS_RE = re.compile(r"[0-9A-Za-z.:\-]{1,253}")


def check_gateway_id(gid: str, key: str = "gateway.gateway_id") -> str:
    """gid, if it can name a gateway on the bank link; GatewayConfigError otherwise.
    The bank's own identities (ledger, cards, probe) are not a gateway's."""
    if not isinstance(gid, str) or not GATEWAY_ID_RE.fullmatch(gid):
        raise GatewayConfigError(key, "must be 1 .. 64 of A-Z a-z 0-9 _ -")
    if gid in RESERVED_IDENTITIES:
        raise GatewayConfigError(
            key, "%s is one of the bank's own identities (%s)" % (gid, ", ".join(RESERVED_IDENTITIES))
        )
    return gid


def valid_address(v: str) -> bool:
    """A host name or an IP address. Digits and dots only is an IPv4 address
    or nothing (999.1.1.1 is no host name: Mosquitto would fail at start)."""
    if not _ADDRESS_RE.fullmatch(v):
        return False
    if ":" in v or all(part.isdigit() for part in v.split(".")):
        try:
            ipaddress.ip_address(v)
        except ValueError:
            return False
    return True


def _address(t: dict, key: str, default: str) -> str:
    v = string(t, key, "broker", default)
    if not valid_address(v):
        raise GatewayConfigError("broker." + key, "must be a host name or an IP address")
    return v


def _parse_broker(br: dict, base: Path) -> BrokerConf:
    no_unknown_keys(br, _BROKER_KEYS, "broker")
    listen = _address(br, "listen", "127.0.0.1")
    local = "127.0.0.1" if listen in _WILDCARDS else listen
    host = _address(br, "host", local)
    port = integer(br, "port", "broker", 1, 65535, 1883)
    username = string(br, "username", "broker", "gateway")
    pw_file = path_field(br, "password_file", "broker", base)
    password = _password(pw_file, "broker.password_file")
    client_id = string(br, "client_id", "broker", "liftcard-gateway")
    keepalive = integer(br, "keepalive", "broker", 5, 3600, 30)
    bdir = path_field(br, "dir", "broker", base) if "dir" in br else None
    reader_host = _address(br, "reader_host", local)
    tls = [k for k in ("tls_cert_file", "tls_key_file") if k in br]
    cert = key = None
    if tls:
        if len(tls) == 1:
            raise GatewayConfigError("broker." + tls[0], "needs both broker.tls_cert_file and broker.tls_key_file")
        cert = existing_file(br, "tls_cert_file", "broker", base)
        key = private_file(existing_file(br, "tls_key_file", "broker", base), "broker.tls_key_file")
    tls_port = integer(br, "tls_port", "broker", 1, 65535, 8883)
    if cert is not None and tls_port == port:
        raise GatewayConfigError("broker.tls_port", "must differ from broker.port")
    return BrokerConf(
        host, port, username, password, pw_file, client_id, keepalive, listen, bdir, reader_host, cert, key, tls_port
    )


def _reader_key(kf: Path, key: str) -> Secret:
    text = secret_text(kf, key).value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32 or len(text) != 64:
        raise GatewayConfigError(key, f"{kf} must hold exactly 64 hex digits (a 32-byte key)")
    return Secret(raw)


def _parse_readers(doc: dict, base: Path, readers_dir: Path | None) -> dict[int, ReaderConf]:
    rlist = doc.get("readers", [])
    if not isinstance(rlist, list):
        raise GatewayConfigError("readers", "must be an array of tables [[readers]]")
    readers: dict[int, ReaderConf] = {}
    for i, r in enumerate(rlist):
        pre = f"readers[{i}]"
        if not isinstance(r, dict):
            raise GatewayConfigError(pre, "must be a table")
        no_unknown_keys(r, {"reader_id", "building_id", "key_file", "first_seq"}, pre)
        rid = integer(r, "reader_id", pre, 1, ID_MAX)
        bid = integer(r, "building_id", pre, 1, ID_MAX)
        if rid in readers:
            raise GatewayConfigError(f"{pre}.reader_id", "reader %d is listed twice" % rid)
        kf = path_field(r, "key_file", pre, base)
        first = integer(r, "first_seq", pre, 1, U32) if "first_seq" in r else None
        readers[rid] = ReaderConf(rid, bid, _reader_key(kf, f"{pre}.key_file"), kf, first)
    if readers_dir is None:
        return readers
    for rid, ep in readerreg.entry_files(readers_dir):
        pre = str(ep)
        r = readerreg.read_entry(ep)
        no_unknown_keys(r, {"reader_id", "building_id", "key_file", "first_seq", "broker_hash"}, pre)
        if integer(r, "reader_id", pre, 1, ID_MAX) != rid:
            raise GatewayConfigError(f"{pre}.reader_id", "does not match the file name")
        if rid in readers:
            raise GatewayConfigError(
                f"{pre}.reader_id",
                "reader %d is also listed in [[readers]] of %s: keep one" % (rid, "the config"),
            )
        bid = integer(r, "building_id", pre, 1, ID_MAX)
        kf = path_field(r, "key_file", pre, ep.parent)
        first = integer(r, "first_seq", pre, 1, U32) if "first_seq" in r else None
        bh = None
        if "broker_hash" in r:
            try:
                bh = readerreg.check_hash(r["broker_hash"])
            except ValueError:
                raise GatewayConfigError(f"{pre}.broker_hash", "is not a mosquitto password hash") from None
        readers[rid] = ReaderConf(rid, bid, _reader_key(kf, f"{pre}.key_file"), kf, first, ep, bh)
    return readers


def parse_config(doc: dict, path: Path) -> GatewayConfig:
    base = Path(path).resolve().parent
    no_unknown_keys(doc, {"gateway", "broker", "readers", "upstream", "cards", "console", "retention"}, "")
    gw = table(doc, "gateway")
    no_unknown_keys(gw, _GATEWAY_KEYS, "gateway")
    data_dir = path_field(gw, "data_dir", "gateway", base)
    gid = check_gateway_id(string(gw, "gateway_id", "gateway")) if "gateway_id" in gw else None
    compound = integer(gw, "compound_id", "gateway", 1, ID_MAX) if "compound_id" in gw else None
    readers_dir = path_field(gw, "readers_dir", "gateway", base) if "readers_dir" in gw else None
    enrol_dir = path_field(gw, "enrolment_dir", "gateway", base) if "enrolment_dir" in gw else None
    broker = _parse_broker(table(doc, "broker"), base)
    readers = _parse_readers(doc, base, readers_dir)
    return GatewayConfig(
        Path(path),
        data_dir,
        broker,
        readers,
        upstream=_parse_upstream(doc, base, gid),
        cards=_parse_cards(doc, base, compound),
        gateway_id=gid,
        compound_id=compound,
        readers_dir=readers_dir,
        enrolment_dir=enrol_dir,
        console=_parse_console(doc),
        retention=_parse_retention(doc),
    )


def _moved(old: str, new: str, value) -> GatewayConfigError:
    """The one line for an identity key in its old place: what to write instead."""
    if isinstance(value, str) and GATEWAY_ID_RE.fullmatch(value):
        shown = '"%s"' % value
    elif isinstance(value, int) and not isinstance(value, bool):
        shown = "%d" % value
    else:
        shown = "..."
    return GatewayConfigError(
        old, "moved: write %s = %s in [gateway] instead (one identity per gateway)" % (new, shown)
    )


# -- [upstream]: the link to the bank ledger (docs/upstream.md) ----------------------------
@dataclass(frozen=True)
class UpstreamConf:
    gateway_id: str
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path  # the TLS client key (mode 0600; read by the TLS library)
    signing_key: Secret = field(repr=False, compare=False)  # Ed25519PrivateKey
    signing_key_file: Path = field(compare=False, default=None)
    ledger_public_key: object = field(repr=False, compare=False, default=None)  # Ed25519PublicKey
    ledger_public_key_file: Path = field(compare=False, default=None)
    client_id: str = ""
    keepalive: int = 30
    batch_rides: int = 500
    max_inflight: int = 16
    ack_timeout_s: int = 10
    max_backoff_s: int = 300
    scan_interval_s: int = 5
    username: str | None = None
    password: Secret | None = field(repr=False, compare=False, default=None)
    protocol: str = "3.1.1"


_UPSTREAM_KEYS = {
    "host",
    "port",
    "ca_file",
    "cert_file",
    "key_file",
    "signing_key_file",
    "ledger_public_key_file",
    "client_id",
    "keepalive",
    "batch_rides",
    "max_inflight",
    "ack_timeout_s",
    "max_backoff_s",
    "scan_interval_s",
    "username",
    "password_file",
    "protocol",
}


def _parse_upstream(doc: dict, base: Path, gid: str | None) -> "UpstreamConf | None":
    if "upstream" not in doc:
        return None
    up = table(doc, "upstream")
    pre = "upstream"
    if "gateway_id" in up:
        raise _moved("upstream.gateway_id", "gateway_id", up["gateway_id"])
    no_unknown_keys(up, _UPSTREAM_KEYS, pre)
    if gid is None:
        raise GatewayConfigError("gateway.gateway_id", "missing: [upstream] needs the gateway's identity in [gateway]")
    host = string(up, "host", pre)
    port = integer(up, "port", pre, 1, 65535, 8883)
    files = {
        k: existing_file(up, k, pre, base)
        for k in ("ca_file", "cert_file", "key_file", "signing_key_file", "ledger_public_key_file")
    }
    private_file(files["key_file"], "upstream.key_file")
    try:
        ctx = ssl.create_default_context(cafile=str(files["ca_file"]))
    except (ssl.SSLError, OSError):
        raise GatewayConfigError("upstream.ca_file", f"{files['ca_file']} is not a PEM CA certificate") from None
    try:
        ctx.load_cert_chain(str(files["cert_file"]), str(files["key_file"]))
    except (ssl.SSLError, OSError):
        raise GatewayConfigError(
            "upstream.cert_file",
            f"{files['cert_file']} and {files['key_file']} are not a "
            "matching PEM certificate and unencrypted private key",
        ) from None
    try:
        skey = keys.load_signing_key(files["signing_key_file"])
    except keys.KeyFileError as e:
        raise GatewayConfigError("upstream.signing_key_file", str(e)) from None
    try:
        lpub = keys.load_public_key(files["ledger_public_key_file"])
    except keys.KeyFileError as e:
        raise GatewayConfigError("upstream.ledger_public_key_file", str(e)) from None
    client_id = string(up, "client_id", pre, "liftcard-" + gid)
    keepalive = integer(up, "keepalive", pre, 5, 3600, 30)
    batch_rides = integer(up, "batch_rides", pre, 1, 5000, 500)
    max_inflight = integer(up, "max_inflight", pre, 1, 1024, 16)
    ack_timeout = integer(up, "ack_timeout_s", pre, 1, 3600, 10)
    max_backoff = integer(up, "max_backoff_s", pre, 1, 86400, 300)
    scan = integer(up, "scan_interval_s", pre, 1, 3600, 5)
    username = string(up, "username", pre) if "username" in up else None
    password = None
    if "password_file" in up:
        if username is None:
            raise GatewayConfigError("upstream.password_file", "needs upstream.username")
        password = _password(path_field(up, "password_file", pre, base), "upstream.password_file")
    protocol = string(up, "protocol", pre, "3.1.1")
    if protocol not in ("3.1.1", "5"):
        raise GatewayConfigError("upstream.protocol", 'must be "3.1.1" or "5"')
    return UpstreamConf(
        gid,
        host,
        port,
        files["ca_file"],
        files["cert_file"],
        files["key_file"],
        Secret(skey),
        files["signing_key_file"],
        lpub,
        files["ledger_public_key_file"],
        client_id,
        keepalive,
        batch_rides,
        max_inflight,
        ack_timeout,
        max_backoff,
        scan,
        username,
        password,
        protocol,
    )


# -- [cards]: the card database fed by the bank's signed updates (docs/cards.md) ------------
@dataclass(frozen=True)
class CardsConf:
    bank_public_key: bytes = field(repr=False)  # raw Ed25519 public key, 32 bytes (public, not secret)
    bank_public_key_file: Path = None
    compound_id: int = 0
    full_list_after_ops: int = 238
    resend_after_s: int = 120
    history_versions: int = 64


def _parse_cards(doc: dict, base: Path, compound: int | None) -> "CardsConf | None":
    if "cards" not in doc:
        return None
    t = table(doc, "cards")
    if "compound_id" in t:
        raise _moved("cards.compound_id", "compound_id", t["compound_id"])
    no_unknown_keys(t, {"bank_public_key_file", "full_list_after_ops", "resend_after_s", "history_versions"}, "cards")
    if compound is None:
        raise GatewayConfigError("gateway.compound_id", "missing: [cards] needs the compound's number in [gateway]")
    kf = path_field(t, "bank_public_key_file", "cards", base)
    try:
        pub = keys.public_key_bytes(keys.load_public_key(kf))
    except keys.KeyFileError as e:
        raise GatewayConfigError("cards.bank_public_key_file", str(e)) from None
    return CardsConf(
        pub,
        kf,
        compound,
        integer(t, "full_list_after_ops", "cards", 0, 238, 238),
        integer(t, "resend_after_s", "cards", 1, 86400, 120),
        integer(t, "history_versions", "cards", 1, 100000, 64),
    )


# -- [console] and [retention] (docs/gateway.md, "Web console", "Retention") ----------------
@dataclass(frozen=True)
class ConsoleConf:
    host: str
    port: int
    allow_remote: bool = False
    refresh_s: int = 10


def _parse_console(doc: dict) -> "ConsoleConf | None":
    """listen = "127.0.0.1:8480" ("[::1]:8480"): the console has no login, so
    an address other than loopback is refused unless allow_remote = true."""
    if "console" not in doc:
        return None
    t = table(doc, "console")
    no_unknown_keys(t, {"listen", "allow_remote", "refresh_s"}, "console")
    listen = string(t, "listen", "console", "127.0.0.1:8480")
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise GatewayConfigError(
            "console.listen", 'must be "address:port", e.g. "127.0.0.1:8480" (port 0: any free one)'
        )
    allow = t.get("allow_remote", False)
    if not isinstance(allow, bool):
        raise GatewayConfigError("console.allow_remote", "must be true or false")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise GatewayConfigError("console.listen", "%s is not an IP address (or localhost)" % host) from None
    if not loopback and not allow:
        raise GatewayConfigError(
            "console.listen",
            "%s is not a loopback address and the console has no login; "
            "set console.allow_remote = true to serve other machines" % host,
        )
    return ConsoleConf(host, int(port), allow, integer(t, "refresh_s", "console", 1, 3600, 10))


@dataclass(frozen=True)
class RetentionConf:
    acked_ride_days: int = 90
    every_s: int = 3600


def _parse_retention(doc: dict) -> "RetentionConf | None":
    if "retention" not in doc:
        return None
    t = table(doc, "retention")
    no_unknown_keys(t, {"acked_ride_days", "every_s"}, "retention")
    return RetentionConf(
        integer(t, "acked_ride_days", "retention", 1, 36500, 90), integer(t, "every_s", "retention", 60, 86400, 3600)
    )


# -- reload (SIGHUP; daemon.py) ----------------------------------------------------------
@dataclass(frozen=True)
class ReaderChanges:
    """Reader ids, sorted, by what a reload does to them."""

    added: tuple[int, ...]
    removed: tuple[int, ...]
    rekeyed: tuple[int, ...]  # another key (its building may have changed too)
    changed: tuple[int, ...]  # the same key, another building or first_seq


def reader_changes(old: dict[int, ReaderConf], new: dict[int, ReaderConf]) -> ReaderChanges:
    rekeyed, changed = [], []
    for rid in sorted(old.keys() & new.keys()):
        a, b = old[rid], new[rid]
        if not hmac.compare_digest(a.key.value, b.key.value):
            rekeyed.append(rid)
        elif (a.building_id, a.first_seq) != (b.building_id, b.first_seq):
            changed.append(rid)
    return ReaderChanges(
        tuple(sorted(new.keys() - old.keys())), tuple(sorted(old.keys() - new.keys())), tuple(rekeyed), tuple(changed)
    )


def _same_secret(a: Secret | None, b: Secret | None) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a.value, b.value)


def _same_upstream(a: UpstreamConf | None, b: UpstreamConf | None) -> bool:
    if a is None or b is None:
        return a is b
    # The keys are objects: compared by their public halves' bytes (one
    # signing key has one public key), so no private byte is read here.
    return (
        a == b
        and (a.signing_key_file, a.ledger_public_key_file) == (b.signing_key_file, b.ledger_public_key_file)
        and keys.public_key_bytes(a.signing_key.value.public_key())
        == keys.public_key_bytes(b.signing_key.value.public_key())
        and keys.public_key_bytes(a.ledger_public_key) == keys.public_key_bytes(b.ledger_public_key)
        and _same_secret(a.password, b.password)
    )


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The keys (or sections) changed between old and new that the daemon
    takes only when it starts: its database, its broker login, its identity,
    the upstream, the card database, the console and retention. The readers
    (and readers_dir) are not among them; nor are the broker's listener keys,
    which the daemon does not use (`liftcard-gateway broker` renders them)."""
    out = []
    for key, a, b in (
        ("gateway.data_dir", old.data_dir, new.data_dir),
        ("gateway.gateway_id", old.gateway_id, new.gateway_id),
        ("gateway.compound_id", old.compound_id, new.compound_id),
        ("broker.host", old.broker.host, new.broker.host),
        ("broker.port", old.broker.port, new.broker.port),
        ("broker.username", old.broker.username, new.broker.username),
        ("broker.client_id", old.broker.client_id, new.broker.client_id),
        ("broker.keepalive", old.broker.keepalive, new.broker.keepalive),
    ):
        if a != b:
            out.append(key)
    ob, nb = old.broker, new.broker
    if ob.password_file != nb.password_file or not _same_secret(ob.password, nb.password):
        out.append("broker.password_file")
    if not _same_upstream(old.upstream, new.upstream):
        out.append("upstream")
    for section in ("cards", "console", "retention"):
        if getattr(old, section) != getattr(new, section):
            out.append(section)
    return out
