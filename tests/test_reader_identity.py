"""A reader never sends rides under another reader's identity after a
reconfigure (docs/formats.md, "Log identity"; docs/technicians.md, "A reader
given another identity").

Reader 8 on the virtual serial board, its network down, holds 2 rides no
gateway acknowledged; the gateway daemon and Mosquitto run, knowing readers 8
and 10. Reconfiguring it as reader 10 through the line protocol's CONFIG, or
through `liftcard-provision configure`, is refused and changes nothing; a
config.json for reader 10 written behind the reader's back (over the raw
REPL) makes it hold the 2 rides instead of sending them. `harvest --clear`
rescues them into a file that `liftcard-gateway import` stores as reader
8's; the reader then serves as reader 10, and the gateway holds reader 10's
own rides only."""

import json
import subprocess
import sys

import pytest

from liftcard_gateway.broker import find_tool
from liftcard_protocol.harvest import unpack_harvest
from liftcard_protocol.whitelist import build_whitelist
from liftcard_testing import firmware, procs
from liftcard_testing.daemonrig import daemon_broker, daemon_rig, db_rides
from liftcard_testing.logcapture import EventLog
from liftcard_testing.reader import BUILDING, CARDS, CONFIG
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard
from liftcard_testing.wait import wait_for

try:
    firmware.venv_tool("mpremote")
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mpremote or mosquitto not installed", allow_module_level=True)

OLD, NEW = 8, 10
KEYS = {OLD: bytes(range(32)), NEW: bytes(range(100, 132))}
REFUSAL = "reader 8 still holds 2 rides not acknowledged"


