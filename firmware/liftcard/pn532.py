# PN532 host driver (UM0701-02): frames, ACK/NACK, the commands a reader
# needs, and recovery when the chip stops answering. Model:
# provisioning/liftcard_provisioning/nfc/pcd.py; contract: docs/nfc.md "PN532 link".
#
#   normal   00 00 FF LEN LCS TFI DATA.. DCS 00
#   extended 00 00 FF FF FF LENM LENL LCS TFI DATA.. DCS 00
#   ACK 00 00 FF 00 FF 00   NACK 00 00 FF FF 00 00   error 00 00 FF 01 FF 7F 81 00
#
# The chip is reached through a link (pn532link.py: HSU on a UART or a host
# pty, or I2C) with write(buf, n), readinto(buf) -> n (never blocks),
# wait(ms) and wake(). Frames are decoded a byte at a time by a state machine
# that resynchronises on 00 FF, into preallocated buffers: polling for a card
# allocates nothing.

import time
from micropython import const

TFI_HOST = const(0xD4)
TFI_CHIP = const(0xD5)
MAX_BODY = const(264)  # TFI + data the PN532 handles (UM0701-02 6.2.1.2)

# what _frame() returns
F_NONE = const(0)
F_ACK = const(1)
F_NACK = const(2)
F_INFO = const(3)
F_ERROR = const(4)
F_BAD = const(5)

# decoder states
_S_IDLE = const(0)
_S_ZERO = const(1)
_S_LEN = const(2)
_S_LCS = const(3)
_S_XM = const(4)
_S_XL = const(5)
_S_XCS = const(6)
_S_BODY = const(7)
_S_DCS = const(8)

# offsets: DataOut of InDataExchange in `out`, DataIn in `rx`
DOUT = const(2)
DIN = const(3)
_DATA = const(2)  # response data after TFI and the response code

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
WAKEUP = b"\x55\x55" + bytes(14)


class PN532Error(Exception):
    # The chip did not answer, or answered the error frame (BAD_READ).
    pass


class LinkError(Exception):
    # InDataExchange status != 0: a radio error (args[0] = status & 0x3F).
    pass


class Garbage(Exception):
    # An answer of the wrong shape (CARD_GARBAGE).
    pass


def encode(tfi, data, n, out):
    # One information frame for data[0:n] into out; returns its length.
    body = n + 1
    s = tfi
    for i in range(n):
        s += data[i]
    out[0] = 0
    out[1] = 0
    out[2] = 0xFF
    if body <= 255:
        out[3] = body
        out[4] = (-body) & 0xFF
        p = 5
    else:
        lm = body >> 8
        ll = body & 0xFF
        out[3] = 0xFF
        out[4] = 0xFF
        out[5] = lm
        out[6] = ll
        out[7] = (-(lm + ll)) & 0xFF
        p = 8
    out[p] = tfi
    p += 1
    for i in range(n):
        out[p + i] = data[i]
    p += n
    out[p] = (-s) & 0xFF
    out[p + 1] = 0
    return p + 2


class Decoder:
    # Bytes in, frames out: feed(b) returns F_NONE until a frame is complete.
    # The body (TFI + data) of an information frame is in rx[0:n].

    def __init__(self, size=MAX_BODY):
        self.rx = bytearray(size)
        self.n = 0
        self.garbage = 0  # non-zero bytes skipped while resynchronising
        self._st = _S_IDLE
        self._a = 0
        self._len = 0
        self._sum = 0

    def reset(self):
        self._st = _S_IDLE

    def feed(self, b):
        st = self._st
        if st == _S_IDLE:
            if b == 0:
                self._st = _S_ZERO
            else:
                self.garbage += 1
        elif st == _S_ZERO:
            if b == 0xFF:
                self._st = _S_LEN
            elif b:
                self.garbage += 1
                self._st = _S_IDLE
        elif st == _S_LEN:
            self._a = b
            self._st = _S_LCS
        elif st == _S_LCS:
            a = self._a
            self._st = _S_IDLE
            if a == 0 and b == 0xFF:
                return F_ACK
            if a == 0xFF and b == 0:
                return F_NACK
            if a == 0xFF and b == 0xFF:
                self._st = _S_XM
            elif (a + b) & 0xFF or a == 0:
                return F_BAD
            else:
                return self._body(a)
        elif st == _S_XM:
            self._a = b
            self._st = _S_XL
        elif st == _S_XL:
            self._len = b
            self._st = _S_XCS
        elif st == _S_XCS:
            self._st = _S_IDLE
            if (self._a + self._len + b) & 0xFF:
                return F_BAD
            return self._body((self._a << 8) | self._len)
        elif st == _S_BODY:
            self.rx[self.n] = b
            self.n += 1
            self._sum += b
            if self.n == self._len:
                self._st = _S_DCS
        else:  # _S_DCS
            self._st = _S_IDLE
            if (self._sum + b) & 0xFF:
                return F_BAD
            if self.n == 1 and self.rx[0] == 0x7F:
                return F_ERROR
            return F_INFO
        return F_NONE

    def _body(self, n):
        if n == 0 or n > len(self.rx):
            return F_BAD
        self._len = n
        self.n = 0
        self._sum = 0
        self._st = _S_BODY
        return F_NONE


