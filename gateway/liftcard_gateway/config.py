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
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

_ID_MAX = (1 << 30) - 1
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
        st = os.stat(path)
    except FileNotFoundError:
        raise GatewayConfigError(key, f"file not found: {path}") from None
    except OSError as e:
        raise GatewayConfigError(key, f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise GatewayConfigError(key, f"not a regular file: {path}")
    if st.st_mode & 0o077:
        raise GatewayConfigError(key, "%s must have mode 0600 (is %04o): chmod 600 it" % (path, st.st_mode & 0o777))
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
    _unknown(doc, {"gateway", "broker", "readers"}, "")
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
    return GatewayConfig(Path(path), data_dir, broker, readers)
