"""The operator's guide (docs/operations.md) walked with its own commands, as
processes: `liftcard-gateway init`, `readers add` twice, `broker`, the real
Mosquitto started from the rendered config (as liftcard-broker.service does),
the daemon, a virtual reader configured from its enrolment file and a tariff,
a tap, and the ride stored at the gateway. Then a third reader is added while
the broker runs, with the other readers' plain passwords gone from the Pi:
Mosquitto is reloaded, the new reader connects, and the first one still does.
Then a backup while the daemon runs, and a reader removed leaves `status`."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys

from liftcard_gateway.broker import find_tool, password_matches, read_passwd
from liftcard_gateway.config import load_config
from liftcard_protocol.enrolment import loads_enrolment
from liftcard_protocol.whitelist import build_whitelist
from liftcard_testing import procs
from liftcard_testing.daemonrig import db_rides
from liftcard_testing.mosquitto import free_port
from liftcard_testing.programs import start_gateway
from liftcard_testing.reader import CARDS, VirtualReader
from liftcard_testing.wait import wait_for

BUILDING = 12
TARIFF = {"fee_fen": [0, 0, 10, 20, 30, 40, 50], "free_classes": ["exempt"], "monthly_cap_fen": 3000, "debounce_s": 30}


def gw(*args):
    r = subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


def ok(*args) -> str:
    r = gw(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def reader_from(enrolment_file, workdir) -> VirtualReader:
    """A virtual reader configured as a technician would: the enrolment file's
    ids, key and uplink, plus the building's floors and tariff; then a
    whitelist (signed with its key) and the clock."""
    enr = loads_enrolment(enrolment_file.read_bytes())
    workdir.mkdir()
    r = VirtualReader(workdir)
    try:
        cfg = dict(enr.doc(), floors=7, ground_floor=0, tariff=TARIFF)
        cfg["uplink"]["keepalive_s"] = 10
        reply = r.command("CONFIG " + r.file("config.json", json.dumps(cfg).encode()))
        assert reply.startswith("OK config reader %d" % enr.reader_id), reply
        wl = r.file("wl.bin", build_whitelist(enr.key, enr.reader_id, enr.building_id, 1, CARDS))
        assert r.command("WL " + wl) == "OK whitelist v1 2 cards"
        assert r.command("TIME 91000000") == "OK time 91000000"
    except BaseException:
        r.kill()
        raise
    return r


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_from_a_fresh_pi_to_the_first_ride_then_a_third_reader(tmp_path):
    etc, port = tmp_path / "etc", free_port()
    conf = etc / "gateway.toml"
    C = ("--config", conf)
    out = ok("init", *C, "--data-dir", tmp_path / "var", "--gateway-id", "gw-0001", "--port", port)
    assert "CN=gw-0001" in out
    ok("readers", "add", 7, "--building", BUILDING, *C)
    ok("readers", "add", 8, "--building", BUILDING, *C)
    out = ok("broker", *C)
    assert "no Mosquitto is running" in out
    mconf = etc / "broker" / "mosquitto.conf"
    with contextlib.ExitStack() as ends:
        mosq = ends.enter_context(procs.running(procs.spawn([find_tool("mosquitto"), "-c", mconf])))
        wait_for(lambda: listening(port) or mosq.poll() is not None, 30, "Mosquitto listening")
        assert mosq.poll() is None, (etc / "broker" / "mosquitto.log").read_text()
        wait_for(lambda: (etc / "broker" / "mosquitto.pid").exists(), 30, "its pid file")
        assert "broker files in %s unchanged" % (etc / "broker") in ok("broker", *C)

        def daemon(n):
            return ends.enter_context(procs.running(start_gateway(conf, tmp_path / f"gw-{n}.log", ready="subscribed")))

        gw1 = daemon(1)
        r7 = ends.enter_context(reader_from(etc / "enrolment" / "reader-7.json", tmp_path / "r7"))
        wait_for(lambda: r7.status()["uplink"] == "up", 60, "reader 7's uplink")
        ride = r7.tap(CARDS[0].card_id, 5)
        cfg = load_config(conf)
        wait_for(lambda: db_rides(cfg, 7) == [ride.seq], 60, "reader 7's ride stored at the gateway")

        # The technician took the enrolment files away: no plain password of 7 or 8 is left on the Pi.
        before = read_passwd(etc / "broker" / "passwd")
        for rid in (7, 8):
            (etc / "enrolment" / f"reader-{rid}.json").unlink()
        out = ok("readers", "add", 9, "--building", BUILDING, *C)
        assert "reloaded Mosquitto (pid %d)" % mosq.pid in out
        after = read_passwd(etc / "broker" / "passwd")
        assert {u: after[u] for u in before} == before  # the others' lines untouched
        enr9 = loads_enrolment((etc / "enrolment" / "reader-9.json").read_bytes())
        assert password_matches(after["reader-9"], enr9.password)
        assert mosq.poll() is None  # reloaded, not restarted

        r9 = ends.enter_context(reader_from(etc / "enrolment" / "reader-9.json", tmp_path / "r9"))
        wait_for(lambda: r9.status()["uplink"] == "up", 60, "reader 9 connected to the reloaded broker")
        # The daemon learns readers when it starts.
        procs.stop(gw1)
        daemon(2)
        ride9 = r9.tap(CARDS[0].card_id, 3)
        wait_for(lambda: db_rides(cfg, 9) == [ride9.seq], 60, "reader 9's ride stored")
        ride7 = r7.tap(CARDS[1].card_id, 4)  # reader 7's login survived the reload
        wait_for(lambda: db_rides(cfg, 7) == [ride.seq, ride7.seq], 60, "reader 7's second ride stored")

        # Step 10: a backup while the daemon runs, with the project's own command.
        copy = tmp_path / "backups" / "gateway.db"
        copy.parent.mkdir(mode=0o700)
        assert "3 rides" in ok("backup", copy, *C)
        assert copy.stat().st_mode & 0o077 == 0

        # A reader taken away leaves status (its login is gone: nothing would mark it offline).
        ok("readers", "remove", 9, *C)
        snap = json.loads(ok("status", "--json", *C))
        assert [r["reader_id"] for r in snap["readers"]] == [7, 8]
