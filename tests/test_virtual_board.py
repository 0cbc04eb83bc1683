"""The virtual serial board (liftcard_testing.virtualboard): the reader under
the real micropython behind a pty, spoken to by the real, unmodified mpremote
CLI on its USB port (the REPL) and by the line protocol on its test port
(UART1). It must look like an ESP32: mpremote sees the reader's littlefs
files, Ctrl-C stops the reader into the REPL, a soft reset runs main.py again,
and a power cut at any instant keeps the logged rides."""

import json
import os
import stat
import subprocess

import pytest

from liftcard_protocol.whitelist import build_whitelist
from liftcard_testing import firmware, procs
from liftcard_testing.reader import BUILDING, CARD, CARDS, CONFIG, KEY, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

try:
    MPREMOTE = firmware.venv_tool("mpremote")
except firmware.ToolMissing:
    MPREMOTE = None

pytestmark = pytest.mark.skipif(MPREMOTE is None, reason="mpremote not installed (pip install -e '.[test]')")


def mpremote(port: str, *args: str, timeout: float = 120) -> str:
    """The real mpremote CLI against `port`; its output (AssertionError if it fails)."""
    p = procs.spawn([MPREMOTE, "connect", port, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        procs.stop(p)
    text = out.decode(errors="replace")
    assert p.returncode == 0, "mpremote %s: exit %s\n%s" % (" ".join(args), p.returncode, text)
    return text


@pytest.fixture
def board(tmp_path):
    """A configured reader on a virtual serial board: (rig, test port)."""
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps(CONFIG))
        assert port.command("CONFIG %s" % cfg).startswith("OK config reader %d" % READER)
        wl = tmp_path / "wl1.bin"
        wl.write_bytes(build_whitelist(KEY, READER, BUILDING, 1, CARDS))
        assert port.command("WL %s" % wl) == "OK whitelist v1 2 cards"
        assert port.command("TIME 91000000") == "OK time 91000000"
        yield b, port


def test_stable_port_names(tmp_path):
    usb, test = tmp_path / "usb", tmp_path / "test"
    with VirtualBoard(tmp_path / "board", usb_link=usb, test_link=test) as b:
        assert (b.usb, b.test) == (str(usb), str(test))
        assert os.path.realpath(usb).startswith("/dev/pts/") and os.path.realpath(test).startswith("/dev/pts/")
        with TtyLines(b.test) as port:
            port.until("READY")
            assert port.status()["boot"] == 1
        assert "boot.cnt" in mpremote(b.usb, "fs", "ls")
    assert not usb.exists() and not test.exists()  # gone with the rig
    # the flash will hold the reader's key and passwords: its owner's alone
    assert stat.S_IMODE((tmp_path / "board").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "board" / "fs.img").stat().st_mode) == 0o600


def _boot_count(port) -> int:
    return port.status()["boot"]


def test_mpremote_sees_the_readers_flash(board, tmp_path):
    b, port = board
    listing = mpremote(b.usb, "fs", "ls")
    assert "config.json" in listing and "boot.cnt" in listing and "wl/" in listing
    assert json.loads(mpremote(b.usb, "fs", "cat", ":config.json"))["reader_id"] == READER

    note = tmp_path / "note.txt"
    note.write_bytes(b"lift 3 serviced\n" * 200)
    mpremote(b.usb, "fs", "cp", str(note), ":note.txt")
    back = tmp_path / "back.txt"
    mpremote(b.usb, "fs", "cp", ":note.txt", str(back))
    assert back.read_bytes() == note.read_bytes()
    assert "note.txt" in mpremote(b.usb, "fs", "ls")
    mpremote(b.usb, "fs", "rm", ":note.txt")
    assert "note.txt" not in mpremote(b.usb, "fs", "ls")

    cwd, files = mpremote(b.usb, "exec", "import os; print(os.getcwd()); print(os.listdir())").split("\n")[:2]
    assert cwd.strip() == "/flash"
    assert {"boot.cnt", "config.json", "wl"} <= set(eval(files))
    assert mpremote(b.usb, "eval", "6 * 7").strip() == "42"
    assert mpremote(b.usb, "eval", "open('config.json').read().count('reader_id')").strip() == "1"


def test_ctrl_c_stops_the_reader_and_a_soft_reset_runs_it_again(board):
    b, port = board
    assert port.tap(CARD, 3).seq == 1
    boots = _boot_count(port)
    with TtyLines(b.usb) as usb:
        usb.send(b"\x03")
        usb.read_until(b">>> ")  # the REPL (after a reset into safe mode, if the firmware does that)
        usb.send(b"import os; print('config.json' in os.listdir(), os.getcwd())\r")
        usb.read_until(b"True /flash")  # the reader's files, in the REPL's cwd
        usb.read_until(b">>> ")
        n = len(b.events)
        usb.send(b"\x04")  # Ctrl-D at the friendly REPL: soft reset
        usb.read_until(b"soft reboot\r\n")
    assert b.wait_event("boot ", n).endswith(" main")
    port.until("READY")
    assert _boot_count(port) > boots
    assert port.tap(CARD, 4).seq == 2


def test_mpremote_soft_reset_then_the_friendly_repl_boots_main(board):
    b, port = board
    boots = _boot_count(port)
    n = len(b.events)
    mpremote(b.usb, "soft-reset")  # from the raw REPL: back to it, main.py not run (as on an ESP32)
    b.wait_event("boot ", n, " raw")
    assert mpremote(b.usb, "eval", "open('boot.cnt').read() != ''").strip() == "True"
    with TtyLines(b.usb) as usb:
        usb.send(b"\r")
        usb.read_until(b">>> ")
        n = len(b.events)
        usb.send(b"\x04")
        usb.read_until(b"soft reboot\r\n")
    assert b.wait_event("boot ", n).endswith(" main")
    port.until("READY")
    assert _boot_count(port) > boots
    assert port.tap(CARD, 2).seq == 1


def test_a_power_cut_keeps_the_rides(board):
    b, port = board
    taken = [port.tap(CARD, floor) for floor in (1, 2, 3)]
    # Then a burst the cut interrupts wherever it lands.
    port.send(b"".join(b"TAP %016x %d\n" % (CARD, f % 7) for f in range(40)))
    port.until("RIDE ")
    b.power_off()
    assert b.power_on().endswith(" main")
    port.until("READY")
    rides = port.dump(1)
    assert [r.seq for r in rides[:3]] == [1, 2, 3]
    assert rides[:3] == taken
    assert [r.seq for r in rides] == list(range(1, len(rides) + 1))
    assert len(rides) >= 4  # the burst's first ride was reported logged before the cut
    after = port.tap(CARD, 5)
    assert after.seq == len(rides) + 1


def test_the_board_runs_what_is_on_its_flash(tmp_path):
    """Like an ESP32, the board imports boot.py, main.py and the firmware from
    its littlefs image: a blank one comes up at the REPL, and a main.py copied
    onto it is the one that runs at the next boot."""
    with VirtualBoard(tmp_path / "board", blank=True) as b:
        assert mpremote(b.usb, "exec", "import os; print(sorted(os.listdir()))").strip() == "[]"
        main = tmp_path / "main.py"
        main.write_text("import os\nprint('MAIN FROM FLASH', os.getcwd())\n")
        mpremote(b.usb, "fs", "cp", str(main), ":main.py")
        with TtyLines(b.usb) as usb:
            usb.send(b"\r\x02")  # out of the raw REPL mpremote left
            usb.read_until(b">>> ")
            usb.send(b"\x04")  # soft reset at the friendly REPL: main.py runs
            usb.read_until(b"MAIN FROM FLASH /flash")
