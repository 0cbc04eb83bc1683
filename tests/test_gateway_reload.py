"""The daemon takes readers added, removed and re-keyed without a restart:
SIGHUP (systemctl reload, or the reader commands themselves through the pid
file) re-reads the whole config. The daemon runs as its own process
(`python -m liftcard_gateway run`) on a real Mosquitto; the readers are
simulated ones with their own broker logins, registered with the operator's
commands (`readers add --from`, `remove`, `rotate-key --from`)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, strategies as st

from liftcard_gateway.__main__ import main
from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import ReaderConf, load_config, reader_changes, restart_only_changes
from liftcard_gateway.tomlconf import Secret
from liftcard_gateway.daemon import PID_FILE
from liftcard_protocol import link
from liftcard_protocol.enrolment import dumps_enrolment, enrolment_doc, parse_enrolment
from liftcard_testing import procs
from liftcard_testing.cards import BANK, COMPOUND, assemble, card, snapshot
from liftcard_testing.configs import BrokerLogin, write_gateway_config
from liftcard_testing.daemonrig import daemon_broker, db_rides
from liftcard_testing.programs import start_gateway
from liftcard_testing.simreader import SimReader
from liftcard_testing.paths import REPO
from liftcard_testing.wait import wait_for

BUILDING = 12
BROKER_READERS = {7: BUILDING, 8: BUILDING}  # logins on the broker; the gateway knows what it is told

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def broker():
    with daemon_broker(BROKER_READERS) as b:
        yield b


class Gw:
    """A gateway config with a readers_dir, its daemon process and its log."""

    def __init__(self, tmp_path: Path, broker, capsys):
        self.dir, self.broker, self.capsys = tmp_path, broker, capsys
        self.conf = tmp_path / "gateway.toml"
        self.client_id = "gw-%s" % secrets.token_hex(6)
        (tmp_path / "broker.pass").write_text(broker.credentials["gateway"] + "\n")
        os.chmod(tmp_path / "broker.pass", 0o600)
        self.write_conf()
        self.log = tmp_path / "gateway.log"
        self.proc = None

    def write_conf(self, data_dir: str = "data", extra: str = "", gateway: str = "") -> None:
        self.conf.write_text(
            '[gateway]\n%sdata_dir = "%s"\nreaders_dir = "readers"\n\n'
            '[broker]\nhost = "%s"\nport = %d\nusername = "gateway"\npassword_file = "broker.pass"\n'
            'client_id = "%s"\n\n%s' % (gateway, data_dir, self.broker.host, self.broker.port, self.client_id, extra)
        )

    def tech_file(self, rid: int, key: bytes) -> Path:
        """An enrolment file for reader rid with `key` and its broker login's password."""
        doc = enrolment_doc(rid, BUILDING, key, self.broker.host, self.broker.credentials["reader-%d" % rid])
        p = self.dir / ("tech-%d-%s.json" % (rid, secrets.token_hex(3)))
        p.write_bytes(dumps_enrolment(parse_enrolment(doc)))
        os.chmod(p, 0o600)
        return p

    def cmd(self, *args) -> str:
        code = main([str(a) for a in (*args, "--config", self.conf)])
        out, err = self.capsys.readouterr()
        assert code == 0, err
        return out

    def start(self):
        self.proc = start_gateway(self.conf, self.log, ready="subscribed")
        return self.proc

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                if name is None or rec.get("event") == name:
                    out.append(rec)
        return out

    def wait_event(self, name: str, count: int, what: str) -> dict:
        wait_for(lambda: len(self.events(name)) >= count, 30, what)
        return self.events(name)[count - 1]

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def gw(tmp_path, broker, capsys):
    g = Gw(tmp_path, broker, capsys)
    with contextlib.ExitStack() as ends:
        g.ends = ends
        yield g
        if g.proc is not None:
            assert g.proc.poll() is None, "the daemon exited: %s" % g.log.read_text()[-3000:]
            assert procs.stop(g.proc) == 0


def reader(gw, rid, key) -> SimReader:
    r = SimReader(gw.broker, rid, key)
    gw.ends.callback(r.close)
    return r


def refusals(gw, rid: int, reason: str) -> int:
    return sum(1 for e in gw.events("refused") if e.get("reader_id") == rid and e.get("reason") == reason)


def test_the_unit_reloads_with_sighup():
    unit = (REPO / "deploy" / "systemd" / "liftcard-gateway.service").read_text().splitlines()
    service = unit[unit.index("[Service]") :]
    assert "ExecReload=/bin/kill -HUP $MAINPID" in service


