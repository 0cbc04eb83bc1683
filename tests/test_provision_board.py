"""liftcard-provision deploy / configure / selftest against the virtual serial
board (liftcard_testing.virtualboard): the real micropython behind a pty,
driven through mpremote's own SerialTransport (boardlink). No mocks of the
board or the transport; only the USB port listing is faked where a test needs
"one board" or "two boards" plugged in.

The virtual board runs what is on its flash image, as a board does: a blank
one has only the REPL until a deploy, and "the reader boots" after a deploy is
the deployed firmware starting. What it cannot show: its network is the
host's, and it has no PN532."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("mpremote")
from serial.tools.list_ports_common import ListPortInfo

from liftcard_protocol.readerconfig import validate_config
from liftcard_protocol.whitelist import build_whitelist
from liftcard_provisioning import boardlink, cli, deploy as D, ports as P
from liftcard_testing import procs
from liftcard_testing.reader import BUILDING, CARDS, CONFIG, KEY, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

SECRET_PW = "broker-secret-Zq81"


@pytest.fixture
def board(tmp_path):
    """An unconfigured reader on a virtual serial board, the build deployed:
    (rig, test port)."""
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        yield b, port


@pytest.fixture
def blank(tmp_path):
    """A virtual serial board with MicroPython and an empty filesystem, as
    `flash` leaves one: (rig, test port)."""
    with VirtualBoard(tmp_path / "board", blank=True) as b, TtyLines(b.test) as port:
        yield b, port


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def board_hashes(port: str, paths) -> dict:
    with boardlink.connect(port) as b:
        return b.hashes(paths)


def test_deploy_to_a_blank_board_then_nothing_to_copy(blank, capsys):
    b, port = blank
    files, _ = D.firmware_files()
    assert board_hashes(b.usb, ["main.py"]) == {"main.py": None}
    rc, out, err = run(capsys, "deploy", "--port", b.usb, "--json")
    assert rc == 0, err
    done = json.loads(out)
    assert done["copied"] == len(files) and done["unchanged"] == 0
    assert "[1/%d]" % len(files) in err  # progress, one line a file
    port.until("READY")  # restarted
    want = {rel: D._sha(p) for p, rel in files}
    assert board_hashes(b.usb, list(want) + [D.MARKER]) == dict(want, **{D.MARKER: None})

    rc, out, err = run(capsys, "deploy", "--port", b.usb)
    assert rc == 0, err
    assert out.strip() == "firmware on %s is up to date (%d files): nothing copied" % (b.usb, len(files))


def test_an_interrupted_deploy_leaves_one_set_and_a_rerun_completes_it(board, capsys, tmp_path):
    b, port = board
    files, _ = D.firmware_files()
    want = {rel: D._sha(p) for p, rel in files}
    assert run(capsys, "deploy", "--port", b.usb)[0] == 0
    # An "old" firmware set: every module differs from the build.
    with boardlink.connect(b.usb) as link:
        for rel in want:
            link.write_file(rel, b"old firmware: " + rel.encode())
        old = link.hashes(want)
    assert not set(old.values()) & set(want.values())

    p = procs.spawn(
        [sys.executable, "-m", "liftcard_provisioning.cli", "deploy", "--port", b.usb],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for line in p.stderr:
            if line.startswith(b"[3/"):
                break
        b.power_off()  # the board dies mid-transfer
        out, err = p.communicate(timeout=120)
    finally:
        procs.stop(p)
    assert p.returncode == 2, err.decode()
    lines = err.decode().strip().splitlines()
    assert "interrupted" in lines[-1] and "run the same command again" in lines[-1]
    assert out == b""  # nothing of what the board last said (mpremote prints it) on stdout

    b.power_on()
    now = board_hashes(b.usb, want)
    assert now in (old, want), "a mix of two firmware sets on the flash"

    rc, out, err = run(capsys, "deploy", "--port", b.usb, "--json")
    assert rc == 0, err
    done = json.loads(out)
    assert done["copied"] + done["staged_before"] == len(want)
    assert done["staged_before"] >= 1 or now == want  # what was staged before the cut was kept
    port.until("READY")  # the reader starts
    assert board_hashes(b.usb, list(want) + [D.MARKER]) == dict(want, **{D.MARKER: None})


def test_configure_round_trip_without_showing_secrets(board, capsys, tmp_path, monkeypatch):
    b, port = board
    cfg = dict(CONFIG)
    cfg["uplink"] = {"host": "gw.example", "password": SECRET_PW}
    f = tmp_path / "reader.json"
    f.write_text(json.dumps(cfg))
    monkeypatch.setenv("LIFTCARD_WIFI_PASSWORD", "wifi-secret-77x")
    rc, out, err = run(
        capsys, "configure", "--port", b.usb, "--file", str(f), "--gateway", "gw2.example:8883", "--wifi-ssid", "Lift"
    )
    assert rc == 0, err
    for secret in (KEY.hex(), CONFIG["key"], SECRET_PW, "wifi-secret-77x"):
        assert secret not in out + err
    assert "reader %d" % READER in out
    want = dict(cfg, uplink={"host": "gw2.example", "port": 8883, "password": SECRET_PW})
    want["wifi"] = {"ssid": "Lift", "password": "wifi-secret-77x"}
    with boardlink.connect(b.usb) as link:
        back = json.loads(link.read_file("config.json"))
        assert link.hashes(["config.new"])["config.new"] is None
    assert back == validate_config(want)


def test_configure_refuses_a_bad_config_and_leaves_the_board_alone(board, capsys, tmp_path):
    b, port = board
    f = tmp_path / "reader.json"
    f.write_text(json.dumps(CONFIG))
    assert run(capsys, "configure", "--port", b.usb, "--file", str(f))[0] == 0
    before = board_hashes(b.usb, ["config.json", "config.new"])
    capsys.readouterr()  # the connection's progress, if any
    rc, out, err = run(capsys, "configure", "--port", b.usb, "--file", str(f), "--floors", "3")
    assert rc == 2
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "tariff.fee_fen" in err and "nothing written" in err
    assert CONFIG["key"] not in err
    assert board_hashes(b.usb, ["config.json", "config.new"]) == before


def test_selftest_table_and_exit_code(board, capsys, tmp_path):
    b, port = board
    rc, out, err = run(capsys, "selftest", "--port", b.usb)
    assert rc == 1, err  # blank: no config, no whitelist
    assert "up to 15 s for Wi-Fi" in err  # the wait is announced, not a silent quarter minute
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "FAIL" in rows["config"] and "FAIL" in rows["whitelist"]
    port.until("READY")

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    assert port.command("CONFIG %s" % cfg).startswith("OK config reader %d" % READER)
    wl = tmp_path / "wl1.bin"
    wl.write_bytes(build_whitelist(KEY, READER, BUILDING, 1, CARDS))
    assert port.command("WL %s" % wl) == "OK whitelist v1 2 cards"
    rc, out, err = run(capsys, "selftest", "--port", b.usb, "--json")
    assert rc == 0, out + err
    checks = {c["check"]: c for c in json.loads(out)["checks"]}
    assert checks["whitelist"]["state"] == "OK" and "version 1, 2 cards" in checks["whitelist"]["detail"]
    assert checks["flash log"]["state"] == "OK"
    assert checks["NFC chip"]["detail"] == "no PN532 on the virtual board"
    assert int(checks["free heap"]["detail"].split()[0]) > 0
    port.until("READY")  # the reader runs again after the selftest


def _usb(device):
    i = ListPortInfo(device, skip_link_detection=True)
    i.vid, i.pid, i.description = 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller"
    return i


def test_port_choice_and_errors(board, capsys, monkeypatch):
    b, port = board
    monkeypatch.setattr(P, "comports", lambda: [_usb(b.usb)])
    rc, out, err = run(capsys, "selftest")  # the one board plugged in
    assert "selftest of the reader on %s" % b.usb in out

    monkeypatch.setattr(P, "comports", lambda: [])
    for verb in ("deploy", "configure", "selftest", "console"):
        argv = [verb] + (["--reader-id", "1"] if verb == "configure" else [])
        if verb == "configure":
            continue  # refused before a port is looked for (an incomplete config)
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and "no ESP32 board found" in err, (verb, err)

    monkeypatch.setattr(P, "comports", lambda: [_usb(b.usb), _usb("/dev/ttyUSB7")])
    rc, out, err = run(capsys, "selftest")
    assert rc == 2 and "2 ESP32 boards found" in err and "--port" in err

    import serial

    holder = serial.Serial()
    holder.port, holder.exclusive = b.usb, True
    holder.open()
    try:
        rc, out, err = run(capsys, "deploy", "--port", b.usb)
    finally:
        holder.close()
    assert rc == 2 and "is busy" in err and err.count("\n") == 1


def test_a_deploy_cut_after_its_commit_is_finished_by_the_next(board, capsys):
    """The switch (step 3) cut short on a board whose boot.py predates the
    switch at boot: the COMMIT marker is on the flash with some files still
    staged; the next deploy finishes it before anything else. (With the
    current boot.py the board finishes it itself: test_provision_bootswitch.py.)"""
    b, port = board
    files, _ = D.firmware_files()
    want = {rel: D._sha(p) for p, rel in files}
    moved, staged = "liftcard/u32.mpy", "liftcard/crc.mpy"
    with boardlink.connect(b.usb) as link:
        link.write_file("boot.py", b"# a boot.py that does not finish a switch\n")
        for rel in (moved, staged):
            link.write_file(rel, b"old " + rel.encode())
        link.write_file(D.STAGE + "/" + staged, dict((rel, f) for f, rel in files)[staged].read_bytes())
        link.write_file(D.MARKER, json.dumps({"move": [moved, staged], "remove": []}).encode())
    rc, out, err = run(capsys, "deploy", "--port", b.usb, "--json")
    assert rc == 0, err
    assert "finishing the switch of an interrupted deploy" in err
    done = json.loads(out)
    assert done["resumed"] == 1  # the staged file switched in; `moved` was not staged any more: copied again
    assert done["copied"] == 2  # it, and the current boot.py
    assert board_hashes(b.usb, list(want) + [D.MARKER]) == dict(want, **{D.MARKER: None})


def test_a_client_killed_mid_deploy_then_a_rerun(board, capsys):
    b, port = board
    files, _ = D.firmware_files()
    want = {rel: D._sha(p) for p, rel in files}
    p = procs.spawn(
        [sys.executable, "-m", "liftcard_provisioning.cli", "deploy", "--port", b.usb],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for line in p.stderr:
            if line.startswith(b"[5/"):
                break
    finally:
        procs.kill(p)  # the laptop's side goes, the port closes mid-transfer
    rc, out, err = run(capsys, "deploy", "--port", b.usb)
    assert rc == 0, err
    port.until("READY")
    assert board_hashes(b.usb, list(want) + [D.MARKER]) == dict(want, **{D.MARKER: None})


def test_a_port_without_micropython_is_one_line(capsys):
    """A serial port where nothing answers (a board without MicroPython, a
    reader stuck): one line naming what to do, exit 2."""
    import os

    master, slave = os.openpty()
    tty = os.ttyname(slave)
    try:
        rc, out, err = run(capsys, "selftest", "--port", tty)
    finally:
        os.close(slave)
        os.close(master)
    lines = err.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("liftcard-provision: ")
    assert "no MicroPython REPL answering" in lines[-1] and "flash it first" in lines[-1]
    # the half minute it takes is not silent: a progress line before each new attempt
    assert lines[:-1] == [
        "waiting for the MicroPython REPL on %s: no answer in 10 s, trying again (%d of 3)" % (tty, n) for n in (2, 3)
    ]
