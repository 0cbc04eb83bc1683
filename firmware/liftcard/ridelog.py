# The ride log on a raw NOR partition (docs/formats.md, "Ride log partition").
#
# littlefs would copy a 4 KB block and often erase a sector for every appended
# record; here a tap programs exactly one 32-byte slot at an offset and never
# erases. Sectors ahead of the head are erased while idle, and only once every
# record in them is acknowledged: nothing unacknowledged is ever overwritten.

import struct
from array import array
from micropython import const

from . import u32
from .crc import crc16

SECTOR = const(4096)
SLOT = const(32)
SLOTS = const(128)
JOURNAL = const(2)
_JENTRY = const(8)
_JSLOTS = const(512)
_KIND_ACK = const(0x41)
_ERASE_AHEAD = const(2)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_ERASE = const(6)
_CHUNK = const(256)

CLEAN = const(0)  # erased: every byte 0xFF
USED = const(1)  # holds records
DIRTY = const(2)  # garbage or an interrupted erase: erase before use

_FF_SLOT = b"\xff" * SLOT
_FF_CHUNK = b"\xff" * _CHUNK


class LogError(Exception):
    pass


def valid(buf, off=0):
    c = crc16(buf, off, off + 30)
    return buf[off + 30] == c >> 8 and buf[off + 31] == c & 0xFF


def pack(rec, time, uptime, card, household, floor, fee, result, flags, boot):
    # Fills a 32-byte ride record (docs/formats.md) but for seq and CRC, which
    # seal() stamps as the record goes to flash. No allocation.
    rec[0] = rec[1] = rec[2] = rec[3] = 0
    u32.put(rec, 4, time)
    u32.put(rec, 8, uptime)
    for i in range(8):
        rec[12 + i] = card[i]
    rec[20] = household >> 16
    rec[21] = (household >> 8) & 0xFF
    rec[22] = household & 0xFF
    rec[23] = floor
    rec[24] = fee >> 8
    rec[25] = fee & 0xFF
    rec[26] = result
    rec[27] = flags
    rec[28] = boot >> 8
    rec[29] = boot & 0xFF


def seal(rec, seq):
    u32.put(rec, 0, seq)
    c = crc16(rec, 0, 30)
    rec[30] = c >> 8
    rec[31] = c & 0xFF


def seq_of(buf, off=0):
    return u32.get(buf, off)