def test_a_reader_added_with_the_command_rides_without_a_restart(gw):
    k7, k8 = secrets.token_bytes(32), secrets.token_bytes(32)
    gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    p = gw.start()
    assert (gw.dir / "data" / PID_FILE).read_text().strip() == str(p.pid)
    r7, r8 = reader(gw, 7, k7), reader(gw, 8, k8)
    r7.send([1, 2])
    assert r7.ack() == 2
    r8.send([1])  # not registered yet: refused as today, its rides stay on the reader
    wait_for(lambda: refusals(gw, 8, "unknown_reader") == 1, 30, "reader 8 refused")
    r8.no_ack()

    out = gw.cmd("readers", "add", "--from", gw.tech_file(8, k8))
    assert "sent the gateway daemon (pid %d) SIGHUP" % p.pid in out
    assert "restart" not in out
    ev = gw.wait_event("config_reloaded", 1, "the reload")
    assert (ev["readers"], ev["added"], ev["removed"], ev["rekeyed"]) == (2, 1, 0, 0)

    r8.send([1, 2, 3])
    assert r8.ack() == 3
    cfg = load_config(gw.conf)
    assert db_rides(cfg, 8) == [1, 2, 3]
    r8.send_status()  # its first heartbeat: the clock is offered, as to any reader
    assert r8.times.get(timeout=10) > 0
    r7.send([3])  # the others go on as before
    assert r7.ack() == 3
    assert p.poll() is None and len(gw.events("starting")) == 1  # the same process throughout


def test_a_removed_reader_is_refused_from_the_reload_on(gw):
    k7, k8 = secrets.token_bytes(32), secrets.token_bytes(32)
    gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    gw.cmd("readers", "add", "--from", gw.tech_file(8, k8))
    gw.start()
    r7, r8 = reader(gw, 7, k7), reader(gw, 8, k8)
    r8.send([1])
    assert r8.ack() == 1
    r8.send_status()
    r8.times.get(timeout=10)

    gw.cmd("readers", "remove", 8)
    ev = gw.wait_event("config_reloaded", 1, "the reload")
    assert (ev["readers"], ev["added"], ev["removed"], ev["rekeyed"]) == (1, 0, 1, 0)
    r8.send([2])
    wait_for(lambda: refusals(gw, 8, "unknown_reader") == 1, 30, "reader 8's rides refused")
    r8.send_status()
    wait_for(lambda: refusals(gw, 8, "unknown_reader") == 2, 30, "reader 8's heartbeat refused")
    r8.no_ack()
    assert r8.times.empty()
    assert db_rides(load_config(gw.conf), 8) == [1]
    r7.send([1])
    assert r7.ack() == 1


def test_a_rotated_key_is_used_from_the_reload_and_the_old_one_refused(gw):
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    gw.cmd("readers", "add", "--from", gw.tech_file(7, old))
    gw.start()
    r7 = reader(gw, 7, old)
    r7.send([1])
    assert r7.ack() == 1

    out = gw.cmd("readers", "rotate-key", 7, "--from", gw.tech_file(7, new))
    assert "SIGHUP" in out
    ev = gw.wait_event("config_reloaded", 1, "the reload")
    assert (ev["readers"], ev["added"], ev["removed"], ev["rekeyed"]) == (1, 0, 0, 1)
    r7.send([2])  # under the old key: a forgery now
    wait_for(lambda: refusals(gw, 7, "mac") == 1, 30, "the old key refused")
    r7.no_ack()
    r7.key = new  # the reader configured with its new key
    r7.send([2, 3])
    assert r7.ack() == 3
    r7.send_status()  # a re-keyed reader is synced again at its next heartbeat, under its new key
    assert r7.times.get(timeout=10) > 0
    assert db_rides(load_config(gw.conf), 7) == [1, 2, 3]


def test_a_broken_config_on_sighup_leaves_the_daemon_on_the_old_one(gw):
    k7, k8 = secrets.token_bytes(32), secrets.token_bytes(32)
    gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    gw.start()
    # By hand, wrongly: reader 8's key file holds too few hex digits, and reader 7's entry is edited too.
    rdir = gw.dir / "readers"
    (rdir / "reader-8.key").write_text(k8.hex()[:40] + "\n")
    os.chmod(rdir / "reader-8.key", 0o600)
    (rdir / "reader-8.toml").write_text('reader_id = 8\nbuilding_id = %d\nkey_file = "reader-8.key"\n' % BUILDING)
    before = len(gw.log.read_text().splitlines())
    gw.hup()
    ev = gw.wait_event("config_refused", 1, "the refusal logged")
    assert ev["key"] == "%s.key_file" % (rdir / "reader-8.toml")
    assert "64 hex digits" in ev["error"]
    wait_for(lambda: len(gw.log.read_text().splitlines()) > before, 10, "the log line")
    new_lines = gw.log.read_text().splitlines()[before:]
    assert len(new_lines) == 1 and '"config_refused"' in new_lines[0]
    text = gw.log.read_text()
    assert k8.hex()[:40] not in text and k7.hex() not in text
    assert not gw.events("config_reloaded")

    r7, r8 = reader(gw, 7, k7), reader(gw, 8, k8)
    r7.send([1])
    assert r7.ack() == 1  # still running, on the old config
    r8.send([1])
    wait_for(lambda: refusals(gw, 8, "unknown_reader") == 1, 30, "reader 8 not taken from the refused config")

    (rdir / "reader-8.key").write_text(k8.hex() + "\n")  # fixed: the next SIGHUP takes it
    gw.hup()
    ev = gw.wait_event("config_reloaded", 1, "the reload")
    assert (ev["added"], ev["removed"], ev["rekeyed"]) == (1, 0, 0)
    r8.send([1])
    assert r8.ack() == 1


