"""How the suite reaches a reader board: the one thing that differs between
the virtual serial board and a real ESP32. The scenarios (test_path.py) see
only this interface:

- ``flash_target()``: a context giving (image, port) for `liftcard-provision
  flash`: on a real board its MicroPython release image and its USB port; on
  the virtual board a small well-formed ESP32 image and esp32-mock-bootloader
  (the ROM's SLIP protocol on a socket), since a pty cannot take esptool;
- ``power_up()``: the board as `flash` leaves it (MicroPython, nothing of
  ours on the filesystem; a fresh, erased ride log): sets ``usb`` (the REPL,
  what every other verb takes as --port) and ``test`` (the line protocol:
  UART1 through a USB-serial adapter, the second pty on the virtual board);
- ``cut()``: the power goes at whatever instant it is called and comes back
  (virtual: SIGKILL and a cold boot on the same images; real: EN pulled low
  through the USB bridge's RTS, the auto-reset circuit esptool uses);
- ``uplink_host``, ``listen``, ``wifi_ssid``: where the reader finds the
  gateway's broker, where the broker listens, the Wi-Fi the reader joins
  (its password from LIFTCARD_WIFI_PASSWORD, as configure takes it).
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
import time
from pathlib import Path

from liftcard_provisioning import partitions as PT
from liftcard_testing import procs
from liftcard_testing.virtualboard import VirtualBoard
from liftcard_testing.wait import wait_for


class VirtualAccess:
    name = "virtual"
    uplink_host = listen = "127.0.0.1"
    wifi_ssid = None

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.board: VirtualBoard | None = None
        self.usb = self.test = None

    @contextlib.contextmanager
    def flash_target(self):
        image = self.dir / "ESP32_GENERIC-mock.bin"
        image.write_bytes(merged_image())
        mock = MockBootloader(self.dir)
        try:
            yield image, mock.url
        finally:
            mock.stop()

    def power_up(self) -> None:
        self.board = VirtualBoard(self.dir / "board", blank=True)
        self.usb, self.test = self.board.usb, self.board.test

    def cut(self) -> None:
        self.board.power_off()
        self.board.power_on()

    def close(self) -> None:
        if self.board is not None:
            self.board.stop()


class SerialAccess:
    name = "serial"

    def __init__(self, port: str, test_port: str, image: str, gateway_host: str, wifi_ssid: str):
        self.usb, self.test = port, test_port
        self.image = image
        self.uplink_host = gateway_host
        self.listen = "0.0.0.0"  # the reader comes in over Wi-Fi
        self.wifi_ssid = wifi_ssid

    @contextlib.contextmanager
    def flash_target(self):
        yield self.image, self.usb

    def power_up(self) -> None:
        # A fresh MicroPython formats its filesystem at its first boot: a
        # Ctrl-C from the next command must not land in that, so wait for the
        # REPL's prompt (a blank filesystem runs no main.py).
        self._reset(until=b">>> ")

    def cut(self) -> None:
        self._reset()

    def _reset(self, until: bytes | None = None, timeout: float = 60.0) -> None:
        import serial

        s = serial.Serial()
        s.port, s.baudrate, s.timeout = self.usb, 115200, 0.5
        # Set before the port opens: opening asserts both lines otherwise, and
        # DTR with RTS is the bridge's way into the ROM bootloader.
        s.dtr = False  # GPIO0 high: a normal boot
        s.rts = False
        s.open()
        try:
            s.rts = True  # EN low: the chip stops wherever it is
            time.sleep(0.2)  # long enough a pulse for the EN capacitor
            s.rts = False
            seen = b""
            end = time.monotonic() + timeout
            while until is not None and until not in seen:
                assert time.monotonic() < end, "no %r from %s after a reset: %r" % (until, self.usb, seen[-200:])
                seen = (seen + s.read(256))[-4096:]
        finally:
            s.close()

    def close(self) -> None:
        pass


# ---- the virtual board's stand-ins for flashing ----

MOCK = Path(sys.executable).with_name("esp32-mock-bootloader")


class MockBootloader:
    """esp32-mock-bootloader on a free loopback port (esptool's socket://)."""

    def __init__(self, workdir: Path):
        self.portfile = workdir / "mock.port"
        self.log = open(workdir / "mock.log", "w")
        argv = (
            [str(MOCK)]
            if MOCK.exists()
            else [sys.executable, "-c", "from esp32_mock_bootloader.cli import main; main()"]
        )
        self.proc = procs.spawn(
            argv + ["run", "--chip", "esp32", "--bind", "127.0.0.1", "--port", "0", "--port-file", str(self.portfile)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.portfile.exists() and self.portfile.read_text().strip(), 30, "mock bootloader port")
        self.url = "socket://127.0.0.1:%s" % self.portfile.read_text().strip()

    def stop(self) -> None:
        procs.stop(self.proc)
        self.log.close()


def _app_image(payload: bytes) -> bytes:
    """A well-formed ESP32 app image (header, extended header, one segment,
    checksum): what flash checks, not something a chip could run."""
    payload += b"\0" * (-len(payload) % 4)
    hdr = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40080000)
    ext = struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", 0, 0, 0, 0xFFFF, b"\0" * 4, 0)  # chip id 0: ESP32
    body = hdr + ext + struct.pack("<II", 0x3FFB0000, len(payload)) + payload
    cs = 0xEF
    for b in payload:
        cs ^= b
    return body + b"\0" * ((15 - len(body) % 16) % 16) + bytes([cs])


def merged_image() -> bytes:
    """A MicroPython-release-shaped merged image: bootloader at 0x1000,
    MicroPython's own partition table, the app at 0x10000."""
    out = bytearray(b"\xff" * (0x10000 - 0x1000))
    boot = _app_image(b"bootloader" * 40)
    out[: len(boot)] = boot
    t = PT.build(PT.layout(4 * PT.MB)[:4])
    out[0x8000 - 0x1000 : 0x8000 - 0x1000 + len(t)] = t
    return bytes(out) + _app_image(b"micropython-stand-in" * 100)