def run(module, *args, env=None):
    p = procs.spawn(
        [sys.executable, "-m", module, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(firmware.reader_env(), **(env or {})),
    )
    try:
        out, err = p.communicate(timeout=300)
    finally:
        procs.stop(p)
    return p.returncode, out.decode(), err.decode()


def config(rid, broker=None):
    cfg = dict(CONFIG, reader_id=rid, key=KEYS[rid].hex())
    if broker is not None:
        cfg["uplink"] = {"host": broker.host, "port": broker.port, "password": broker.credentials["reader-%d" % rid]}
    return cfg


def configure_line(port, tmp_path, rid, broker=None):
    f = tmp_path / ("reader-%d.json" % rid)
    f.write_text(json.dumps(config(rid, broker)))
    return port.command("CONFIG %s" % f)


def whitelist(port, tmp_path, rid):
    wl = tmp_path / ("wl-%d.bin" % rid)
    wl.write_bytes(build_whitelist(KEYS[rid], rid, BUILDING, 1, CARDS))
    assert port.command("WL %s" % wl) == "OK whitelist v1 2 cards"


@pytest.fixture
def site(tmp_path):
    """(the daemon's config, the broker, the board, its test port, the board's dir)
    with reader 8 holding 2 unacknowledged rides."""
    with daemon_broker({OLD: BUILDING, NEW: BUILDING}) as broker:
        with daemon_rig(tmp_path / "gw", broker, KEYS, EventLog()) as (g, cfg, _, _):
            d = tmp_path / "board"
            with VirtualBoard(d) as b, TtyLines(b.test) as port:
                port.until("READY")
                assert configure_line(port, tmp_path, OLD) == "OK config reader 8 building %d" % BUILDING
                whitelist(port, tmp_path, OLD)
                assert port.command("TIME 91000000") == "OK time 91000000"
                rides = [port.tap(CARDS[0].card_id, 5), port.tap(CARDS[1].card_id, 3)]
                assert [r.seq for r in rides] == [1, 2]
                st = port.status()
                assert (st["reader_id"], st["backlog"], st["acked"]) == (OLD, 2, 0)
                yield cfg, broker, b, port, d, rides


def harvest_and_import(tmp_path, b, d, cfg, rides):
    out_file = tmp_path / "reader-8.lchv"
    rc, out, err = run(
        "liftcard_provisioning.cli",
        "harvest",
        "--port",
        b.usb,
        "--board-log-image",
        d / firmware.LOG_IMG,
        "--clear",
        "--out",
        out_file,
    )
    assert rc == 0, err
    assert "reader 8 (building %d): 2 rides" % BUILDING in out and "CLEARED" in out, out
    h = unpack_harvest(out_file.read_bytes())
    assert (h.reader_id, h.building_id) == (OLD, BUILDING) and list(h.records) == rides
    rc, out, err = run("liftcard_gateway", "import", out_file, "--config", tmp_path / "gw" / "gw.toml")
    assert rc == 0, err
    assert "2 new" in out
    assert db_rides(cfg, OLD) == [1, 2]


def serve_as_new(tmp_path, port, cfg):
    """The reader, now reader 10 on the gateway, logs and sends its own rides only."""
    st = port.status()
    assert (st["reader_id"], st["backlog"], st["foreign_rides"], st["log_reader_id"]) == (NEW, 0, 0, NEW), st
    whitelist(port, tmp_path, NEW)
    r = port.tap(CARDS[0].card_id, 5)
    assert r.seq == 3
    wait_for(lambda: db_rides(cfg, NEW) == [3], 60, "reader 10's own ride at the gateway")
    wait_for(lambda: port.status()["acked"] == 3, 30, "the gateway's ack")
    assert db_rides(cfg, NEW) == [3]  # never rides 1 and 2
    assert db_rides(cfg, OLD) == [1, 2]


def test_config_on_the_line_protocol_is_refused_then_harvest_frees_the_reader(site, tmp_path):
    cfg, broker, b, port, d, rides = site
    reply = configure_line(port, tmp_path, NEW, broker)
    assert reply == "ERR config: reader 8 still holds 2 rides not acknowledged: harvest them first", reply
    st = port.status()
    assert (st["reader_id"], st["backlog"], st["foreign_rides"]) == (OLD, 2, 0)
    assert "uplink" not in st  # the old config, offline, is still the one running
    harvest_and_import(tmp_path, b, d, cfg, rides)
    port.until("READY")  # the harvest restarted it
    assert configure_line(port, tmp_path, NEW, broker) == "OK config reader 10 building %d" % BUILDING
    serve_as_new(tmp_path, port, cfg)


def test_configure_is_refused_and_a_config_written_behind_its_back_holds_the_rides(site, tmp_path):
    cfg, broker, b, port, d, rides = site
    f = tmp_path / "new.json"
    f.write_text(json.dumps(config(NEW, broker)))
    rc, out, err = run("liftcard_provisioning.cli", "configure", "--port", b.usb, "--file", f)
    assert rc != 0 and err.count("\n") == 1, err
    assert "refused, nothing written to the board: " + REFUSAL in err and "harvest --clear" in err, err
    assert KEYS[NEW].hex() not in err + out and broker.credentials["reader-10"] not in err + out
    port.until("READY")
    assert port.status()["reader_id"] == OLD

    # An older tool, or a hand at the REPL, writes config.json anyway.
    from liftcard_provisioning import boardlink

    link = boardlink.connect(b.usb)
    try:
        link.write_file("config.json", f.read_bytes())
    finally:
        link.close(run=True)
    port.until("READY")
    st = port.status()
    assert (st["reader_id"], st["foreign_rides"], st["log_reader_id"], st["backlog"]) == (NEW, 2, OLD, 2), st
    assert st["error"] == "reader 8 still holds 2 rides not acknowledged: harvest them first"
    assert "uplink" not in st  # no link: nothing can go out as reader 10
    port.send(b"TAP %016x 5\n" % CARDS[0].card_id)  # a resident still rides, unlogged
    port.until("RIDE ")
    st = port.status()
    assert st["next_seq"] == 3 and st["acked"] == 0, st
    assert db_rides(cfg, NEW) == []

    harvest_and_import(tmp_path, b, d, cfg, rides)
    port.until("READY")  # restarted: nothing unacknowledged, so the log is reader 10's from seq 3
    serve_as_new(tmp_path, port, cfg)


def test_a_new_identity_never_sends_what_lies_below_its_first_seq(tmp_path):
    """Reader 8's rides 1 and 2 acknowledged, the board becomes reader 10
    (from seq 3): its heartbeat says its log starts at 3, and a RESEND from 1
    (a gateway restored from a backup) brings 3 and up, never 1 and 2 under
    reader 10's name."""
    from liftcard_protocol import link as U
    from liftcard_testing.minigateway import MiniGateway
    from liftcard_testing.mosquitto import MosquittoInstance
    from liftcard_testing.reader import VirtualReader

    with MosquittoInstance(readers={OLD: BUILDING, NEW: BUILDING}) as broker:
        gw = MiniGateway(broker, key=KEYS[NEW], reader=NEW)
        r = VirtualReader(tmp_path)
        try:
            assert r.command("CONFIG " + r.file("c8.json", json.dumps(config(OLD)).encode())).startswith("OK")
            wl = r.file("wl8.bin", build_whitelist(KEYS[OLD], OLD, BUILDING, 1, CARDS))
            assert r.command("WL " + wl) == "OK whitelist v1 2 cards"
            assert r.command("TIME 91000000") == "OK time 91000000"
            assert [r.tap(c.card_id, 5).seq for c in CARDS] == [1, 2]
            assert r.command("ACK 2") == "OK acked 2"  # reader 8's gateway holds them
            c10 = r.file("c10.json", json.dumps(config(NEW, broker)).encode())
            assert r.command("CONFIG " + c10) == "OK config reader 10 building %d" % BUILDING
            wait_for(lambda: gw.statuses, 30, "reader 10's first heartbeat")
            assert gw.statuses[-1].oldest_seq == 3
            wl = r.file("wl10.bin", build_whitelist(KEYS[NEW], NEW, BUILDING, 1, CARDS))
            assert r.command("WL " + wl) == "OK whitelist v1 2 cards"
            assert r.tap(CARDS[0].card_id, 5).seq == 3
            wait_for(lambda: r.status()["acked"] == 3, 30, "ride 3 acknowledged")
            gw.send(U.build_resend, 1)
            wait_for(lambda: r.status()["uplink_resends"] == 1, 20, "the RESEND obeyed")
            assert r.tap(CARDS[1].card_id, 3).seq == 4
            wait_for(lambda: r.status()["acked"] == 4, 30, "ride 4 acknowledged")  # after anything resent
            with gw.lock:
                assert sorted(gw.rides) == [3, 4] and not gw.refused
        finally:
            r.kill()
            gw.close()