def test_settings_read_at_start_need_a_restart_and_stay(gw):
    k7, k8 = secrets.token_bytes(32), secrets.token_bytes(32)
    gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    gw.start()
    # Another data_dir and a console: both read at start only. Reader 8 is added in the same edit.
    gw.write_conf(data_dir="elsewhere", extra='[console]\nlisten = "127.0.0.1:0"\n')
    out = gw.cmd("readers", "add", "--from", gw.tech_file(8, k8))
    assert "systemctl reload liftcard-gateway" in out  # no daemon's pid file in the new data_dir
    gw.hup()
    ev = gw.wait_event("config_needs_restart", 1, "the settings named")
    assert ev["keys"] == ["gateway.data_dir", "console"]
    assert "needs a restart" in ev["message"]
    gw.wait_event("config_reloaded", 1, "the readers applied")
    r8 = reader(gw, 8, k8)
    r8.send([1])
    assert r8.ack() == 1
    gw.write_conf()
    assert db_rides(load_config(gw.conf), 8) == [1]  # in the database it started with
    assert not (gw.dir / "elsewhere").exists()
    assert not gw.events("console_started")


def test_without_a_running_daemon_the_commands_say_how_to_reload(gw):
    k7 = secrets.token_bytes(32)
    # A pid file left behind, its pid now another program's: never signalled.
    other = gw.ends.enter_context(procs.running(procs.spawn(["sleep", "60"])))
    (gw.dir / "data").mkdir()
    (gw.dir / "data" / PID_FILE).write_text("%d\n" % other.pid)
    out = gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    assert "systemctl reload liftcard-gateway" in out
    assert "SIGHUP" in out and "sent the gateway daemon" not in out
    assert other.poll() is None


def test_the_daemon_removes_its_pid_file_when_it_stops(gw):
    p = gw.start()
    pid_file = gw.dir / "data" / PID_FILE
    assert pid_file.read_text().strip() == str(p.pid)
    assert procs.stop(p) == 0
    gw.proc = None
    assert not pid_file.exists()


def test_the_console_shows_the_reloaded_readers(gw):
    k7, k8 = secrets.token_bytes(32), secrets.token_bytes(32)
    gw.write_conf(extra='[console]\nlisten = "127.0.0.1:0"\n')
    gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    gw.start()
    url = gw.wait_event("console_started", 1, "the console")["url"].rstrip("/")

    def shown():
        with urllib.request.urlopen(url + "/status.json", timeout=10) as resp:
            return [r["reader_id"] for r in json.load(resp)["readers"]]

    assert shown() == [7]
    gw.cmd("readers", "add", "--from", gw.tech_file(8, k8))
    gw.wait_event("config_reloaded", 1, "the reload")
    assert shown() == [7, 8]
    gw.cmd("readers", "remove", 7)
    gw.wait_event("config_reloaded", 2, "the second reload")
    assert shown() == [8]
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    online = [x.split(" ")[0] for x in metrics.splitlines() if x.startswith("liftcard_reader_online{")]
    assert online == ['liftcard_reader_online{building="12",reader="8"}']  # reader 7 left the reader families


def test_the_installed_command_is_found_and_signalled_through_its_pid_file(gw):
    """As systemd runs it: the console script, not python -m."""
    k7 = secrets.token_bytes(32)
    script = Path(sys.executable).parent / "liftcard-gateway"
    with procs.log_file(gw.log) as out:
        p = gw.ends.enter_context(
            procs.running(
                procs.spawn(
                    [str(script), "run", "--config", str(gw.conf)], stdout=out, stderr=out, stdin=subprocess.DEVNULL
                )
            )
        )
    gw.wait_event("subscribed", 1, "the daemon subscribed")
    out = gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    assert "sent the gateway daemon (pid %d) SIGHUP" % p.pid in out
    ev = gw.wait_event("config_reloaded", 1, "the reload")
    assert ev["added"] == 1
    r7 = reader(gw, 7, k7)
    r7.send([1])
    assert r7.ack() == 1


