"""Reading TOML config files: the field readers the gateway's config
(config.py) and the reference ledger's (liftcard_tools.ledger) share.

Each reader takes the table, the key and the key's `prefix` (the table's own
name, `readers[0]` for an element of an array of tables) and raises
`ConfigError`, whose message is one line naming the full key
(`broker.port: must be an integer 1 .. 65535`). Secrets read from files are
held in `Secret`, whose repr and str show nothing; an error never shows a
file's content.

    doc = read_toml(path)                      # the file, parsed
    no_unknown_keys(doc, {"gateway", ...}, "") # a typo is an error, not a default
    br = table(doc, "broker")
    port = integer(br, "port", "broker", 1, 65535, default=1883)
    host = string(br, "host", "broker", default="127.0.0.1")
    key = path(br, "key_file", "broker", base) # relative to the config's directory
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from liftcard_protocol.keys import KeyFileError, check_private_file


class ConfigError(ValueError):
    """A config is refused. `key` names the offending key ("" for the file
    itself); str() is one line."""

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


def _key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def read_toml(path: str | os.PathLike) -> dict:
    """The parsed file; ConfigError (key "") if it is missing, unreadable or not TOML."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {str(e).splitlines()[0]}") from None


def table(doc: dict, key: str, required: bool = True) -> dict:
    """The table [key] of doc ({} if absent and not required)."""
    if key not in doc:
        if required:
            raise ConfigError(key, "missing section [%s]" % key)
        return {}
    v = doc[key]
    if not isinstance(v, dict):
        raise ConfigError(key, "must be a table [%s]" % key)
    return v


def no_unknown_keys(t: dict, allowed: set, prefix: str) -> None:
    """ConfigError naming the first key of t that is not in allowed."""
    for k in t:
        if k not in allowed:
            raise ConfigError(_key(prefix, k), "unknown key")


def integer(t: dict, key: str, prefix: str, lo: int, hi: int, default: int | None = None) -> int:
    """An integer lo .. hi (not a bool); default when absent, if given."""
    if key not in t:
        if default is not None:
            return default
        raise ConfigError(_key(prefix, key), "missing (an integer %d .. %d)" % (lo, hi))
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(_key(prefix, key), "must be an integer %d .. %d" % (lo, hi))
    return v


def string(t: dict, key: str, prefix: str, default: str | None = None) -> str:
    """A non-empty one-line string; default when absent, if given."""
    if key not in t:
        if default is not None:
            return default
        raise ConfigError(_key(prefix, key), "missing (a string)")
    v = t[key]
    if not isinstance(v, str) or not v or "\n" in v:
        raise ConfigError(_key(prefix, key), "must be a non-empty one-line string")
    return v


def path(t: dict, key: str, prefix: str, base: Path) -> Path:
    """A required path; `~` expanded, a relative one taken from base (the config's directory)."""
    p = Path(string(t, key, prefix)).expanduser()
    return p if p.is_absolute() else (base / p)


def existing_file(t: dict, key: str, prefix: str, base: Path) -> Path:
    """path(), which must name an existing file."""
    p = path(t, key, prefix, base)
    if not p.is_file():
        raise ConfigError(_key(prefix, key), f"file not found: {p}")
    return p


def private_file(p: Path, key: str) -> Path:
    """p, if only its owner can read it (keys.check_private_file); else
    ConfigError naming key (a full key) and saying `chmod 600 it`."""
    try:
        check_private_file(p)
    except KeyFileError as e:
        raise ConfigError(key, str(e)) from None
    return p


def secret_text(p: Path, key: str) -> Secret:
    """The stripped text of a 0600 file (a password), never shown in an error."""
    private_file(p, key)
    try:
        with open(p, "rb") as f:
            data = f.read(4096)
        return Secret(data.decode("utf-8").strip())
    except (OSError, UnicodeDecodeError):
        raise ConfigError(key, f"cannot read {p} as text") from None
