"""liftcard-provision ports and flash (docs/technicians.md).

`flash` runs against esp32-mock-bootloader: a process speaking the ESP32 ROM's
SLIP protocol on a TCP socket (esptool connects to socket://host:port), which
takes esptool's stub, writes, erases and answers flash MD5 requests from the
flash image it keeps for its whole life. The images are small fake-but-valid
ESP32 images (header, extended header with the chip id, one segment, checksum).
"""

import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("esptool")
pytest.importorskip("esp32_mock_bootloader")
serial = pytest.importorskip("serial")
from serial.tools.list_ports_common import ListPortInfo

from liftcard_provisioning import cli, partitions as PT, ports as P
from liftcard_testing import procs
from liftcard_testing.wait import wait_for

EXE = Path(sys.executable).with_name("liftcard-provision")
MOCK = Path(sys.executable).with_name("esp32-mock-bootloader")
ESP32, ESP32S3 = 0, 9


def app_image(chip_id=ESP32, payload=b"liftcard-test-app!" * 60, magic=0xE9):
    payload += b"\0" * (-len(payload) % 4)
    hdr = struct.pack("<BBBBI", magic, 1, 2, 0x20, 0x40080000)
    # extended header: wp pin, spi drive, chip id, min rev, min/max rev full, reserved, hash appended
    ext = struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 0)
    body = hdr + ext + struct.pack("<II", 0x3FFB0000, len(payload)) + payload
    cs = 0xEF
    for b in payload:
        cs ^= b
    return body + b"\0" * ((15 - len(body) % 16) % 16) + bytes([cs])


def merged_image(chip_id=ESP32, boot_off=0x1000, app=None):
    """A MicroPython release image: bootloader, MicroPython's table, app at 0x10000."""
    out = bytearray(b"\xff" * (0x10000 - boot_off))
    boot = app_image(chip_id, b"bootloader" * 40)
    out[: len(boot)] = boot
    t = PT.build(PT.layout(4 * PT.MB)[:4])  # nvs, phy_init, factory, vfs: MicroPython's own
    out[0x8000 - boot_off : 0x8000 - boot_off + len(t)] = t
    return bytes(out) + (app or app_image(chip_id))


