# Links to a PN532, each with the interface pn532.PN532 uses:
#   write(buf, n)      send buf[0:n]
#   readinto(buf)      bytes from the chip now (0 when none); never blocks
#   wait(ms)           sleep until bytes may be there, at most ms
#   wake()             leave power-down (HSU: 55 55 00..)
#
# HostSerial: a serial port or pty on the unix port (the PN532 emulator).
# UartLink:   HSU on machine.UART (ESP32).
# I2cLink:    I2C on machine.I2C (ESP32), with the PN532's ready status byte.

import time
from micropython import const

from .pn532 import NACK, WAKEUP

_I2C_ADDR = const(0x24)


class HostSerial:
    # The pty is opened as a file; select.poll says when a byte is ready and
    # bytes are read one at a time (a blocking readinto would wait for a full
    # buffer). The emulator's side of the pty is raw already.

    def __init__(self, path):
        import select

        self._f = open(path, "r+b")
        try:
            import termios

            termios.setraw(self._f.fileno())
        except Exception:
            pass
        self._p = select.poll()
        self._p.register(self._f, select.POLLIN)
        self._b1 = bytearray(1)

    def write(self, buf, n):
        self._f.write(buf, n)

    def _ready(self, ms):
        for _ in self._p.ipoll(ms):
            return True
        return False

    def readinto(self, buf):
        n = 0
        b1 = self._b1
        while n < len(buf) and self._ready(0):
            if not self._f.readinto(b1):
                break
            buf[n] = b1[0]
            n += 1
        return n

    def wait(self, ms):
        self._ready(ms)

    def wake(self):
        self._f.write(WAKEUP)

    def close(self):
        self._f.close()


class UartLink:
    def __init__(self, uart):
        self._u = uart  # machine.UART(id, 115200, tx=.., rx=.., timeout=0)

    def write(self, buf, n):
        self._u.write(buf, n) if n < len(buf) else self._u.write(buf)

    def readinto(self, buf):
        if not self._u.any():
            return 0
        return self._u.readinto(buf) or 0

    def wait(self, ms):
        time.sleep_ms(1 if ms > 1 else ms)

    def wake(self):
        self._u.write(WAKEUP)
        time.sleep_ms(2)


class I2cLink:
    # Every I2C read starts with a status byte (bit 0: a frame is ready) and
    # then the frame from its first byte (UM0701-02 6.2.4). A 1-byte read
    # polls the status; a longer one takes the frame off the chip, so a frame
    # longer than the first read (1 + size bytes) is asked for again with a
    # NACK (the chip resends its last response) and read whole next time.
    # The frame lands in _buf and is handed out by readinto; a bus error
    # (the chip NAKs its address while busy) reads as "nothing yet".

    def __init__(self, i2c, addr=_I2C_ADDR, size=64):
        self._i2c = i2c
        self._addr = addr
        self._st = bytearray(1)
        self._small = bytearray(1 + size)
        self._big = bytearray(1 + 264 + 10)
        self._buf = self._small
        self._next = self._small  # the buffer of the next frame read
        self._pos = 0
        self._end = 0
        self._tx = memoryview(bytearray(264 + 10))

    def write(self, buf, n):
        tx = self._tx
        for i in range(n):
            tx[i] = buf[i]
        try:
            self._i2c.writeto(self._addr, tx[:n])
        except OSError:
            pass  # not taken: the driver's ACK wait times out and resends

    def readinto(self, buf):
        if self._pos >= self._end:
            self._pos = self._end = 0
            i2c = self._i2c
            b = self._next
            try:
                i2c.readfrom_into(self._addr, self._st)
                if not self._st[0] & 1:
                    return 0
                i2c.readfrom_into(self._addr, b)
            except OSError:
                return 0
            if not b[0] & 1:
                return 0
            # 00 00 FF LEN LCS: a long frame needs the long read
            if (
                b is self._small
                and b[1] == 0
                and b[2] == 0
                and b[3] == 0xFF
                and ((b[4] == 0xFF and b[5] == 0xFF) or (b[4] not in (0, 0xFF) and b[4] + 8 > len(b)))
            ):
                self._next = self._big
                try:
                    i2c.writeto(self._addr, NACK)
                except OSError:
                    pass
                return 0
            self._next = self._small
            self._buf = b
            self._pos = 1  # skip the status byte
            self._end = len(b)
        n = 0
        src = self._buf
        while n < len(buf) and self._pos < self._end:
            buf[n] = src[self._pos]
            n += 1
            self._pos += 1
        return n

    def wait(self, ms):
        time.sleep_ms(1 if ms > 1 else ms)

    def wake(self):
        # I2C wakes the chip by its address; give it the documented 1-2 ms.
        self._pos = self._end = 0
        self._next = self._small
        try:
            self._i2c.writeto(self._addr, b"\x00")
        except OSError:
            pass
        time.sleep_ms(2)
