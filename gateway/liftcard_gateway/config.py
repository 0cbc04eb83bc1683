"""The gateway's TOML configuration (docs/gateway.md).

    [gateway]
    data_dir = "/var/lib/liftcard"          # holds gateway.db (SQLite, WAL)

    [broker]
    host = "127.0.0.1"
    port = 1883
    username = "gateway"
    password_file = "/etc/liftcard/broker.pass"   # mode 0600, the password alone

    [[readers]]
    reader_id = 7
    building_id = 12
    key_file = "/etc/liftcard/keys/reader-7.key"  # mode 0600, 64 hex digits
    # first_seq = 1                                # optional, see docs/gateway.md

Every problem raises `GatewayConfigError` whose message is one line naming the
key (``readers[0].key_file: ...``) and the rule, never a secret's value.
Relative paths are taken relative to the config file's directory. Secrets are
held in `Secret` objects whose repr and str show nothing.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from liftcard_protocol import keys
from liftcard_protocol.fields import ID_MAX as _ID_MAX
from liftcard_protocol.keys import KeyFileError, check_private_file
from liftcard_protocol.topics import GATEWAY_ID_RE
_U32 = (1 << 32) - 1


class GatewayConfigError(ValueError):
    """A gateway config is refused. `key` names the offending key; str() is one line."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class Secret:
    """A secret value whose repr/str never shows it. `.value` is the secret."""

    __slots__ = ("_v",)

    def __init__(self, value):
        self._v = value

    @property
    def value(self):
        return self._v

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class ReaderConf:
    reader_id: int
    building_id: int
    key: Secret = field(repr=False, compare=False)
    key_file: Path = field(compare=False)
    first_seq: int | None = None


@dataclass(frozen=True)
class BrokerConf:
    host: str
    port: int
    username: str
    password: Secret = field(repr=False, compare=False)
    password_file: Path = field(compare=False)
    client_id: str = "liftcard-gateway"
    keepalive: int = 30


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    data_dir: Path
    broker: BrokerConf
    readers: dict[int, ReaderConf]
    upstream: "UpstreamConf | None" = None  # the [upstream] section (docs/upstream.md); None: no upstream
    cards: "CardsConf | None" = None  # the [cards] section (docs/cards.md); None: no card database

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gateway.db"


def _table(doc: dict, key: str, required: bool = True) -> dict:
    if key not in doc:
        if required:
            raise GatewayConfigError(key, "missing section [%s]" % key)
        return {}
    v = doc[key]
    if not isinstance(v, dict):
        raise GatewayConfigError(key, "must be a table [%s]" % key)
    return v


def _unknown(t: dict, allowed: set, prefix: str) -> None:
    for k in t:
        if k not in allowed:
            raise GatewayConfigError(f"{prefix}.{k}" if prefix else k, "unknown key")


def _int(t: dict, key: str, prefix: str, lo: int, hi: int, default=None) -> int:
    if key not in t:
        if default is not None:
            return default
        raise GatewayConfigError(f"{prefix}.{key}", "missing (an integer %d .. %d)" % (lo, hi))
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise GatewayConfigError(f"{prefix}.{key}", "must be an integer %d .. %d" % (lo, hi))
    return v


def _str(t: dict, key: str, prefix: str, default=None) -> str:
    if key not in t:
        if default is not None:
            return default
        raise GatewayConfigError(f"{prefix}.{key}", "missing (a string)")
    v = t[key]
    if not isinstance(v, str) or not v or "\n" in v:
        raise GatewayConfigError(f"{prefix}.{key}", "must be a non-empty one-line string")
    return v


def _path(t: dict, key: str, prefix: str, base: Path) -> Path:
    p = Path(_str(t, key, prefix)).expanduser()
    return p if p.is_absolute() else (base / p)


def _read_secret_file(path: Path, key: str) -> str:
    """The stripped text of a 0600 secret file. Errors never show its content."""
    try:
        check_private_file(path)  # one rule for every secret file (liftcard_protocol.keys)
    except KeyFileError as e:
        raise GatewayConfigError(key, str(e)) from None
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
        return data.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise GatewayConfigError(key, f"cannot read {path} as text") from None


