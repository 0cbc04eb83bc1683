"""A private Mosquitto on a free loopback port, for tests, the demo and the
benchmarks: ``MosquittoInstance`` (the local link, configured by
liftcard_gateway.broker exactly as the Pi's) and the process lifecycle it
shares with bankbroker.BankBroker (``MosquittoProcess``).

Readiness is a real CONNECT answered with CONNACK 0 (mqttprobe), made as a
user of its own, ``probe`` (no topics): the broker makes the client id the
username (use_username_as_clientid, docs/broker.md "Client ids"), so a probe
as ``gateway`` would take over the gateway's connection and session.

The broker is started with procs.spawn (it dies with the process that
started it, and stop_all() catches one left running at exit).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping

from liftcard_gateway.broker import BrokerConfig, BrokerError, find_tool, new_password, write_broker_files
from liftcard_protocol.topics import check_id, reader_topics, reader_user

from . import procs
from .mqttprobe import connack

__all__ = ["MosquittoProcess", "MosquittoInstance", "PROBE_USER", "free_port"]

PROBE_USER = "probe"  # MosquittoInstance's readiness probe: may connect, no topic


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on host right now (a broker may still lose the race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MosquittoProcess:
    """A private Mosquitto process on a free loopback port: the lifecycle shared by
    MosquittoInstance (the local link) and bankbroker.BankBroker (the upstream).

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
                self._port = free_port(self._host)
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
        self._proc = procs.spawn(
            [self._exe, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            umask=0o077,
        )
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
                raise BrokerError(
                    f"mosquitto exited (status {code}) during {what} on "
                    f"{self._host}:{self._port}{self._log_tail_block()}"
                )
            try:
                rc = probe()
                if rc == 0:
                    return
                last = f"CONNACK {rc}{who}"
            except OSError as e:
                last = f"{type(e).__name__}: {e.strerror or e}"
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"mosquitto not ready after {timeout:g}s during {what} on "
                    f"{self._host}:{self._port} ({last}){self._log_tail_block()}"
                )
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
        # SIGTERM: mosquitto saves its persistence db on exit; SIGKILL if it hangs.
        procs.stop(proc, timeout)

    def stop(self) -> None:
        """SIGTERM (mosquitto writes its persistence database), then SIGKILL if it hangs."""
        self._terminate()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests (no persistence save)."""
        procs.kill(self._proc)
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
    """A private Mosquitto on a free loopback port, configured by
    liftcard_gateway.broker (write_broker_files) as the Pi's is.

        with MosquittoInstance(readers={7: 12}) as broker:
            broker.host, broker.port, broker.credentials["reader-7"]

    ``workdir`` None uses a fresh temporary directory (removed on exit); a given
    directory is kept. ``restart()`` keeps the port and the persistence database.
    ``add_reader()`` regenerates the password and ACL files and reloads them (SIGHUP).
    ``tls=(cert_file, key_file)`` adds the readers' TLS listener (docs/broker.md,
    "TLS on the local link") on ``tls_port`` (default: a second free port).
    """

    def __init__(
        self,
        readers: Mapping[int, int] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: str | os.PathLike | None = None,
        credentials: Mapping[str, str] | None = None,
        log_types: tuple[str, ...] | None = None,
        start_timeout: float = 20.0,
        extra_users: Mapping[str, tuple[str, ...]] | None = None,
        tls: tuple[str | os.PathLike, str | os.PathLike] | None = None,
        tls_port: int | None = None,
    ):
        super().__init__(host, port, workdir, start_timeout)
        self._tls = None if tls is None else tuple(str(Path(p).absolute()) for p in tls)
        self._tls_port = tls_port or 0
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
    def tls_port(self) -> int:
        """The TLS listener's port (0: no TLS listener, or not started yet)."""
        return self._tls_port

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
        if self._tls is not None:
            if not self._tls_port:
                self._tls_port = free_port(self._host)  # kept across restarts, as the plain port is
            kw.update(tls_cert=self._tls[0], tls_key=self._tls[1], tls_port=self._tls_port, tls_bind_address=self._host)
        return BrokerConfig(
            port=self._port, bind_address=self._host, readers=dict(self._readers), extra_users=dict(self._extra), **kw
        )

    def _write(self) -> Path:
        self._cfg = self._config()
        for u in self._cfg.users():
            self._creds.setdefault(u, new_password())
        return write_broker_files(self._cfg, self.workdir, self._creds)

    def add_reader(self, reader_id: int, building_id: int, password: str | None = None, timeout: float = 20.0) -> str:
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
        self._wait_until(
            lambda: connack(self._host, self._port, user, self._creds[user], timeout=2.0),
            timeout,
            what,
            f" for user {user}",
        )
