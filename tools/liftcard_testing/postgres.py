"""A private PostgreSQL for the ledger's tests (docs/ledger.md, "PostgreSQL").

    reason = postgres_missing()            # None, or one line -> pytest.skip(reason)
    with PostgresInstance() as pg:
        pg.url                             # postgresql://ledger@/ledger?host=<socket dir>&port=<port>

It is Debian's PostgreSQL (`/usr/lib/postgresql/<version>/bin`, or whatever
`initdb` and `postgres` are on PATH): `initdb` in a fresh directory under the
system temp directory, then `postgres` with no TCP listener at all, only a
unix socket inside that directory, `trust` authentication for the one user
`ledger` (nobody else can reach the socket: the directory is 0700), `fsync`
off (a test database; nothing survives the rig anyway).

PostgreSQL refuses to run as root. As root the rig runs it as the `postgres`
user if there is one, else as `nobody`, through `setpriv` (which execs, so
the process procs.spawn() registers is the server itself and the leak check
sees it and its backends); the directory is handed to that user. The
directory is made with mkdtemp rather than under pytest's tmp_path, whose
parents are 0700 root and would keep that user out.

stop() is a fast shutdown (SIGINT: open sessions are ended, nothing waits
for a client to leave); the directory is removed on close. A server whose
test process was killed outright keeps running (its parent-death signal
went with the change of user): the leak check finds it by the session's
marker in its environment and kills it, its backends follow.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from . import procs

__all__ = ["PostgresInstance", "postgres_missing", "find_bin"]

USER = "ledger"
DATABASE = "ledger"


def find_bin() -> Path | None:
    """The directory holding initdb and postgres: the newest Debian one, else PATH's."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0), reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "postgres"), os.X_OK):
            return Path(d)
    i, p = shutil.which("initdb"), shutil.which("postgres")
    if i and p and os.path.dirname(i) == os.path.dirname(p):
        return Path(i).parent
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and there is neither a postgres nor a nobody account to run PostgreSQL as")


def postgres_missing() -> str | None:
    """None when a PostgreSQL can be started here, else one line saying why not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if find_bin() is None:
        return "no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql"
    try:
        _run_as()
    except RuntimeError as e:
        return str(e)
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root and setpriv (util-linux) is missing to drop to an unprivileged user"
    return None


class PostgresInstance:
    """A throw-away PostgreSQL server on a unix socket (module docstring)."""

    def __init__(self, start_timeout: float = 60.0, port: int = 5432):
        self.start_timeout = start_timeout
        self.port = port  # only names the socket file: there is no TCP listener
        self.dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._bin = find_bin()

    def __repr__(self) -> str:
        return "<PostgresInstance %s running=%s>" % (self.dir, self.running)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def socket_dir(self) -> Path:
        return self.dir / "sock"

    @property
    def url(self) -> str:
        return "postgresql://%s@/%s?host=%s&port=%d" % (USER, DATABASE, self.socket_dir, self.port)

    def _as_user(self, argv):
        acct = _run_as()
        if acct is None:
            return list(argv)
        return [
            "setpriv",
            "--reuid=%d" % acct.pw_uid,
            "--regid=%d" % acct.pw_gid,
            "--clear-groups",
            "--",
            *argv,
        ]

    def _chown(self, p: Path) -> None:
        acct = _run_as()
        if acct is not None:
            os.chown(p, acct.pw_uid, acct.pw_gid)

    def start(self) -> "PostgresInstance":
        reason = postgres_missing()
        if reason:
            raise RuntimeError(reason)
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="liftcard-pg-"))
            os.chmod(self.dir, 0o700)
            self._chown(self.dir)
            self.socket_dir.mkdir(mode=0o700)
            self._chown(self.socket_dir)
            r = subprocess.run(
                self._as_user(
                    [
                        self._bin / "initdb",
                        "-D",
                        self.dir / "data",
                        "-U",
                        USER,
                        "-A",
                        "trust",
                        "--no-sync",
                        "-E",
                        "UTF8",
                    ]
                ),
                capture_output=True,
                text=True,
                cwd=self.dir,
                timeout=120,
            )
            if r.returncode != 0:
                raise RuntimeError("initdb failed: %s" % (r.stderr.strip().splitlines() or ["?"])[-1])
        log = procs.log_file(self.dir / "postgres.log")
        try:
            self._proc = procs.spawn(
                self._as_user(
                    [
                        self._bin / "postgres",
                        "-D",
                        self.dir / "data",
                        "-k",
                        self.socket_dir,
                        "-p",
                        str(self.port),
                        "-c",
                        "listen_addresses=",
                        "-c",
                        "fsync=off",
                        "-c",
                        "full_page_writes=off",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        end = time.monotonic() + self.start_timeout
        admin = "postgresql://%s@/postgres?host=%s&port=%d" % (USER, self.socket_dir, self.port)
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError("postgres exited (%s); see %s" % (self._proc.returncode, self.dir / "postgres.log"))
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as c:
                    if c.execute("SELECT 1 FROM pg_database WHERE datname=%s", (DATABASE,)).fetchone() is None:
                        c.execute("CREATE DATABASE %s" % DATABASE)
                return
            except psycopg.OperationalError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError("postgres did not accept connections within %gs" % self.start_timeout) from None
                time.sleep(0.2)

    def create_database(self) -> str:
        """A fresh, empty database on this server (one per test); its URL."""
        import psycopg

        name = "t_%s" % uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute("CREATE DATABASE %s" % name)
        return "postgresql://%s@/%s?host=%s&port=%d" % (USER, name, self.socket_dir, self.port)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after a timeout; the data stays for a restart."""
        procs.stop(self._proc, timeout=20, sig=signal.SIGINT)
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "PostgresInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
