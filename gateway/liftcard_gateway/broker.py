"""The local link's broker: a generated Mosquitto configuration and a private instance.

See docs/broker.md. The topic tree (fixed; payloads in docs/formats.md):

    lc/<building_id>/reader-<reader_id>/up      reader -> gateway: ride batches (QoS 1)
    lc/<building_id>/reader-<reader_id>/status  reader -> gateway: heartbeat, Last Will
    lc/<building_id>/reader-<reader_id>/down    gateway -> reader: acks, whitelists, time, config

Users: ``gateway`` reads and writes ``lc/#``; ``reader-<reader_id>`` may write only its
own ``up`` and ``status`` and read only its own ``down``. The ACL file spells out one
``user`` block per reader (no ``pattern`` rules), so a reader can never pick another
building or another reader's topics.

Everything generated goes into one directory (mode 0700): ``mosquitto.conf``, ``passwd``
(hashed by the real ``mosquitto_passwd``, fed through stdin so no password is ever on a
command line), ``acl``, the persistence database and ``mosquitto.log``; every file 0600.
Passwords come from ``secrets`` and are returned to the caller, never printed or logged.

``write_broker_files`` produces a whole set; the tests and the benchmarks run a private
broker with the same files (liftcard_testing.mosquitto.MosquittoInstance). On the Pi,
``liftcard-gateway broker`` and ``readers add`` (brokerverbs.py, readerverbs.py) keep the
password file as hashed lines (``read_passwd``, ``hash_password``, ``write_passwd``), so
one reader is added without anyone's plain password, and ``reload`` makes a running
Mosquitto re-read passwd and ACL (SIGHUP to the pid of its ``pid_file``).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from liftcard_protocol.keys import write_private
from liftcard_protocol.topics import LOCAL_ALL, check_id, reader_topics, reader_user


__all__ = [
    "BrokerError",
    "BrokerConfig",
    "GATEWAY_USER",
    "reader_user",
    "reader_topics",
    "new_password",
    "find_tool",
    "render_conf",
    "render_acl",
    "write_password_file",
    "write_broker_files",
    "hash_password",
    "password_matches",
    "read_passwd",
    "write_passwd",
    "reload",
]

GATEWAY_USER = "gateway"
_MISSING = "mosquitto not found: install the Debian package mosquitto (scripts/setup.sh does)"
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # not on a normal user's PATH


class BrokerError(RuntimeError):
    """Broker set-up or start failed; the message is one line naming the problem
    (for a start failure, followed by the tail of mosquitto's log)."""


def new_password() -> str:
    """A fresh password from the CSPRNG: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def find_tool(name: str) -> str:
    """Path of a Mosquitto tool (``mosquitto`` lives in /usr/sbin, often off PATH)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if not found:
        raise BrokerError(
            _MISSING
            if name == "mosquitto"
            else f"{name} not found: install the Debian package mosquitto (scripts/setup.sh does)"
        )
    return found


@dataclass
class BrokerConfig:
    """What the generated Mosquitto configuration describes.

    readers maps reader_id -> building_id (reader ids are unique per gateway, since the
    username ``reader-<id>`` does not name the building). ``log_file`` None logs to
    stderr; otherwise a file name inside the work directory. ``run_as`` is the system
    user mosquitto runs as when started as root (mosquitto's ``user`` option; the
    default, the current user, keeps the generated 0600 files readable).
    """

    port: int = 1883
    bind_address: str = "127.0.0.1"
    readers: dict[int, int] = field(default_factory=dict)
    log_file: str | None = "mosquitto.log"
    log_types: tuple[str, ...] = ("error", "warning", "notice", "information")
    run_as: str | None = None
    max_queued_messages: int = 1000
    # Further users (tools and tests: a readiness probe, a monitor), each with
    # its ACL lines ("topic read|write|readwrite <topic>"; none: no topic at all).
    extra_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # A file name inside the work directory where Mosquitto writes its pid: what
    # `reload` signals. None: no pid file (the tests' brokers are their children).
    pid_file: str | None = None
    # A second listener with TLS (docs/broker.md, "TLS on the local link"):
    # certificate and key files, its port and address. None: plain MQTT only.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_port: int = 8883
    tls_bind_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1 .. 65535, got {self.port!r}")
        if not re.fullmatch(r"[0-9A-Za-z.:\-]+", self.bind_address or ""):
            raise ValueError(f"bind_address is not a host address: {self.bind_address!r}")
        for rid, bid in self.readers.items():
            check_id("reader_id", rid)
            check_id("building_id", bid)
        if self.log_file is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.log_file):
            raise ValueError("log_file must be a plain file name inside the work directory")
        for t in self.log_types:
            if not re.fullmatch(r"[a-z_]+", t):
                raise ValueError(f"bad log type {t!r}")
        if self.pid_file is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.pid_file):
            raise ValueError("pid_file must be a plain file name inside the work directory")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS listener needs both tls_cert and tls_key")
        for p in (self.tls_cert, self.tls_key):
            if p is not None and (not os.path.isabs(p) or any(c in p for c in "\n\r\"' #")):
                raise ValueError("TLS file paths must be absolute, without spaces, quotes, # or newlines")
        if self.tls_cert is not None:
            if not re.fullmatch(r"[0-9A-Za-z.:\-]+", self.tls_bind_address or ""):
                raise ValueError(f"tls_bind_address is not a host address: {self.tls_bind_address!r}")
            if isinstance(self.tls_port, bool) or not isinstance(self.tls_port, int) or not 1 <= self.tls_port <= 65535:
                raise ValueError(f"tls_port must be 1 .. 65535, got {self.tls_port!r}")
        if self.run_as is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.run_as):
            raise ValueError(f"bad run_as user {self.run_as!r}")
        for user, grants in self.extra_users.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", user) or user == GATEWAY_USER or user.startswith("reader-"):
                raise ValueError(f"bad extra user name {user!r}")
            for g in grants:
                if not re.fullmatch(r"topic (read|write|readwrite) [A-Za-z0-9_/+#\-]+", g):
                    raise ValueError(f"bad ACL line for {user}: {g!r}")

    def users(self) -> list[str]:
        return [GATEWAY_USER] + [reader_user(r) for r in sorted(self.readers)] + sorted(self.extra_users)


