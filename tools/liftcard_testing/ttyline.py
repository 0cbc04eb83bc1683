"""A line client on a serial port or pty: the test port of a virtual serial
board (liftcard_testing.virtualboard) or of a real board's UART1. It speaks
the reader's line protocol (firmware/liftcard/lineproto.py) like
VirtualReader does over pipes; every wait has a generous deadline."""

from __future__ import annotations

import json
import os
import select
import termios
import time
import tty

from liftcard_protocol.ride import RideRecord


class TtyLines:
    def __init__(self, path: str, timeout: float = 30.0, baud: int = 115200):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        # The reader's test UART runs at 115200 (board_esp32); a pty ignores it.
        attrs = termios.tcgetattr(self.fd)
        attrs[4] = attrs[5] = getattr(termios, "B%d" % baud)
        attrs[2] |= termios.CLOCAL | termios.CREAD  # no modem lines on a USB-serial adapter's 3 wires
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.timeout = timeout
        self.buf = b""

    def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including marker (AssertionError after the timeout)."""
        end = time.monotonic() + self.timeout
        while marker not in self.buf:
            left = end - time.monotonic()
            assert left > 0, "no %r from the serial port in %gs (have %r)" % (marker, self.timeout, self.buf[-500:])
            if select.select([self.fd], [], [], left)[0]:
                self.buf += os.read(self.fd, 4096)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def readline(self) -> str:
        return self.read_until(b"\n")[:-1].decode(errors="replace")

    def until(self, prefix) -> list[str]:
        lines = []
        while True:
            lines.append(self.readline())
            if lines[-1].startswith(prefix):
                return lines

    def send(self, raw: bytes) -> None:
        os.write(self.fd, raw)

    def command(self, text: str) -> str:
        self.send(text.encode() + b"\n")
        return self.until(("OK", "ERR", "STATUS"))[-1].strip()

    def tap(self, card: int, floor: int = 0) -> RideRecord:
        self.send(b"TAP %016x %d\n" % (card, floor))
        line = self.until("RIDE ")[-1].split()
        return RideRecord.unpack(bytes.fromhex(line[1]))

    def dump(self, start: int = 1) -> list[RideRecord]:
        """The rides logged from seq `start` (DUMP)."""
        self.send(b"DUMP %d\n" % start)
        lines = self.until(("OK", "ERR"))
        assert lines[-1].startswith("OK"), lines[-1]
        return [RideRecord.unpack(bytes.fromhex(x.split()[1])) for x in lines if x.startswith("REC ")]

    def status(self) -> dict:
        return json.loads(self.command("STATUS")[len("STATUS ") :])

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