def run(*args, timeout=60):
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "liftcard_provisioning.cli"]
    with procs.running(
        procs.spawn(cmd + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ) as p:
        out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def one_line_error(r, code=2):
    """The error: exactly one line, the last (progress lines may come before it)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, r.stderr
    errors = [x for x in lines if x.startswith("liftcard-provision: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.stderr and "esptool" not in r.stderr
    return errors[0]


class Mock:
    def __init__(self, tmp_path, chip="esp32"):
        self.portfile = tmp_path / ("mock-%s.port" % chip)
        self.logpath = tmp_path / ("mock-%s.log" % chip)
        self.log = open(self.logpath, "w")
        argv = [MOCK] if MOCK.exists() else [sys.executable, "-c", "from esp32_mock_bootloader.cli import main; main()"]
        self.proc = procs.spawn(
            argv + ["run", "--chip", chip, "--bind", "127.0.0.1", "--port", "0", "--port-file", self.portfile],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.portfile.exists() and self.portfile.read_text().strip(), 30, "mock bootloader port")
        self.url = "socket://127.0.0.1:%s" % self.portfile.read_text().strip()

    def connections(self):
        return self.logpath.read_text().count("Connection from")

    def md5(self, off, size):
        from esptool import cmds

        with cmds.connect_esp(port=self.url, chip="auto") as esp:
            esp = cmds.run_stub(esp)
            got = esp.flash_md5sum(off, size)
        return bytes.fromhex(got) if isinstance(got, str) else got

    def stop(self):
        procs.stop(self.proc)
        self.log.close()


@pytest.fixture
def mock(tmp_path):
    m = Mock(tmp_path)
    try:
        yield m
    finally:
        m.stop()


def md5(b):
    return hashlib.md5(b).digest()


def test_flash_merged_image_writes_app_table_and_erased_ridelog(tmp_path, mock):
    img = tmp_path / "ESP32_GENERIC.bin"
    app = app_image(payload=os.urandom(40000))  # incompressible: several blocks, progress lines
    img.write_bytes(merged_image(app=app))
    r = run("flash", img, "--port", mock.url, "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["chip"] == "ESP32" and done["flash_size"] == "4MB" and done["merged"] is True
    cap = PT.capacity(4 * PT.MB)
    assert (done["max_cards"], done["max_rides"]) == (cap.max_cards, cap.max_rides)
    assert "write MicroPython at 0x10000" in r.stderr and "100%" in r.stderr
    # what the board now holds: our table (not MicroPython's), the app, ridelog erased
    table = PT.table(4 * PT.MB)
    assert mock.md5(PT.TABLE_OFFSET, PT.TABLE_LEN) == md5(table)
    assert mock.md5(0x10000, len(app)) == md5(app)
    log = PT.find(PT.layout(4 * PT.MB), "ridelog")
    assert mock.md5(log.offset, log.size) == md5(b"\xff" * log.size)


def test_flash_app_only_image(tmp_path, mock):
    img = tmp_path / "app.bin"
    app = app_image()
    img.write_bytes(app)
    r = run("flash", img, "--port", mock.url)
    assert r.returncode == 0, r.stderr
    assert "flashed" in r.stdout and "app only" in r.stderr and "bootloader" not in r.stderr
    assert mock.md5(0x10000, len(app)) == md5(app)
    assert mock.md5(PT.TABLE_OFFSET, PT.TABLE_LEN) == md5(PT.table(4 * PT.MB))


def test_wrong_chip_is_refused_before_any_write(tmp_path, mock):
    img = tmp_path / "ESP32_GENERIC_S3.bin"
    img.write_bytes(merged_image(ESP32S3, boot_off=0))
    line = one_line_error(run("flash", img, "--port", mock.url))
    assert "is built for ESP32-S3 but the board is an ESP32" in line and "nothing written" in line
    assert mock.md5(0, 0x20000) == md5(b"\xff" * 0x20000)  # the mock's flash starts erased


@pytest.mark.parametrize(
    "content, why",
    [
        (b"\x7fELF" + bytes(200), "not an ESP32 firmware image (the file starts with 0x7F, not 0xE9)"),
        (app_image()[:20], "too short for an ESP32 image"),
        (app_image()[:60], "truncated or corrupt"),
        (app_image(chip_id=0x77), "chip id 119"),
    ],
)
def test_bad_image_is_refused_without_touching_the_board(tmp_path, mock, content, why):
    img = tmp_path / "firmware.bin"
    img.write_bytes(content)
    assert why in one_line_error(run("flash", img, "--port", mock.url))
    assert mock.connections() == 0


def test_user_errors_are_one_line_exit_2(tmp_path):
    assert "not found" in one_line_error(run("flash", tmp_path / "nope.bin", "--port", "/dev/null"))
    assert "is a directory" in one_line_error(run("flash", tmp_path, "--port", "/dev/null"))
    img = tmp_path / "app.bin"
    img.write_bytes(app_image())
    assert "does not exist" in one_line_error(run("flash", img, "--port", tmp_path / "ttyNOPE"))
    r = run("flash")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    for bad in ("-1", "12", "fast"):
        r = run("flash", img, "--port", "/dev/null", "--baud", bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--baud" in r.stderr, r.stderr


def test_busy_port(tmp_path):
    img = tmp_path / "app.bin"
    img.write_bytes(app_image())
    master, slave = pty.openpty()
    try:
        held = serial.Serial(os.ttyname(slave), exclusive=True)
        try:
            line = one_line_error(run("flash", img, "--port", os.ttyname(slave)))
            assert "is busy" in line
        finally:
            held.close()
    finally:
        os.close(master)
        os.close(slave)


def test_nothing_answering_is_one_line_exit_1(tmp_path):
    img = tmp_path / "app.bin"
    img.write_bytes(app_image())
    master, slave = pty.openpty()
    try:
        line = one_line_error(run("flash", img, "--port", os.ttyname(slave), "--baud", "0", timeout=120), code=1)
        assert "no ESP32 bootloader answering" in line
    finally:
        os.close(master)
        os.close(slave)


# --- ports -------------------------------------------------------------------


def info(device, vid=None, pid=None, description="n/a", product=None, manufacturer=None):
    i = ListPortInfo(device, skip_link_detection=True)
    i.vid, i.pid, i.description, i.product, i.manufacturer = vid, pid, description, product, manufacturer
    return i


CP2102 = info("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller")
CH340_PN532 = info("/dev/ttyUSB1", 0x1A86, 0x7523, "USB Serial", product="PN532 NFC module")
NATIVE = info("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG/serial debug unit")
CH9102 = info("/dev/ttyACM1", 0x1A86, 0x55D4, "USB Single Serial")
ARDUINO = info("/dev/ttyACM9", 0x2341, 0x0043, "Arduino Uno")
BUILTIN = info("/dev/ttyS0")


def test_ports_are_classified():
    got = {p.device: (p.kind, p.bridge) for p in P.list_ports([CP2102, CH340_PN532, NATIVE, CH9102, ARDUINO, BUILTIN])}
    assert got == {
        "/dev/ttyUSB0": ("esp32", "CP210x"),
        "/dev/ttyUSB1": ("pn532", "CH340"),
        "/dev/ttyACM0": ("esp32", "Espressif USB-Serial/JTAG"),
        "/dev/ttyACM1": ("esp32", "CH9102"),
        "/dev/ttyACM9": (None, None),
        "/dev/ttyS0": (None, None),
    }
    for vidpid in [(0x0403, 0x6001), (0x0403, 0x6015)]:
        assert P.classify(info("/dev/ttyUSB7", *vidpid, "FT232R USB UART")).kind == "esp32"


def test_board_port_choice():
    assert P.board_port(None, P.list_ports([CP2102, CH340_PN532, ARDUINO])) == "/dev/ttyUSB0"
    assert P.board_port("/dev/ttyS3", []) == "/dev/ttyS3"
    with pytest.raises(P.PortError, match=r"^2 ESP32 boards found \(/dev/ttyACM0, /dev/ttyUSB0\): pass --port"):
        P.board_port(None, P.list_ports([CP2102, NATIVE]))
    with pytest.raises(P.PortError, match=r"^no ESP32 board found \(serial ports: /dev/ttyACM9, /dev/ttyUSB1\)"):
        P.board_port(None, P.list_ports([CH340_PN532, ARDUINO]))


def test_flash_without_port_uses_the_one_board_or_says_why(tmp_path, monkeypatch, capsys):
    img = tmp_path / "app.bin"
    img.write_bytes(app_image())
    for found, want in [([], "no ESP32 board found (serial ports: none)"), ([CP2102, NATIVE], "2 ESP32 boards found")]:
        monkeypatch.setattr(P, "comports", lambda found=found: found)
        assert cli.main(["flash", str(img)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and want in err[0]


def test_ports_json_and_text(monkeypatch, capsys):
    monkeypatch.setattr(P, "comports", lambda: [CP2102, CH340_PN532, ARDUINO])
    assert cli.main(["ports", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(d["device"], d["kind"], d["usb"]) for d in doc] == [
        ("/dev/ttyACM9", None, "2341:0043"),
        ("/dev/ttyUSB0", "esp32", "10C4:EA60"),
        ("/dev/ttyUSB1", "pn532", "1A86:7523"),
    ]
    assert cli.main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "<- ESP32 board (CP210x)" in out and "<- PN532 adapter (CH340)" in out
    r = run("ports", "--json")  # the machine's real ports, whatever they are
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)


def test_a_transfer_cut_mid_write_says_so_and_what_to_do(tmp_path, mock):
    """The cable pulled (here: the board's end gone) while MicroPython is being
    written: one line naming the interrupted transfer and the step, the
    board holding part of an image, and to flash again."""
    img = tmp_path / "ESP32_GENERIC.bin"
    img.write_bytes(merged_image(app=app_image(payload=os.urandom(1_200_000))))
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "liftcard_provisioning.cli"]
    p = procs.spawn(
        cmd + ["flash", str(img), "--port", mock.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with procs.running(p):
        seen = []
        for line in p.stderr:
            seen.append(line)
            if line.strip().endswith("%") and any("write MicroPython" in s for s in seen):
                break
        procs.kill(mock.proc)
        out, err = p.communicate(timeout=120)
    r = subprocess.CompletedProcess(p.args, p.returncode, out, "".join(seen) + err)
    line = one_line_error(r, code=1)
    assert "interrupted while writing MicroPython" in line and "run flash again" in line