def load_config(path: str | os.PathLike) -> GatewayConfig:
    """Load and validate the config file; raises GatewayConfigError (one line)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise GatewayConfigError("", f"config file not found: {path}") from None
    except OSError as e:
        raise GatewayConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise GatewayConfigError("", f"{path} is not valid TOML: {str(e).splitlines()[0]}") from None
    return parse_config(doc, path)


def parse_config(doc: dict, path: Path) -> GatewayConfig:
    base = Path(path).resolve().parent
    _unknown(doc, {"gateway", "broker", "readers", "upstream", "cards"}, "")
    gw = _table(doc, "gateway")
    _unknown(gw, {"data_dir"}, "gateway")
    data_dir = _path(gw, "data_dir", "gateway", base)

    br = _table(doc, "broker")
    _unknown(br, {"host", "port", "username", "password_file", "client_id", "keepalive"}, "broker")
    host = _str(br, "host", "broker", "127.0.0.1")
    port = _int(br, "port", "broker", 1, 65535, 1883)
    username = _str(br, "username", "broker", "gateway")
    pw_file = _path(br, "password_file", "broker", base)
    password = _read_secret_file(pw_file, "broker.password_file")
    if not password or "\n" in password:
        raise GatewayConfigError("broker.password_file", f"{pw_file} must hold the password on one line")
    client_id = _str(br, "client_id", "broker", "liftcard-gateway")
    keepalive = _int(br, "keepalive", "broker", 5, 3600, 30)
    broker = BrokerConf(host, port, username, Secret(password), pw_file, client_id, keepalive)

    rlist = doc.get("readers", [])
    if not isinstance(rlist, list):
        raise GatewayConfigError("readers", "must be an array of tables [[readers]]")
    readers: dict[int, ReaderConf] = {}
    for i, r in enumerate(rlist):
        pre = f"readers[{i}]"
        if not isinstance(r, dict):
            raise GatewayConfigError(pre, "must be a table")
        _unknown(r, {"reader_id", "building_id", "key_file", "first_seq"}, pre)
        rid = _int(r, "reader_id", pre, 1, _ID_MAX)
        bid = _int(r, "building_id", pre, 1, _ID_MAX)
        if rid in readers:
            raise GatewayConfigError(f"{pre}.reader_id", "reader %d is listed twice" % rid)
        kf = _path(r, "key_file", pre, base)
        text = _read_secret_file(kf, f"{pre}.key_file")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32 or len(text) != 64:
            raise GatewayConfigError(f"{pre}.key_file", f"{kf} must hold exactly 64 hex digits (a 32-byte key)")
        first = _int(r, "first_seq", pre, 1, _U32) if "first_seq" in r else None
        readers[rid] = ReaderConf(rid, bid, Secret(key), kf, first)
    return GatewayConfig(Path(path), data_dir, broker, readers, upstream=_parse_upstream(doc, base),
                         cards=_parse_cards(doc, base))


# -- [upstream]: the link to the bank ledger (docs/upstream.md) ----------------------------
@dataclass(frozen=True)
class UpstreamConf:
    gateway_id: str
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path                       # the TLS client key (mode 0600; read by the TLS library)
    signing_key: Secret = field(repr=False, compare=False)   # Ed25519PrivateKey
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


_UPSTREAM_KEYS = {"gateway_id", "host", "port", "ca_file", "cert_file", "key_file", "signing_key_file",
                  "ledger_public_key_file", "client_id", "keepalive", "batch_rides", "max_inflight",
                  "ack_timeout_s", "max_backoff_s", "scan_interval_s", "username", "password_file", "protocol"}


def _parse_upstream(doc: dict, base: Path) -> "UpstreamConf | None":
    if "upstream" not in doc:
        return None
    up = _table(doc, "upstream")
    pre = "upstream"
    _unknown(up, _UPSTREAM_KEYS, pre)
    gid = _str(up, "gateway_id", pre)
    if not GATEWAY_ID_RE.fullmatch(gid):
        raise GatewayConfigError("upstream.gateway_id", "must be 1 .. 64 of A-Z a-z 0-9 _ -")
    host = _str(up, "host", pre)
    port = _int(up, "port", pre, 1, 65535, 8883)
    files = {}
    for k in ("ca_file", "cert_file", "key_file", "signing_key_file", "ledger_public_key_file"):
        files[k] = _path(up, k, pre, base)
        if not files[k].is_file():
            raise GatewayConfigError(f"{pre}.{k}", f"file not found: {files[k]}")
    try:
        keys.check_private_file(files["key_file"])
    except keys.KeyFileError as e:
        raise GatewayConfigError("upstream.key_file", str(e)) from None
    try:
        ctx = ssl.create_default_context(cafile=str(files["ca_file"]))
    except (ssl.SSLError, OSError):
        raise GatewayConfigError("upstream.ca_file", f"{files['ca_file']} is not a PEM CA certificate") from None
    try:
        ctx.load_cert_chain(str(files["cert_file"]), str(files["key_file"]))
    except (ssl.SSLError, OSError):
        raise GatewayConfigError("upstream.cert_file", f"{files['cert_file']} and {files['key_file']} are not a "
                                 "matching PEM certificate and unencrypted private key") from None
    try:
        skey = keys.load_signing_key(files["signing_key_file"])
    except keys.KeyFileError as e:
        raise GatewayConfigError("upstream.signing_key_file", str(e)) from None
    try:
        lpub = keys.load_public_key(files["ledger_public_key_file"])
    except keys.KeyFileError as e:
        raise GatewayConfigError("upstream.ledger_public_key_file", str(e)) from None
    client_id = _str(up, "client_id", pre, "liftcard-gw-" + gid)
    keepalive = _int(up, "keepalive", pre, 5, 3600, 30)
    batch_rides = _int(up, "batch_rides", pre, 1, 5000, 500)
    max_inflight = _int(up, "max_inflight", pre, 1, 1024, 16)
    ack_timeout = _int(up, "ack_timeout_s", pre, 1, 3600, 10)
    max_backoff = _int(up, "max_backoff_s", pre, 1, 86400, 300)
    scan = _int(up, "scan_interval_s", pre, 1, 3600, 5)
    username = _str(up, "username", pre) if "username" in up else None
    password = None
    if "password_file" in up:
        if username is None:
            raise GatewayConfigError("upstream.password_file", "needs upstream.username")
        pf = _path(up, "password_file", pre, base)
        pw = _read_secret_file(pf, "upstream.password_file")
        if not pw or "\n" in pw:
            raise GatewayConfigError("upstream.password_file", f"{pf} must hold the password on one line")
        password = Secret(pw)
    protocol = _str(up, "protocol", pre, "3.1.1")
    if protocol not in ("3.1.1", "5"):
        raise GatewayConfigError("upstream.protocol", 'must be "3.1.1" or "5"')
    return UpstreamConf(gid, host, port, files["ca_file"], files["cert_file"], files["key_file"], Secret(skey),
                        files["signing_key_file"], lpub, files["ledger_public_key_file"], client_id, keepalive,
                        batch_rides, max_inflight, ack_timeout, max_backoff, scan, username, password, protocol)


# -- [cards]: the card database fed by the bank's signed updates (docs/cards.md) ------------
@dataclass(frozen=True)
class CardsConf:
    bank_public_key: bytes = field(repr=False)   # raw Ed25519 public key, 32 bytes (public, not secret)
    bank_public_key_file: Path = None
    compound_id: int = 0
    full_list_after_ops: int = 238
    resend_after_s: int = 120
    history_versions: int = 64


def _parse_cards(doc: dict, base: Path) -> "CardsConf | None":
    if "cards" not in doc:
        return None
    t = _table(doc, "cards")
    _unknown(t, {"bank_public_key_file", "compound_id", "full_list_after_ops", "resend_after_s",
                 "history_versions"}, "cards")
    kf = _path(t, "bank_public_key_file", "cards", base)
    try:
        pub = keys.public_key_bytes(keys.load_public_key(kf))
    except keys.KeyFileError as e:
        raise GatewayConfigError("cards.bank_public_key_file", str(e)) from None
    return CardsConf(pub, kf, _int(t, "compound_id", "cards", 1, _ID_MAX),
                     _int(t, "full_list_after_ops", "cards", 0, 238, 238),
                     _int(t, "resend_after_s", "cards", 1, 86400, 120),
                     _int(t, "history_versions", "cards", 1, 100000, 64))