# File names inside the work directory.
CONF, PASSWD, ACL, DB_DIR = "mosquitto.conf", "passwd", "acl", "data"


def render_conf(cfg: BrokerConfig, workdir: str | os.PathLike) -> str:
    """mosquitto.conf text: one listener, no anonymous clients, password + ACL files,
    persistence in the work directory. Plain MQTT 3.1.1/5 only."""
    wd = Path(workdir).resolve()
    if any(c in str(wd) for c in "\n\r\"' #"):
        raise ValueError("work directory path must not contain spaces, quotes, # or newlines")
    run_as = cfg.run_as or getpass.getuser()
    lines = [
        "# Generated by liftcard_gateway.broker -- do not edit; see docs/broker.md",
        "per_listener_settings false",
        f"user {run_as}",
        f"listener {cfg.port} {cfg.bind_address}",
        "protocol mqtt",
    ]
    if cfg.tls_cert is not None:
        # Readers on Wi-Fi may use TLS; the settings below stay global
        # (per_listener_settings false): same users, same ACL on both listeners.
        lines += [
            f"listener {cfg.tls_port} {cfg.tls_bind_address}",
            "protocol mqtt",
            f"certfile {cfg.tls_cert}",
            f"keyfile {cfg.tls_key}",
            "tls_version tlsv1.2",
        ]
    lines += [
        # The client id is the username, whatever the client sends: nobody can
        # take over (and wipe) another's session or fire its Last Will.
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"password_file {wd / PASSWD}",
        f"acl_file {wd / ACL}",
        "persistence true",
        f"persistence_location {wd / DB_DIR}/",
        "persistence_file mosquitto.db",
        f"max_queued_messages {cfg.max_queued_messages}",
        "connection_messages true",
        "log_timestamp true",
    ]
    if cfg.pid_file is not None:
        lines.append(f"pid_file {wd / cfg.pid_file}")
    if cfg.log_file is None:
        lines.append("log_dest stderr")
    else:
        lines.append(f"log_dest file {wd / cfg.log_file}")
    lines += [f"log_type {t}" for t in cfg.log_types]
    return "\n".join(lines) + "\n"


def render_acl(cfg: BrokerConfig) -> str:
    """ACL text: explicit user blocks. With an acl_file, anything not granted is denied."""
    out = [
        "# Generated by liftcard_gateway.broker -- do not edit; see docs/broker.md",
        "# No pattern rules and no anonymous topics: every grant names one user.",
        "",
        f"user {GATEWAY_USER}",
        f"topic readwrite {LOCAL_ALL}",
    ]
    for rid in sorted(cfg.readers):
        t = reader_topics(cfg.readers[rid], rid)
        out += [
            "",
            f"user {reader_user(rid)}",
            f"topic write {t['up']}",
            f"topic write {t['status']}",
            f"topic read {t['down']}",
        ]
    for user in sorted(cfg.extra_users):
        out += ["", f"user {user}", *cfg.extra_users[user]]
    return "\n".join(out) + "\n"


