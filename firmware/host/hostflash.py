# File-backed flash for the host board and the tests (host only: beside the
# liftcard package in firmware/host/, never on a board).
#
# BlockDev backs littlefs (vfs.VfsLfs2) with the extended block protocol, like
# esp32.Partition. NorFlash backs the raw ride-log partition and enforces NOR
# rules: a program may only turn bits 1 -> 0 and only a whole-sector erase turns
# them back, so code that would rewrite a programmed byte fails here as it would
# corrupt data on a real chip. Both count what a flash chip would spend (bytes
# programmed, sectors erased) and can "lose power" after a given number of
# writes, leaving the cut write half done.

from micropython import const

SECTOR = const(4096)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)
_CHUNK = const(256)


class PowerLoss(BaseException):
    # Not an Exception: no handler in the firmware may catch a power cut.
    pass


# Raised from inside littlefs callbacks, possibly from a finalizer run by the
# garbage collector with the heap locked: so it must not allocate.
_POWER_LOSS = PowerLoss("power cut")
_OK = const(0)
_TORN = const(1)  # this write is the one the cut interrupts: half done
_LOST = const(2)  # power is already off: the write never happens


class Rail:
    # The supply shared by the flash chips of one board: counts their writes
    # (programs and erases) and cuts power on write number cut_after + 1.
    def __init__(self, cut_after=-1):
        self.writes = 0
        self.cut_after = cut_after
        self.dead = False  # after the cut: every later write is silently lost


def create_image(path, size, fill=0xFF):
    blk = bytes([fill]) * _CHUNK
    with open(path, "wb") as f:
        for _ in range(size // _CHUNK):
            f.write(blk)


class _Flash:
    def __init__(self, path, size=None, rail=None):
        if size is not None:
            create_image(path, size)
        self.f = open(path, "r+b")
        self.nblocks = self.f.seek(0, 2) // SECTOR
        self.programmed = 0  # bytes programmed
        self.erased = 0  # sectors erased
        self.writes = 0  # program + erase operations
        self.reads = 0  # read operations
        self.rail = rail or Rail()
        self._tmp = bytearray(_CHUNK)
        self._views = {}

    def _budget(self):
        rail = self.rail
        if rail.dead:
            return _LOST
        if rail.cut_after >= 0 and rail.writes >= rail.cut_after:
            rail.dead = True
            return _TORN
        rail.writes += 1
        self.writes += 1
        return _OK

    def _view(self, k):
        # Cached views of the scratch buffer: the tap path must not allocate.
        v = self._views.get(k)
        if v is None:
            v = self._views[k] = memoryview(self._tmp)[:k]
        return v

    def readblocks(self, block, buf, off=0):
        self.reads += 1
        self.f.seek(block * SECTOR + off)
        self.f.readinto(buf)

    def _erase(self, block, torn=False):
        self.f.seek(block * SECTOR)
        ff = b"\xff" * _CHUNK
        n = SECTOR // _CHUNK
        if torn:
            n //= 2
        for _ in range(n):
            self.f.write(ff)
        self.f.flush()
        self.erased += 1

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.nblocks
        if op == _IOCTL_BLOCK_SIZE:
            return SECTOR
        if op == _IOCTL_BLOCK_ERASE:
            state = self._budget()
            if state == _LOST:
                raise _POWER_LOSS
            if state == _TORN:
                self._erase(arg, torn=True)
                raise _POWER_LOSS
            self._erase(arg)
            return 0
        return 0

    def close(self):
        self.f.close()


class BlockDev(_Flash):
    # Backs littlefs. littlefs erases before it programs, so programs are plain
    # writes; what matters here is the count and the power cut.

    def writeblocks(self, block, buf, off=None):
        if off is None:
            # Simple block protocol: erase then program the whole block.
            self.ioctl(_IOCTL_BLOCK_ERASE, block)
            off = 0
        n = len(buf)
        state = self._budget()
        if state == _LOST:
            raise _POWER_LOSS
        if state == _TORN:
            n //= 2
            self.f.seek(block * SECTOR + off)
            self.f.write(memoryview(buf)[:n])
            self.f.flush()
            self.programmed += n
            raise _POWER_LOSS
        self.f.seek(block * SECTOR + off)
        self.f.write(buf)
        self.f.flush()
        self.programmed += n


class NorError(Exception):
    pass


class NorFlash(_Flash):
    # A raw partition with NOR semantics (esp32.Partition's extended protocol:
    # writeblocks with an offset programs without erasing).

    def writeblocks(self, block, buf, off=None):
        if off is None:
            self.ioctl(_IOCTL_BLOCK_ERASE, block)
            off = 0
        n = len(buf)
        state = self._budget()
        if state == _LOST:
            raise _POWER_LOSS
        torn = state == _TORN
        if torn:
            n //= 2
        base = block * SECTOR + off
        done = 0
        while done < n:
            k = min(_CHUNK, n - done)
            cur = self._view(k)
            self.f.seek(base + done)
            self.f.readinto(cur)
            for i in range(k):
                old = cur[i]
                new = buf[done + i]
                if new & ~old & 0xFF:
                    raise NorError("program would set bits 1 at offset %d" % (base + done + i))
                cur[i] = old & new
            self.f.seek(base + done)
            self.f.write(cur)
            done += k
        self.f.flush()
        self.programmed += n
        if torn:
            raise _POWER_LOSS
