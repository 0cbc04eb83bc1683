"""Reference PCD: the PN532 host driver over a serial port (pty or USB),
docs/nfc.md "PN532 link". The MicroPython driver follows this model.

    pn = PN532(path)                      # os.open + termios raw, select() timeouts
    pn.init()                             # wake-up, SAMConfiguration, RFConfiguration
    t = pn.list_target()                  # -> Target(tg, atqa, sak, uid, ats) or None
    answer = pn.exchange(t.tg, data)      # InDataExchange; LinkError on a radio error
    pn.release()

The tap procedure on top of it is tap.Reader; the technicians' tool puts the
same driver on a pyserial port (cli.SerialPN532).
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from dataclasses import dataclass

from . import frames as Fr


class PN532Error(Exception):
    pass


class PN532Timeout(PN532Error):
    """The chip did not ACK or answer in time."""


class LinkError(Exception):
    """InDataExchange reported a non-zero status (radio problem, card gone)."""

    def __init__(self, status: int):
        super().__init__("PN532 status %02X" % status)
        self.status = status


@dataclass(frozen=True)
class Target:
    tg: int
    atqa: int
    sak: int
    uid: bytes
    ats: bytes | None

    @property
    def iso_dep(self) -> bool:
        return bool(self.sak & 0x20)


class PN532:
    def __init__(self, path: str, ack_timeout: float = 0.2, resp_timeout: float = 1.0):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[4] = attrs[5] = termios.B115200
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        except termios.error:
            pass
        self.reader = Fr.FrameReader()
        self.ack_timeout, self.resp_timeout = ack_timeout, resp_timeout
        self.need_init = True
        self.sent_frames = self.sent_bytes = self.recv_frames = 0
        self.naks = 0

    def close(self) -> None:
        os.close(self.fd)

    # -- link --
    def _write(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        self.sent_frames += 1
        os.write(self.fd, data)

    def _next_frame(self, deadline: float):
        while True:
            f = self.reader.pop()
            if f is not None:
                self.recv_frames += 1
                return f
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    self.reader.feed(os.read(self.fd, 512))
                except BlockingIOError:
                    pass

    def command(self, cmd: int, params: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one command, wait for the ACK (resend up to twice), then the
        response (NACK up to 3 times on a checksum error). -> response data
        after the response code (cmd + 1)."""
        frame = Fr.encode(Fr.TFI_HOST, bytes([cmd]) + bytes(params))
        for attempt in range(3):
            self._write(frame)
            f = self._wait_ack()
            if f:
                break
        else:
            self.need_init = True
            raise PN532Timeout("no ACK for command %02X" % cmd)
        deadline = time.monotonic() + (self.resp_timeout if timeout is None else timeout)
        nacks = 0
        while True:
            f = self._next_frame(deadline)
            if f is None:
                self._write(Fr.ACK)  # abort the command
                self.need_init = True
                raise PN532Timeout("no response to command %02X" % cmd)
            if f.kind == "bad":
                if nacks >= 3:
                    self.need_init = True
                    raise PN532Error("repeated checksum errors")
                nacks += 1
                self.naks += 1
                self._write(Fr.NACK)
                continue
            if f.kind == "error":
                raise PN532Error("PN532 error frame (syntax) for command %02X" % cmd)
            if f.kind != "info":
                continue
            if f.tfi != Fr.TFI_CHIP or not f.data or f.data[0] != cmd + 1:
                continue  # a stale frame: skip it
            return f.data[1:]

    def _wait_ack(self) -> bool:
        deadline = time.monotonic() + self.ack_timeout
        while True:
            f = self._next_frame(deadline)
            if f is None:
                return False
            if f.kind == "ack":
                return True
            # anything else before the ACK is stale; keep looking

    # -- chip commands --
    def init(self) -> None:
        """Wake-up (HSU) and configure. Called again after any chip time-out."""
        self.reader = Fr.FrameReader()
        os.write(self.fd, Fr.WAKEUP)
        self.command(0x14, b"\x01\x14\x01")  # SAMConfiguration: normal mode, timeout 1 s, use IRQ
        fw = self.command(0x02)
        if len(fw) != 4 or fw[0] != 0x32:
            raise PN532Error("not a PN532")
        self.command(0x32, b"\x05\xff\x01\x00")  # MaxRetries: ATR FF, PSL 01, PassiveActivation 00 (once)
        self.command(0x32, b"\x02\x00\x0b\x0a")  # timings: RFU, ATR_RES 0B, InDataExchange timeout 0A (~51 ms)
        self.need_init = False

    def list_target(self) -> Target | None:
        r = self.command(0x4A, b"\x01\x00")
        if not r or r[0] == 0:
            return None
        try:
            tg, atqa, sak, n = r[1], int.from_bytes(r[2:4], "big"), r[4], r[5]
            uid = bytes(r[6 : 6 + n])
            rest = r[6 + n :]
            if len(uid) != n or n not in (4, 7, 10):
                raise IndexError
        except IndexError:
            raise PN532Error("malformed InListPassiveTarget answer") from None
        ats = None
        if sak & 0x20:
            if not rest or rest[0] != len(rest):
                raise PN532Error("malformed ATS")
            ats = bytes(rest)
        return Target(tg, atqa, sak, uid, ats)

    def exchange(self, tg: int, data: bytes) -> bytes:
        r = self.command(0x40, bytes([tg]) + bytes(data))
        if not r:
            raise PN532Error("empty InDataExchange answer")
        if r[0] & 0x3F:
            raise LinkError(r[0] & 0x3F)
        return bytes(r[1:])

    def release(self) -> None:
        self.command(0x52, b"\x00")
