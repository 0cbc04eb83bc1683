"""PN532 frame codec (UM0701-02 section 6.2.1, HSU/UART link).

    normal information frame   00 00 FF LEN LCS TFI PD0..PDn DCS 00
    extended information frame 00 00 FF FF FF LENM LENL LCS TFI PD0..PDn DCS 00
    ACK                        00 00 FF 00 FF 00
    NACK                       00 00 FF FF 00 00
    error frame                00 00 FF 01 FF 7F 81 00

LEN counts TFI + data (1..255); LEN + LCS = 0 (mod 256); TFI + PD0 + ... +
PDn + DCS = 0 (mod 256). In an extended frame LENM:LENL is big-endian and
LENM + LENL + LCS = 0 (mod 256). TFI is D4 host -> PN532 and D5 PN532 -> host.

`FrameReader` is an incremental decoder that resynchronises on the start
code 00 FF, so garbage before a frame is skipped (and its non-zero bytes counted).
"""

from __future__ import annotations

from dataclasses import dataclass

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")
WAKEUP = b"\x55\x55" + bytes(14)  # HSU wake-up: 55 55 then zeros (UM0701-02 7.2.11 / 6.3.2)
TFI_HOST = 0xD4
TFI_CHIP = 0xD5
MAX_NORMAL = 255  # LEN (TFI + data) fits one byte
MAX_DATA = 264  # largest TFI+data the PN532 buffer handles (UM0701-02 6.2.1.2)


def encode(tfi: int, data: bytes) -> bytes:
    """One information frame; extended form when TFI+data > 255 bytes."""
    body = bytes([tfi]) + bytes(data)
    n = len(body)
    dcs = (-sum(body)) & 0xFF
    if n <= MAX_NORMAL:
        return b"\x00\x00\xff" + bytes([n, (-n) & 0xFF]) + body + bytes([dcs, 0])
    if n > 0xFFFF:
        raise ValueError("frame too long")
    lm, ll = n >> 8, n & 0xFF
    return b"\x00\x00\xff\xff\xff" + bytes([lm, ll, (-(lm + ll)) & 0xFF]) + body + bytes([dcs, 0])


@dataclass(frozen=True)
class Frame:
    kind: str  # "info", "ack", "nack", "error", "bad" (checksum wrong)
    tfi: int = 0
    data: bytes = b""
    raw: bytes = b""
    why: str = ""


class FrameReader:
    """Feed bytes, pop frames. Garbage before a start code is discarded and
    counted in `skipped`. A frame whose LCS or DCS is wrong comes out as
    kind "bad" (the caller decides: the host sends NACK, the PN532 ignores it)."""

    def __init__(self):
        self.buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> None:
        self.buf += data

    def _skip(self, n: int) -> None:
        # zero bytes are idle fill (preamble, postamble, wake-up padding): not garbage
        self.skipped += n - self.buf[:n].count(0)
        del self.buf[:n]

    def pop(self) -> Frame | None:
        buf = self.buf
        while True:
            i = buf.find(b"\x00\xff")
            if i < 0:
                keep = 1 if buf[-1:] == b"\x00" else 0
                self._skip(len(buf) - keep)
                return None
            # the preamble 00 before 00 FF is optional on receive; anything else before is garbage
            pre = i - 1 if i >= 1 and buf[i - 1] == 0 else i
            if pre:
                self._skip(pre)
                continue
            s = i + 2  # first byte after the start code
            if len(buf) < s + 2:
                return None
            a, b = buf[s], buf[s + 1]
            if a == 0x00 and b == 0xFF:
                raw = bytes(buf[: s + 3]) if len(buf) >= s + 3 else bytes(buf[: s + 2])
                del buf[: s + 2]
                if buf[:1] == b"\x00":  # postamble
                    del buf[:1]
                return Frame("ack", raw=raw)
            if a == 0xFF and b == 0x00:
                raw = bytes(buf[: s + 2])
                del buf[: s + 2]
                if buf[:1] == b"\x00":
                    del buf[:1]
                return Frame("nack", raw=raw)
            if a == 0xFF and b == 0xFF:  # extended
                if len(buf) < s + 5:
                    return None
                lm, ll, lcs = buf[s + 2], buf[s + 3], buf[s + 4]
                if (lm + ll + lcs) & 0xFF:
                    self._skip(s)  # drop up to the bad header; resync
                    return Frame("bad", why="extended length checksum")
                n, start = (lm << 8) | ll, s + 5
            else:
                n, lcs = a, b
                if (n + lcs) & 0xFF:
                    self._skip(s)
                    return Frame("bad", why="length checksum")
                start = s + 2
            end = start + n + 1  # body + DCS
            if len(buf) < end:
                return None
            body, dcs = bytes(buf[start : start + n]), buf[start + n]
            raw_end = end + 1 if len(buf) > end and buf[end] == 0 else end
            raw = bytes(buf[:raw_end])
            del buf[:raw_end]
            if (sum(body) + dcs) & 0xFF:
                return Frame("bad", raw=raw, why="data checksum")
            if n == 1 and body[0] == 0x7F:
                return Frame("error", raw=raw)
            if n == 0:
                return Frame("bad", raw=raw, why="empty frame")
            return Frame("info", tfi=body[0], data=body[1:], raw=raw)