def test_what_needs_a_restart_is_named_and_nothing_else(tmp_path):
    login = BrokerLogin()
    cfg = load_config(write_gateway_config(tmp_path, login, {}, {}, client_id="gw-a"))
    assert restart_only_changes(cfg, load_config(cfg.path)) == []
    (tmp_path / "broker.pass").write_text("y" * 16 + "\n")  # same file, another password
    text = cfg.path.read_text().replace("[broker]\n", '[broker]\nkeepalive = 60\nlisten = "0.0.0.0"\n')
    cfg.path.write_text(text + '[retention]\nacked_ride_days = 30\n')
    new = load_config(cfg.path)
    # listen is the broker's own setting (`broker` renders it), not the daemon's
    assert restart_only_changes(cfg, new) == ["broker.keepalive", "broker.password_file", "retention"]


KEYS = [bytes([i]) * 32 for i in range(3)]
READER = st.builds(
    lambda b, k, f: (b, k, f), st.sampled_from([1, 2]), st.sampled_from(KEYS), st.sampled_from([None, 5])
)


def _readers(d: dict) -> dict:
    return {rid: ReaderConf(rid, b, Secret(k), Path("reader-%d.key" % rid), f) for rid, (b, k, f) in d.items()}


@given(st.dictionaries(st.integers(1, 6), READER), st.dictionaries(st.integers(1, 6), READER))
def test_each_reader_is_counted_once_by_what_a_reload_does_to_it(old, new):
    ch = reader_changes(_readers(old), _readers(new))
    assert set(ch.added) == new.keys() - old.keys() and set(ch.removed) == old.keys() - new.keys()
    both = old.keys() & new.keys()
    assert set(ch.rekeyed) == {r for r in both if old[r][1] != new[r][1]}  # a new key, whatever else changed
    assert set(ch.changed) == {r for r in both if old[r][1] == new[r][1] and old[r] != new[r]}
    every = ch.added + ch.removed + ch.rekeyed + ch.changed
    assert len(every) == len(set(every)) and all(list(t) == sorted(t) for t in ch.__dict__.values())


class ListReader(SimReader):
    """A SimReader that also takes WHITELIST chunks (checked under its key)."""

    def __init__(self, *a, **kw):
        self.chunks = queue.Queue()
        super().__init__(*a, **kw)

    def _on_message(self, client, userdata, msg):
        m = link.parse(self.key, msg.payload, self.rid, self.bid, link.DOWN, self.last_down)
        if m.kind != link.WHITELIST:
            return super()._on_message(client, userdata, msg)
        self.last_down = m.counter
        self.chunks.put(m)

    def whitelist(self):
        msgs = [self.chunks.get(timeout=10)]
        while sum(len(m.chunk.data) for m in msgs) < msgs[0].chunk.total:
            msgs.append(self.chunks.get(timeout=10))
        return assemble(msgs, self.key, self.rid, BUILDING)


def test_a_reader_added_or_rekeyed_by_a_reload_gets_its_whitelist_at_its_next_heartbeat(gw):
    k7, k8, k8b = (secrets.token_bytes(32) for _ in range(3))
    (gw.dir / "bank.pub").write_bytes(
        BANK.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    gw.write_conf(gateway="compound_id = %d\n" % COMPOUND, extra='[cards]\nbank_public_key_file = "bank.pub"\n')
    cards = [card(0x8000000000000000 + i, hh=i) for i in range(5)]
    (gw.dir / "snap.bin").write_bytes(snapshot(1, {BUILDING: cards}))
    gw.cmd("cards", "import", gw.dir / "snap.bin")
    gw.cmd("readers", "add", "--from", gw.tech_file(7, k7))
    gw.start()

    gw.cmd("readers", "add", "--from", gw.tech_file(8, k8))
    gw.wait_event("config_reloaded", 1, "the reload")
    r8 = ListReader(gw.broker, 8, k8)
    gw.ends.callback(r8.close)
    r8.send_status()  # holds no list (version 0)
    wl = r8.whitelist()
    assert (wl.version, wl.cards) == (1, sorted(cards))

    # Re-keyed before it took the list: at its next heartbeat, under the new key, the list again
    # (not held back as "sent, waiting for the reader to report it").
    gw.cmd("readers", "rotate-key", 8, "--from", gw.tech_file(8, k8b))
    gw.wait_event("config_reloaded", 2, "the second reload")
    r8.key = k8b
    r8.send_status()
    wl = r8.whitelist()
    assert (wl.version, wl.cards) == (1, sorted(cards))