def write_password_file(path: str | os.PathLike, credentials: Mapping[str, str]) -> None:
    """Create the password file with the real mosquitto_passwd, atomically, mode 0600.

    Each password goes to mosquitto_passwd's stdin (it asks twice), never on its command
    line (where ``ps`` and audit logs would see it); its output is discarded.
    """
    path = Path(path)
    tool = find_tool("mosquitto_passwd")
    if not credentials:
        raise ValueError("no users for the password file")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        for i, (user, password) in enumerate(credentials.items()):
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", user):
                raise ValueError(f"bad MQTT username {user!r}")
            if not password or any(c in password for c in "\r\n\0"):
                raise ValueError(f"unusable password for user {user}")  # never the password
            args = [tool] + (["-c"] if i == 0 else []) + [str(tmp), user]
            res = subprocess.run(
                args,
                input=f"{password}\n{password}\n",
                text=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=30,
                preexec_fn=lambda: os.umask(0o077),
            )
            if res.returncode != 0:
                # mosquitto_passwd's stderr never echoes the password; keep one line.
                msg = " ".join(res.stderr.split())[:200]
                raise BrokerError(f"mosquitto_passwd failed for user {user}: {msg}")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_broker_files(cfg: BrokerConfig, workdir: str | os.PathLike, credentials: Mapping[str, str]) -> Path:
    """Write mosquitto.conf, passwd and acl into workdir (created 0700); returns the
    config path. credentials must hold a password for every user of cfg."""
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(wd, 0o700)
    (wd / DB_DIR).mkdir(exist_ok=True, mode=0o700)
    missing = [u for u in cfg.users() if u not in credentials]
    if missing:
        raise ValueError(f"no password for user(s): {', '.join(missing)}")
    write_password_file(wd / PASSWD, {u: credentials[u] for u in cfg.users()})
    write_private(wd / ACL, render_acl(cfg).encode())
    write_private(wd / CONF, render_conf(cfg, wd).encode())
    return wd / CONF


# -- the password file as lines -------------------------------------------------------
# Mosquitto's passwd holds one `user:$7$<iterations>$<salt>$<hash>` line per user
# (PBKDF2-HMAC-SHA512). Keeping the lines lets one user be added or changed while
# the others' plain passwords are long gone (they went to the readers).

_USER_RE = re.compile(r"[A-Za-z0-9_\-]+")


def hash_password(user: str, password: str) -> str:
    """The passwd hash of password for user, made by the real mosquitto_passwd in
    a private temporary directory (the password goes through its stdin)."""
    with tempfile.TemporaryDirectory(prefix="liftcard-passwd-") as d:
        p = Path(d) / "passwd"
        write_password_file(p, {user: password})
        entries = read_passwd(p)
    if user not in entries:
        raise BrokerError(f"mosquitto_passwd wrote no line for user {user}")
    return entries[user]


def password_matches(pw_hash: str, password: str) -> bool:
    """True if password is the one pw_hash was made from ($7$ lines: PBKDF2-SHA512;
    any other format: False, so the caller makes a fresh line)."""
    parts = pw_hash.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, digest = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    calc = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(digest) or 64)
    return hmac.compare_digest(calc, digest)


def read_passwd(path: str | os.PathLike) -> dict[str, str]:
    """user -> hash of a passwd file ({} if there is none yet). Lines that are
    not `user:hash` are dropped (they could not log anyone in)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        user, sep, h = line.strip().partition(":")
        if sep and _USER_RE.fullmatch(user) and h:
            out[user] = h
    return out


def write_passwd(path: str | os.PathLike, entries: Mapping[str, str]) -> None:
    """Write a passwd file from user -> hash, atomically, mode 0600."""
    lines = []
    for user in entries:
        h = entries[user]
        if not _USER_RE.fullmatch(user) or not h or any(c in h for c in ":\r\n"):
            raise ValueError(f"bad passwd entry for user {user!r}")
        lines.append(f"{user}:{h}\n")
    write_private(path, "".join(lines).encode())


def _is_mosquitto(pid: int) -> bool:
    # A stale pid file may name a pid reused by another program: never signal that.
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "mosquitto"
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to look at (not Linux): trust the pid file


def reload(pid_path: str | os.PathLike) -> int | None:
    """SIGHUP to the Mosquitto whose pid file this is (it re-reads passwd and
    ACL); its pid, or None when no broker is running there."""
    try:
        text = Path(pid_path).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text.isdigit() or int(text) <= 1:
        return None
    pid = int(text)
    if not _is_mosquitto(pid):
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    except PermissionError:
        raise BrokerError(f"no permission to signal Mosquitto (pid {pid}): run as the user it runs as") from None
    return pid
