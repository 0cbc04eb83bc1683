# An I2C bus for tests on the unix port: the machine.I2C methods I2cLink uses
# (writeto, readfrom_into, readfrom), carried over the pty of the PN532
# emulator in I2C mode (PN532Emulator(i2c=True), bus transport in its module
# doc, u16 big-endian):
#   writeto(addr, buf)        ->  "W" LEN(2) buf          (no answer)
#   readfrom_into(addr, buf)  ->  "R" N(2), then exactly N bytes back
# Only the emulated chip's address answers; any other raises OSError(ENODEV)
# as a NAK'd address does on machine.I2C. Test code, not firmware.

import select

_ENODEV = 19
_ETIMEDOUT = 110


class PtyI2C:
    def __init__(self, path, addr=0x24, timeout_ms=3000):
        self._f = open(path, "r+b")
        try:
            import termios

            termios.setraw(self._f.fileno())
        except Exception:
            pass
        self._p = select.poll()
        self._p.register(self._f, select.POLLIN)
        self._addr = addr
        self._timeout = timeout_ms
        self._hdr = bytearray(3)
        # counters for the tests
        self.writes = 0
        self.reads = 0
        self.status_reads = 0  # 1-byte reads (the status alone)
        self.not_ready = 0  # reads whose status byte said "not ready"
        self.max_read = 0  # longest read asked for

    def _head(self, op, addr, n):
        if addr != self._addr:
            raise OSError(_ENODEV)
        h = self._hdr
        h[0] = op
        h[1] = n >> 8
        h[2] = n & 0xFF
        self._f.write(h)

    def writeto(self, addr, buf, stop=True):
        n = len(buf)
        self._head(0x57, addr, n)  # "W"
        self._f.write(buf)
        self.writes += 1
        return n

    def readfrom_into(self, addr, buf, stop=True):
        n = len(buf)
        self._head(0x52, addr, n)  # "R"
        for _ in self._p.ipoll(self._timeout):
            break
        else:
            raise OSError(_ETIMEDOUT)
        if self._f.readinto(buf) != n:  # blocks until the n bytes are in
            raise OSError(_ETIMEDOUT)
        self.reads += 1
        if n == 1:
            self.status_reads += 1
        if n > self.max_read:
            self.max_read = n
        if n and not buf[0] & 1:
            self.not_ready += 1

    def readfrom(self, addr, n, stop=True):
        buf = bytearray(n)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def close(self):
        self._f.close()
