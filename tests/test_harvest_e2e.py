"""Harvest end to end: a reader on the virtual serial board whose network is
down (no uplink configured) logs taps made through its test port; the real
`liftcard-provision harvest` stops it over its USB port (mpremote's raw REPL,
boardlink), reads its ride log and writes a harvest file; the real
`liftcard-gateway import` stores every ride exactly once, and a re-import
stores nothing. Then the reader is dead: its flash image alone is harvested
(`--image`) and gives the same rides."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from liftcard_gateway.store import Store
from liftcard_protocol.harvest import SOURCE_IMAGE, SOURCE_LIVE, unpack_harvest
from liftcard_protocol.whitelist import build_whitelist
from liftcard_testing import firmware, procs
from liftcard_testing.configs import write_gateway_config
from liftcard_testing.reader import BUILDING, CARDS, CONFIG, KEY, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

try:
    firmware.venv_tool("mpremote")
    HAVE_MPREMOTE = True
except firmware.ToolMissing:
    HAVE_MPREMOTE = False

pytestmark = pytest.mark.skipif(not HAVE_MPREMOTE, reason="mpremote not installed (pip install -e '.[test]')")
NO_BROKER = SimpleNamespace(host="127.0.0.1", port=1, credentials={"gateway": "unused"})


def run(module, *args):
    p = procs.spawn(
        [sys.executable, "-m", module, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=firmware.reader_env(),
    )
    try:
        out, err = p.communicate(timeout=300)
    finally:
        procs.stop(p)
    return p.returncode, out.decode(), err.decode()


@pytest.fixture
def board(tmp_path):
    """A configured reader with no uplink (its network is down): (rig, test port, board dir)."""
    d = tmp_path / "board"
    with VirtualBoard(d) as b, TtyLines(b.test) as port:
        port.until("READY")
        cfg = tmp_path / "config.json"
        assert "uplink" not in CONFIG
        cfg.write_text(json.dumps(CONFIG))
        assert port.command("CONFIG %s" % cfg).startswith("OK config reader %d" % READER)
        wl = tmp_path / "wl1.bin"
        wl.write_bytes(build_whitelist(KEY, READER, BUILDING, 1, CARDS))
        assert port.command("WL %s" % wl) == "OK whitelist v1 2 cards"
        assert port.command("TIME 91000000") == "OK time 91000000"
        yield b, port, d


def test_harvest_a_reader_with_no_network_then_import(board, tmp_path):
    b, port, d = board
    taps = [port.tap(CARDS[i % 2].card_id, 5 if i % 2 == 0 else 3) for i in range(12)]
    assert [r.seq for r in taps] == list(range(1, 13))
    assert port.status()["backlog"] == 12  # nothing acknowledged: no gateway reached

    f1 = tmp_path / "h1.lchv"
    rc, out, err = run(
        "liftcard_provisioning.cli", "harvest", "--port", b.usb, "--board-log-image", d / firmware.LOG_IMG, "--out", f1
    )
    assert rc == 0, err
    assert "reader %d (building %d): 12 rides (seq 1..12), 12 not yet acknowledged" % (READER, BUILDING) in out
    h = unpack_harvest(f1.read_bytes())
    assert (h.reader_id, h.building_id, h.acked, h.source) == (READER, BUILDING, 0, SOURCE_LIVE)
    assert list(h.records) == taps  # byte for byte what the reader logged

    # The harvest restarted the reader: it goes on logging where it was.
    port.until("READY")
    taps.append(port.tap(CARDS[0].card_id, 5))
    assert taps[-1].seq == 13

    gw = write_gateway_config(tmp_path / "gw", NO_BROKER, {READER: KEY}, {READER: BUILDING})
    rc, out, err = run("liftcard_gateway", "import", f1, "--config", gw)
    assert rc == 0, err
    assert "12 new, 0 already held" in out
    rc, out, err = run("liftcard_gateway", "import", f1, "--config", gw)
    assert rc == 0, err
    assert "0 new, 12 already held" in out

    # The reader dies; its flash image is all that is left.
    b.power_off()
    rc, out, err = run(
        "liftcard_provisioning.cli",
        "harvest",
        "--image",
        d / firmware.LOG_IMG,
        "--reader",
        READER,
        "--building",
        BUILDING,
        "--out",
        tmp_path / "h2.lchv",
    )
    assert rc == 0, err
    h2 = unpack_harvest((tmp_path / "h2.lchv").read_bytes())
    assert h2.source == SOURCE_IMAGE and list(h2.records) == taps
    rc, out, err = run("liftcard_gateway", "import", tmp_path / "h2.lchv", "--config", gw)
    assert rc == 0, err
    assert "1 new, 12 already held" in out and "up to seq 13" in out

    st = Store(tmp_path / "gw" / "data" / "gateway.db")
    try:
        assert st.rides(READER) == taps  # every ride exactly once
        assert st.ride_count() == 13
    finally:
        st.close()


def test_harvest_refusals_are_one_line(tmp_path):
    img = tmp_path / "log.img"
    img.write_bytes(b"\xff" * 1000)
    for args, words in (
        (["--image", img], "--image needs --reader and --building"),
        (["--image", img, "--reader", "1", "--building", "2"], "not a ridelog partition image"),
        (["--image", tmp_path / "none.img", "--reader", "1", "--building", "2"], "cannot read"),
        (["--image", img, "--reader", "0", "--building", "2"], "--reader: an id from 1 to 1073741823, got 0"),
        (["--image", img, "--reader", "1", "--building", str(2**40)], "--building: an id from 1 to"),
    ):
        rc, out, err = run("liftcard_provisioning.cli", "harvest", *args, "--out", tmp_path / "x.lchv")
        assert rc == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "x.lchv").exists()


def test_a_harvest_file_is_never_overwritten(tmp_path):
    """Two dead readers harvested to the same --out: the second must not
    replace the first reader's rides (its only copy, not yet imported)."""
    from liftcard_protocol.harvest import SECTOR

    img = tmp_path / "log.img"
    img.write_bytes(b"\xff" * (8 * SECTOR))
    out = tmp_path / "rides.lchv"
    rc, _, err = run(
        "liftcard_provisioning.cli", "harvest", "--image", img, "--reader", "7", "--building", "2", "--out", out
    )
    assert rc == 0, err
    first = out.read_bytes()
    rc, _, err = run(
        "liftcard_provisioning.cli", "harvest", "--image", img, "--reader", "8", "--building", "2", "--out", out
    )
    assert rc == 2 and err.count("\n") == 1 and "rides.lchv exists" in err and "never overwritten" in err, err
    assert out.read_bytes() == first and unpack_harvest(first).reader_id == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.img", "rides.lchv"]  # no temporary file left
