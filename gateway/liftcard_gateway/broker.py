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

``MosquittoInstance`` runs a private broker on a free loopback port for tests and the
demo; the same ``write_broker_files`` produces the Pi's configuration.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from liftcard_protocol.keys import write_private
from liftcard_protocol.topics import LOCAL_ALL, check_id, reader_topics, reader_user


__all__ = [
    "BrokerError", "BrokerConfig", "GATEWAY_USER", "MosquittoInstance",
    "reader_user", "reader_topics", "new_password", "find_tool",
    "render_conf", "render_acl", "write_password_file", "write_broker_files",
]

GATEWAY_USER = "gateway"
PROBE_USER = "probe"  # MosquittoInstance's readiness probe: may connect, no topic
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
        raise BrokerError(_MISSING if name == "mosquitto" else
                          f"{name} not found: install the Debian package mosquitto (scripts/setup.sh does)")
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
        out += ["", f"user {reader_user(rid)}",
                f"topic write {t['up']}",
                f"topic write {t['status']}",
                f"topic read {t['down']}"]
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
            res = subprocess.run(args, input=f"{password}\n{password}\n", text=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30,
                                 preexec_fn=lambda: os.umask(0o077))
            if res.returncode != 0:
                # mosquitto_passwd's stderr never echoes the password; keep one line.
                msg = " ".join(res.stderr.split())[:200]
                raise BrokerError(f"mosquitto_passwd failed for user {user}: {msg}")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_broker_files(cfg: BrokerConfig, workdir: str | os.PathLike,
                       credentials: Mapping[str, str]) -> Path:
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


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _connack(host: str, port: int, user: str | None, password: str | None,
             timeout: float, ssl_context=None) -> int:
    """Send a minimal MQTT 3.1.1 CONNECT (over TLS with ssl_context); return the
    CONNACK return code (0 = accepted, 5 = not authorised). Raises OSError (an
    ssl.SSLError too) when the broker is not reachable or the handshake fails."""
    def s(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b
    flags = 0x02  # clean session
    payload = s(f"lc-probe-{secrets.token_hex(6)}".encode())
    if user is not None:
        flags |= 0x80
        payload += s(user.encode())
    if password is not None:
        flags |= 0x40
        payload += s(password.encode())
    body = s(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 10) + payload
    rem, n = b"", len(body)
    while True:
        byte, n = n % 128, n // 128
        rem += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = raw if ssl_context is None else ssl_context.wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        sock.sendall(b"\x10" + rem + body)
        data = b""
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection before CONNACK")
            data += chunk
        if data[0] != 0x20:
            raise ConnectionError("no CONNACK from the broker")
        if data[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return data[3]


class MosquittoProcess:
    """A private Mosquitto process on a free loopback port: the lifecycle shared by
    MosquittoInstance (the local link) and bank_broker.BankBroker (the upstream).

    A subclass writes its files in `_write()` (returns the conf path) and says
    when the broker is ready in `_ready(timeout, what)` (usually `_wait_until`
    with a real CONNECT). ``workdir`` None uses a fresh temporary directory
    (removed on close); ``restart()`` keeps the port and the persistence.
    """

    _prefix = "liftcard-mosquitto-"
    _tools = ("mosquitto",)

    def __init__(self, host: str, port: int | None, workdir, start_timeout: float):
        self._host = host
        self._fixed_port = port is not None
        self._port = port or 0
        self._own_dir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._exe: str | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise BrokerError("the broker has not been started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- subclass hooks -------------------------------------------------------
    def _write(self) -> Path:
        raise NotImplementedError

    def _ready(self, timeout: float, what: str) -> None:
        raise NotImplementedError

    # -- process control ----------------------------------------------------
    def start(self):
        if self.running:
            return self
        for tool in self._tools:
            exe = find_tool(tool)
            self._exe = self._exe or exe  # the first is mosquitto itself
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=self._prefix))
        attempts = 1 if (self._fixed_port or self._port) else 5
        for attempt in range(attempts):
            if not self._port:
                self._port = _free_port(self._host)
            conf = self._write()
            try:
                self._spawn(conf)
                return self
            except BrokerError:
                in_use = "Address already in use" in self._log_tail()
                if in_use and attempt + 1 < attempts:  # lost the race for the free port
                    self._port = 0
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn(self, conf: Path) -> None:
        if self._stderr is not None:
            self._stderr.close()
        for name in ("mosquitto.log", "mosquitto.stderr"):  # mosquitto appends to these
            fd = os.open(self.workdir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            os.chmod(self.workdir / name, 0o600)
        self._stderr = open(self.workdir / "mosquitto.stderr", "ab")
        self._proc = subprocess.Popen([self._exe, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=self._stderr, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=lambda: os.umask(0o077))
        try:
            self._ready(self._start_timeout, "start")
        except BaseException:
            self._terminate()
            raise


    def _wait_until(self, probe, timeout: float, what: str, who: str = "") -> None:
        """Wait until probe() (a real CONNECT) returns CONNACK 0."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise BrokerError(f"mosquitto exited (status {code}) during {what} on "
                                  f"{self._host}:{self._port}{self._log_tail_block()}")
            try:
                rc = probe()
                if rc == 0:
                    return
                last = f"CONNACK {rc}{who}"
            except OSError as e:
                last = f"{type(e).__name__}: {e.strerror or e}"
            if time.monotonic() >= deadline:
                raise BrokerError(f"mosquitto not ready after {timeout:g}s during {what} on "
                                  f"{self._host}:{self._port} ({last}){self._log_tail_block()}")
            time.sleep(0.05)

    def _log_tail(self, lines: int = 15) -> str:
        out = []
        for name in ("mosquitto.log", "mosquitto.stderr"):
            try:
                text = (self.workdir / name).read_text(errors="replace")
            except OSError:
                continue
            tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
            out += [f"[{name}] {ln}" for ln in tail]
        return "\n".join(out)

    def _log_tail_block(self) -> str:
        tail = self._log_tail()
        return ("\n" + tail) if tail else ""

    def _terminate(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # mosquitto saves its persistence db on exit
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM (mosquitto writes its persistence database), then SIGKILL if it hangs."""
        self._terminate()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests (no persistence save)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

class MosquittoInstance(MosquittoProcess):
    """A private Mosquitto on a free loopback port, configured by this module.

        with MosquittoInstance(readers={7: 12}) as broker:
            broker.host, broker.port, broker.credentials["reader-7"]

    ``workdir`` None uses a fresh temporary directory (removed on exit); a given
    directory is kept. ``restart()`` keeps the port and the persistence database.
    ``add_reader()`` regenerates the password and ACL files and reloads them (SIGHUP).
    """

    def __init__(self, readers: Mapping[int, int] | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None, workdir: str | os.PathLike | None = None,
                 credentials: Mapping[str, str] | None = None,
                 log_types: tuple[str, ...] | None = None, start_timeout: float = 20.0,
                 extra_users: Mapping[str, tuple[str, ...]] | None = None):
        super().__init__(host, port, workdir, start_timeout)
        self._readers = dict(readers or {})
        # `probe` (no topics) tells when the broker is up without touching the
        # gateway's session: client id = username (use_username_as_clientid).
        self._extra = {PROBE_USER: (), **dict(extra_users or {})}
        self._log_types = log_types
        self._creds: dict[str, str] = dict(credentials or {})
        self._cfg: BrokerConfig | None = None

    # -- properties ---------------------------------------------------------
    @property
    def credentials(self) -> dict[str, str]:
        """username -> password (a copy). Keep it secret: never print or log it."""
        return dict(self._creds)

    @property
    def readers(self) -> dict[int, int]:
        return dict(self._readers)

    def topics(self, reader_id: int) -> dict[str, str]:
        return reader_topics(self._readers[reader_id], reader_id)

    def __repr__(self) -> str:  # no credentials in reprs
        return f"<MosquittoInstance {self._host}:{self._port} readers={len(self._readers)} running={self.running}>"

    # -- configuration ------------------------------------------------------
    def _config(self) -> BrokerConfig:
        kw = {} if self._log_types is None else {"log_types": self._log_types}
        return BrokerConfig(port=self._port, bind_address=self._host,
                            readers=dict(self._readers), extra_users=dict(self._extra), **kw)

    def _write(self) -> Path:
        self._cfg = self._config()
        for u in self._cfg.users():
            self._creds.setdefault(u, new_password())
        return write_broker_files(self._cfg, self.workdir, self._creds)

    def add_reader(self, reader_id: int, building_id: int, password: str | None = None,
                   timeout: float = 20.0) -> str:
        """Register a reader, regenerate passwd + acl, reload a running broker (SIGHUP)
        and wait until the new credentials are accepted. Returns the reader's password."""
        check_id("reader_id", reader_id)
        check_id("building_id", building_id)
        if reader_id in self._readers:
            raise ValueError(f"reader {reader_id} already exists")
        user = reader_user(reader_id)
        self._readers[reader_id] = building_id
        self._creds[user] = password or new_password()
        if self._workdir is not None:
            self._write()
        if self.running:
            self._proc.send_signal(signal.SIGHUP)
            self._wait_auth(user, timeout, "reload after adding reader %d" % reader_id)
        return self._creds[user]

    # -- process control ----------------------------------------------------
    _tools = ("mosquitto", "mosquitto_passwd")

    def _ready(self, timeout: float, what: str) -> None:
        self._wait_auth(PROBE_USER, timeout, what)

    def _wait_auth(self, user: str, timeout: float, what: str) -> None:
        """Wait until the broker accepts user's credentials (CONNACK 0)."""
        self._wait_until(lambda: _connack(self._host, self._port, user, self._creds[user], timeout=2.0),
                         timeout, what, f" for user {user}")

