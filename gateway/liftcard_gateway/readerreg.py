"""The reader registry: the readers `liftcard-gateway readers add` registered,
one small TOML file per reader in the directory `[gateway] readers_dir` names,
beside its key file (docs/gateway.md, "Readers"):

    readers_dir/reader-7.toml     reader_id, building_id, key_file, broker_hash
    readers_dir/reader-7.key      64 hex digits, mode 0600

`broker_hash` is the reader's line of Mosquitto's password file (salted
PBKDF2, made by mosquitto_passwd): the broker's files can be rendered again
from the registry without any plain password. Every file is 0600 and written
atomically, so gateway.toml stays the operator's, hand-editable, and a reader
is added or removed by one rename.

The daemon reads the registry with the config (config.py), at start and on
SIGHUP: an added, removed or re-keyed reader takes effect at its next reload.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from liftcard_protocol.keys import write_private

from .tomlconf import ConfigError, Secret, read_toml

_ENTRY_RE = re.compile(r"reader-([0-9]{1,10})\.toml")
_HASH_RE = re.compile(r"\$[0-9]+\$[A-Za-z0-9+/=$.]{8,400}")


@dataclass(frozen=True)
class Entry:
    """One registered reader, as stored (the key is checked by config.py)."""

    reader_id: int
    building_id: int
    key_file: Path
    broker_hash: str | None = field(default=None, repr=False)
    first_seq: int | None = None


def entry_path(readers_dir: Path, reader_id: int) -> Path:
    return Path(readers_dir) / ("reader-%d.toml" % reader_id)


def key_path(readers_dir: Path, reader_id: int) -> Path:
    return Path(readers_dir) / ("reader-%d.key" % reader_id)


def entry_files(readers_dir: Path) -> list[tuple[int, Path]]:
    """(reader_id, path) of every reader-<id>.toml, by reader id; [] when the
    directory does not exist yet (no reader added)."""
    d = Path(readers_dir)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError("gateway.readers_dir", "cannot read %s: %s" % (d, e.strerror)) from None
    out = []
    for n in names:
        m = _ENTRY_RE.fullmatch(n)
        if m:
            out.append((int(m.group(1)), d / n))
    return sorted(out)


def read_entry(path: Path) -> dict:
    """The parsed TOML of one entry (config.py checks its fields)."""
    return read_toml(path)


def check_hash(line_hash: str) -> str:
    if not isinstance(line_hash, str) or not _HASH_RE.fullmatch(line_hash):
        raise ValueError("not a mosquitto password hash")
    return line_hash


def write_entry(readers_dir: Path, reader_id: int, building_id: int, key: Secret, broker_hash: str) -> Path:
    """Write (or replace) a reader's key file, then its entry: the entry names
    the key, so a reader is registered only once both are on disk."""
    d = Path(readers_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    kp = key_path(d, reader_id)
    write_private(kp, (key.value.hex() + "\n").encode())
    text = 'reader_id = %d\nbuilding_id = %d\nkey_file = "%s"\nbroker_hash = "%s"\n' % (
        reader_id,
        building_id,
        kp.name,
        check_hash(broker_hash),
    )
    header = "# Written by liftcard-gateway readers add; see docs/gateway.md\n"
    return write_private(entry_path(d, reader_id), (header + text).encode())


def remove_entry(readers_dir: Path, reader_id: int) -> bool:
    """Remove a reader's entry, then its key; False if it had none."""
    ep = entry_path(readers_dir, reader_id)
    try:
        ep.unlink()
    except FileNotFoundError:
        return False
    key_path(readers_dir, reader_id).unlink(missing_ok=True)
    return True