class RideLog:
    def __init__(self, dev):
        self.dev = dev
        n = dev.ioctl(_IOCTL_BLOCK_COUNT, 0) - JOURNAL
        if n < 4:
            raise LogError("log partition too small")
        self.nsec = n
        self.first = array("I", bytes(4 * n))
        self.last = array("I", bytes(4 * n))
        self.state = bytearray(n)
        self.acked = 0
        self.next_seq = 1
        self.head = 0
        self.slot = 0
        self.full = False
        self.reclaim_limit = 0  # the reader lowers it to its spend checkpoint
        self.erases = 0
        self.forced_erases = 0  # erases a tap had to wait for (idle fell behind)
        self.newest_time = 0
        self._jsec = 0
        self._jslot = 0
        self._slotbuf = bytearray(SLOT)
        self._chunk = bytearray(_CHUNK)
        self._ent = bytearray(_JENTRY)

    @property
    def capacity(self):
        return (self.nsec - 1) * SLOTS

    @property
    def last_seq(self):
        return self.next_seq - 1

    @property
    def backlog(self):
        return self.next_seq - 1 - self.acked

    @property
    def oldest_seq(self):
        # The lowest seq still on flash (next_seq when it holds none): what a
        # RESEND can still bring back. Off the tap path (the heartbeat).
        lo = self.next_seq
        for s in range(self.nsec):
            if self.state[s] == USED and self.first[s] < lo:
                lo = self.first[s]
        return lo

    # ---- boot ----

    def mount(self):
        best = self.scan()
        if best < 0 and self.state[0] != CLEAN:
            self._erase(0)

    def scan(self):
        # Reads the journal and every sector, writing nothing: acked, next_seq
        # and backlog are then the log's (the technicians' tool reads them so
        # over USB, docs/technicians.md). Returns the head sector, -1 if none.
        self._scan_journal()
        best = -1
        for s in range(self.nsec):
            self._scan_sector(s)
            if self.state[s] == USED and (best < 0 or self.last[s] > self.last[best]):
                best = s
        self.full = False
        if best < 0:
            self.head = 0
            self.slot = 0
            self.next_seq = self.acked + 1
        else:
            self.head = best
            self.slot = self._used_slots(best)
            self.next_seq = max(self.last[best], self.acked) + 1
            self._read_slot(best, self._last_valid_slot(best))
            self.newest_time = struct.unpack_from(">I", self._slotbuf, 4)[0]
        return best

    def _read_slot(self, s, k):
        self.dev.readblocks(s + JOURNAL, self._slotbuf, k * SLOT)
        return self._slotbuf

    def _is_erased_slot(self, s, k):
        return self._read_slot(s, k) == _FF_SLOT

    def _used_slots(self, s):
        # Slots are programmed in order, so the programmed ones form a prefix.
        lo, hi = 0, SLOTS
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._is_erased_slot(s, mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _last_valid_slot(self, s):
        k = self._used_slots(s) - 1
        while k >= 0:
            if valid(self._read_slot(s, k)):
                return k
            k -= 1
        return -1

    def _scan_sector(self, s):
        blk = s + JOURNAL
        if self._is_erased_slot(s, 0):
            for c in range(SECTOR // _CHUNK):
                self.dev.readblocks(blk, self._chunk, c * _CHUNK)
                if self._chunk != _FF_CHUNK:
                    self.state[s] = DIRTY
                    return
            self.state[s] = CLEAN
            return
        used = self._used_slots(s)
        first = -1
        for k in range(used):
            if valid(self._read_slot(s, k)):
                first = k
                break
        if first < 0:
            self.state[s] = DIRTY
            return
        self.first[s] = seq_of(self._slotbuf)
        self.last[s] = seq_of(self._read_slot(s, self._last_valid_slot(s)))
        self.state[s] = USED

    def _scan_journal(self):
        best = 0
        where = 0
        used = [0, 0]
        ent = self._ent
        for j in range(JOURNAL):
            for k in range(_JSLOTS):
                self.dev.readblocks(j, ent, k * _JENTRY)
                if ent == b"\xff" * _JENTRY:
                    break
                used[j] = k + 1
                c = crc16(ent, 0, 6)
                if ent[0] == _KIND_ACK and ent[6] == c >> 8 and ent[7] == c & 0xFF:
                    v = seq_of(ent, 2)
                    if v > best:
                        best = v
                        where = j
        self.acked = best
        self._jsec = where
        self._jslot = used[where]

    # ---- the tap path: one 32-byte program, no allocation ----

    def append(self, rec):
        # rec: 32-byte buffer, every field set but seq and crc. Returns False
        # when the log is full (the next sector still holds unacked records).
        if self.slot >= SLOTS and not self._advance():
            return False
        seq = self.next_seq
        seal(rec, seq)
        h = self.head
        self.dev.writeblocks(h + JOURNAL, rec, self.slot * SLOT)
        if self.slot == 0:
            self.first[h] = seq
            self.state[h] = USED
        self.last[h] = seq
        self.slot += 1
        self.next_seq = seq + 1
        return True

    def _advance(self):
        nxt = self.head + 1
        if nxt == self.nsec:
            nxt = 0
        if self.state[nxt] != CLEAN:
            if not self._reclaimable(nxt):
                self.full = True
                return False
            self.forced_erases += 1
            self._erase(nxt)
        self.full = False
        self.head = nxt
        self.slot = 0
        return True

    # ---- housekeeping while idle ----

    def _reclaimable(self, s):
        if s == self.head:
            return False
        st = self.state[s]
        if st != USED:
            return True
        return self.last[s] <= self.acked and self.last[s] <= self.reclaim_limit

    def _erase(self, s):
        self.dev.ioctl(_IOCTL_BLOCK_ERASE, s + JOURNAL)
        self.state[s] = CLEAN
        self.first[s] = 0
        self.last[s] = 0
        self.erases += 1

    def maintain(self):
        # Erase at most one sector ahead of the head; True if it did (the
        # caller spaces erases out so none lands on a tap).
        s = self.head
        for _ in range(_ERASE_AHEAD):
            s += 1
            if s == self.nsec:
                s = 0
            if self.state[s] != CLEAN:
                if self._reclaimable(s):
                    self._erase(s)
                    if self.full:
                        self.full = False
                    return True
                return False
        return False

    def needs_reclaim_beyond(self, seq):
        # True when the sector after the head is held back only by `seq` (a
        # checkpoint older than the acknowledged records).
        s = self.head + 1
        if s == self.nsec:
            s = 0
        return self.state[s] == USED and self.last[s] <= self.acked and self.last[s] > seq

    # ---- acknowledgements ----

    def ack(self, upto):
        # The gateway holds every record up to `upto`. Idempotent.
        if upto <= self.acked:
            return False
        if upto >= self.next_seq:
            raise LogError("ack %d is beyond the last record %d" % (upto, self.next_seq - 1))
        if self._jslot >= _JSLOTS:
            other = 1 - self._jsec
            self.dev.ioctl(_IOCTL_BLOCK_ERASE, other)
            self.erases += 1
            self._jsec = other
            self._jslot = 0
        ent = self._ent
        struct.pack_into(">BBI", ent, 0, _KIND_ACK, 0, upto)
        c = crc16(ent, 0, 6)
        ent[6] = c >> 8
        ent[7] = c & 0xFF
        self.dev.writeblocks(self._jsec, ent, self._jslot * _JENTRY)
        self._jslot += 1
        self.acked = upto
        return True

    # ---- reading back (uplink, harvest, boot replay) ----

    def records(self, from_seq=1):
        # Yields a 32-byte buffer (reused) for every valid record with
        # seq >= from_seq, in seq order.
        start = -1
        for s in range(self.nsec):
            if self.state[s] == USED and self.last[s] >= from_seq:
                if start < 0 or self.first[s] < self.first[start]:
                    start = s
        if start < 0:
            return
        buf = bytearray(SLOT)
        s = start
        while True:
            if self.state[s] == USED and self.last[s] >= from_seq:
                for k in range(SLOTS):
                    self.dev.readblocks(s + JOURNAL, buf, k * SLOT)
                    if buf == _FF_SLOT:
                        break
                    if valid(buf) and seq_of(buf) >= from_seq:
                        yield buf
            if s == self.head:
                return
            s += 1
            if s == self.nsec:
                s = 0
