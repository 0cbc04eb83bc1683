"""The gateway side of the suite, set up as an operator sets up a Pi
(docs/operations.md): `liftcard-gateway init`, `liftcard-gateway broker`
(Mosquitto's config, passwd and ACL rendered from the gateway's config), the
real Mosquitto started on that config, and the daemon (`liftcard-gateway
run`) as its own process. Readers join through `liftcard-gateway readers add`
(which the technician's `register` runs), which reloads this Mosquitto
through its pid file; the daemon reads its readers when it starts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from liftcard_gateway.store import Store
from liftcard_protocol.ride import RideRecord
from liftcard_testing import procs, programs
from liftcard_testing.mosquitto import MosquittoProcess, free_port
from liftcard_testing.mqttprobe import connack


def gateway_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    p = procs.spawn(
        [sys.executable, "-m", "liftcard_gateway", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        procs.stop(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


class GatewayBroker(MosquittoProcess):
    """Mosquitto on the files `liftcard-gateway broker` rendered (its own
    mosquitto.conf, pid file and log in the broker dir); ready when the
    gateway's own login is accepted."""

    _prefix = "liftcard-gw-broker-"
    _tools = ("mosquitto",)

    def __init__(self, broker_dir: Path, host: str, port: int, password: str):
        super().__init__(host, port, broker_dir, start_timeout=20.0)
        self._password = password

    def _write(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def _ready(self, timeout: float, what: str) -> None:
        self._wait_until(
            lambda: connack(self._host, self._port, "gateway", self._password, timeout=2.0),
            timeout,
            what,
            " for gateway",
        )


class GatewaySite:
    def __init__(self, workdir: Path, listen: str, reader_host: str):
        self.dir = Path(workdir)
        self.config = self.dir / "etc" / "gw.toml"
        self.port = free_port()
        r = gateway_cli(
            "init",
            "--config",
            self.config,
            "--data-dir",
            self.dir / "data",
            "--gateway-id",
            "gw-0001",
            "--listen",
            listen,
            "--reader-host",
            reader_host,
            "--port",
            self.port,
        )
        assert r.returncode == 0, r.stderr
        r = gateway_cli("broker", "--config", self.config)
        assert r.returncode == 0, r.stderr
        password = (self.config.parent / "broker.pass").read_text().strip()
        probe_host = "127.0.0.1" if listen in ("0.0.0.0", "127.0.0.1") else listen
        self.broker = GatewayBroker(self.config.parent / "broker", probe_host, self.port, password)
        self.daemon: subprocess.Popen | None = None
        self.log = self.dir / "gateway.log"

    @property
    def db(self) -> Path:
        return self.dir / "data" / "gateway.db"

    def start(self) -> None:
        self.broker.start()

    def start_daemon(self) -> None:
        self.daemon = programs.start_gateway(self.config, self.log, ready="subscribed")

    def stop_daemon(self) -> None:
        procs.stop(self.daemon)
        self.daemon = None

    def ride_count(self, reader_id: int) -> int:
        if not self.db.exists():
            return 0
        con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM rides WHERE reader_id=?", (reader_id,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0  # the schema is not there yet
        finally:
            con.close()

    def rides(self, reader_id: int) -> list[RideRecord]:
        st = Store(self.db)
        try:
            return st.rides(reader_id)
        finally:
            st.close()

    def close(self) -> None:
        try:
            procs.stop(self.daemon)
        finally:
            self.broker.close()