class PN532:
    def __init__(self, link, ack_ms=200, resp_ms=1000):
        self.link = link
        self.ack_ms = ack_ms
        self.resp_ms = resp_ms
        self.dec = Decoder()
        self.rx = self.dec.rx
        self.out = bytearray(MAX_BODY)  # command code + parameters
        self.tx = bytearray(MAX_BODY + 10)  # the encoded frame
        self._chunk = bytearray(64)
        self._cpos = 0
        self._clen = 0
        self.need_init = True
        # the current target (InListPassiveTarget)
        self.tg = 0
        self.atqa = 0
        self.sak = 0
        self.uid = bytearray(10)
        self.uid_len = 0
        self.ats_len = 0
        # counters (frames sent, recoveries)
        self.frames_out = 0
        self.naks = 0
        self.resends = 0
        self.inits = 0

    # ---- link ----

    def _write(self, buf, n):
        self.frames_out += 1
        self.link.write(buf, n)

    def _frame(self, timeout_ms):
        # The next frame from the chip, or F_NONE after timeout_ms.
        dec = self.dec
        chunk = self._chunk
        start = time.ticks_ms()
        while True:
            while self._cpos < self._clen:
                r = dec.feed(chunk[self._cpos])
                self._cpos += 1
                if r:
                    return r
            n = self.link.readinto(chunk)
            if n:
                self._cpos = 0
                self._clen = n
                continue
            left = timeout_ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0:
                return F_NONE
            self.link.wait(left)

    def _wait_ack(self):
        while True:
            r = self._frame(self.ack_ms)
            if r == F_ACK or r == F_NONE:
                return r == F_ACK
            # anything before the ACK is stale: keep looking

    def command(self, n, tries=3):
        # Sends out[0:n] (command code + parameters); returns the length of
        # the response data, which is in rx[_DATA:_DATA + length].
        cmd = self.out[0]
        flen = encode(TFI_HOST, self.out, n, self.tx)
        for i in range(tries):
            if i:
                self.resends += 1
            self._write(self.tx, flen)
            if self._wait_ack():
                break
        else:
            self.need_init = True
            raise PN532Error("no ACK")
        nacks = 0
        rx = self.rx
        while True:
            r = self._frame(self.resp_ms)
            if r == F_NONE:
                self._write(ACK, 6)  # abort the command
                self.need_init = True
                raise PN532Error("no answer")
            if r == F_BAD:
                if nacks >= 3:
                    self.need_init = True
                    raise PN532Error("checksum errors")
                nacks += 1
                self.naks += 1
                self._write(NACK, 6)
            elif r == F_ERROR:
                raise PN532Error("syntax error")
            elif r == F_INFO and self.dec.n >= 2 and rx[0] == TFI_CHIP and rx[1] == cmd + 1:
                return self.dec.n - _DATA
            # ACK, NACK, stale frames: skip

    # ---- chip commands ----

    def init(self, tries=3):
        # Wake-up (HSU) and configuration; again after any time-out.
        self.inits += 1
        self.dec.reset()
        self._cpos = self._clen = 0
        self.link.wake()
        o = self.out
        o[0] = 0x14  # SAMConfiguration: normal mode, timeout 1 s, IRQ
        o[1] = 0x01
        o[2] = 0x14
        o[3] = 0x01
        self.command(4, tries)
        o[0] = 0x02  # GetFirmwareVersion
        if self.command(1, tries) != 4 or self.rx[_DATA] != 0x32:
            self.need_init = True
            raise PN532Error("not a PN532")
        o[0] = 0x32  # RFConfiguration MaxRetries: ATR FF, PSL 01, passive activation once
        o[1] = 0x05
        o[2] = 0xFF
        o[3] = 0x01
        o[4] = 0x00
        self.command(5, tries)
        o[1] = 0x02  # timings: RFU, ATR_RES 0B, InDataExchange time-out 0A (~51 ms)
        o[2] = 0x00
        o[3] = 0x0B
        o[4] = 0x0A
        self.command(5, tries)
        self.need_init = False

    def list_target(self):
        # InListPassiveTarget, one target, 106 kbps type A. True when a card
        # was activated: tg, atqa, sak, uid[0:uid_len], ats_len are set.
        o = self.out
        o[0] = 0x4A
        o[1] = 0x01
        o[2] = 0x00
        n = self.command(3)
        rx = self.rx
        if n < 1 or rx[_DATA] == 0:
            return False
        if n < 6:
            raise Garbage("short target")
        self.tg = rx[3]
        self.atqa = (rx[4] << 8) | rx[5]
        self.sak = rx[6]
        k = rx[7]
        if k not in (4, 7, 10) or n < 6 + k:
            raise Garbage("bad UID length")
        uid = self.uid
        for i in range(k):
            uid[i] = rx[8 + i]
        self.uid_len = k
        rest = n - 6 - k
        self.ats_len = 0
        if self.sak & 0x20:
            if rest < 1 or rx[8 + k] != rest:
                raise Garbage("bad ATS")
            self.ats_len = rest
        return True

    def exchange(self, n):
        # InDataExchange with DataOut in out[DOUT:DOUT + n] for the current
        # target; returns the DataIn length (DataIn in rx[DIN:]).
        o = self.out
        o[0] = 0x40
        o[1] = self.tg
        r = self.command(DOUT + n)
        if r < 1:
            raise PN532Error("empty InDataExchange answer")
        st = self.rx[_DATA] & 0x3F
        if st:
            raise LinkError(st)
        return r - 1

    def release(self):
        o = self.out
        o[0] = 0x52
        o[1] = 0x00
        self.command(2)

    def same_uid(self, uid, n):
        if n != self.uid_len:
            return False
        for i in range(n):
            if uid[i] != self.uid[i]:
                return False
        return True
