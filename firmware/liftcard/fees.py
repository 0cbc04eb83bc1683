# The building's tariff applied to one tap (docs/formats.md, "Fee rules").
#
# Integer fen only. decide() computes the outcome without changing any state;
# commit() applies it once the ride record is durable, so a power cut between
# the two can never charge a ride that was not logged. State lives in
# preallocated arrays: the tap path allocates nothing.

import struct
from array import array
from micropython import const

from . import atomic, codes, u32
from .crc import crc16

_DEBOUNCE_SLOTS = const(16)
_MAX_FLOORS = const(16)
HOUSEHOLD_SLOTS = const(1024)
_HOUSEHOLD_LIMIT = const(768)  # keep the open-addressing table at most 3/4 full
_NO_FLOOR = const(0xFF)
_NO_END = const(0xFFFF)
_DAYS_1970_TO_EPOCH = const(19723)  # 2024-01-01 in days since 1970-01-01
CHECKPOINT = "spend.bin"
_CHECKPOINT_NEW = "spend.new"


def month_of_day(day):
    # Local day since the liftcard epoch -> year*100 + month (civil calendar,
    # Howard Hinnant's days_from_civil inverse; integers only).
    z = day + _DAYS_1970_TO_EPOCH + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y * 100 + m


class Fees:
    # Tables are allocated once per reader and reused by every configure():
    # a config change at run time needs no new large contiguous blocks.
    def __init__(self, ticks_diff):
        self._ticks_diff = ticks_diff
        self.fee_by_floor = array("H", bytes(2 * _MAX_FLOORS))
        self.free_classes = 0
        self.cap = 0
        self.window_ms = 0
        self.floors = 0
        self.ground = 0
        self.utc_offset_s = 0
        # Recently granted cards, for the debounce window.
        self._dcard = bytearray(8 * _DEBOUNCE_SLOTS)
        self._dtime = array("i", bytes(4 * _DEBOUNCE_SLOTS))
        self._dused = bytearray(_DEBOUNCE_SLOTS)
        self._dnext = 0
        # Spend this month per household: open addressing on household + 1.
        self._hkey = array("I", bytes(4 * HOUSEHOLD_SLOTS))
        self._hspent = array("I", bytes(4 * HOUSEHOLD_SLOTS))
        self._hcount = 0
        self.month = 0
        self._day = -1
        self.dirty = False
        self.checkpoint_seq = 0
        # Outcome of the last decide().
        self.result = 0
        self.fee = 0
        self.flags = 0
        self.floor = _NO_FLOOR
        self.household = 0
        self._slot = -1
        self._dslot = -1

    def configure(self, tariff, floors, ground_floor, utc_offset_min):
        # A validated tariff (liftcard.config). Forgets the debounce state;
        # the caller then reset()s and rebuilds the spend (checkpoint + log).
        fees = tariff["fee_fen"]
        for i in range(_MAX_FLOORS):
            self.fee_by_floor[i] = fees[i] if i < len(fees) else 0
        free = 0
        for name in tariff["free_classes"]:
            free |= 1 << codes.CLASS_NAMES.index(name)
        self.free_classes = free
        self.cap = tariff["monthly_cap_fen"]
        self.window_ms = tariff["debounce_s"] * 1000
        self.floors = floors
        self.ground = ground_floor
        self.utc_offset_s = utc_offset_min * 60
        for i in range(_DEBOUNCE_SLOTS):
            self._dused[i] = 0
        self._dnext = 0

    # ---- calendar ----

    def reset(self):
        self._clear()
        self.month = 0
        self._day = -1
        self.checkpoint_seq = 0

    def roll(self, now_s):
        # Tracks the local day; a new month starts the spend table afresh.
        day = (now_s + self.utc_offset_s) // 86400
        if day != self._day:
            self._day = day
            m = month_of_day(day)
            if m != self.month:
                if self.month:
                    self._clear()
                self.month = m

    def _clear(self):
        h = self._hkey
        for i in range(HOUSEHOLD_SLOTS):
            h[i] = 0
            self._hspent[i] = 0
        self._hcount = 0
        self.dirty = True

    def _find(self, household):
        # Slot of the household, or of the empty slot where it would go.
        key = household + 1
        h = self._hkey
        i = household % HOUSEHOLD_SLOTS
        while True:
            k = h[i]
            if k == key or k == 0:
                return i
            i += 1
            if i == HOUSEHOLD_SLOTS:
                i = 0

    # ---- the tap path ----

    def decide(self, found, rec, card, at_floor, now_s, now_ms):
        self.roll(now_s)
        self.fee = 0
        self.flags = 0
        self.floor = _NO_FLOOR
        self._slot = -1
        self._dslot = -1
        if not found:
            self.household = 0
            self.result = codes.UNKNOWN_CARD
            return
        self.household = (rec[8] << 16) | (rec[9] << 8) | rec[10]
        status = rec[13] >> 4
        klass = rec[13] & 15
        if status == codes.ST_SUSPENDED:
            self.result = codes.SUSPENDED
            return
        if status == codes.ST_LOST:
            self.result = codes.LOST
            return
        until = (rec[14] << 8) | rec[15]
        if status == codes.ST_EXPIRED or (until != _NO_END and self._day > until):
            self.result = codes.EXPIRED
            return
        mask = (rec[11] << 8) | rec[12]
        ground = self.ground
        home = ground
        for f in range(15, -1, -1):
            if f != ground and (mask >> f) & 1:
                home = f
                break
        dest = home if (at_floor == ground or at_floor == _NO_FLOOR) else ground
        self.floor = dest
        if dest >= self.floors or not (mask >> dest) & 1:
            self.result = codes.NO_FLOOR
            return
        self.result = codes.GRANTED
        # Debounce: a re-tap inside the window of the card's last charged ride.
        d = self._debounce_slot(card)
        if d >= 0 and self._dused[d] and self._ticks_diff(now_ms, self._dtime[d]) < self.window_ms:
            self.flags = codes.F_DEBOUNCED
            return
        self._dslot = d
        fee = self.fee_by_floor[dest]
        if (self.free_classes >> klass) & 1:
            self.flags = codes.F_FREE_CLASS
            return
        if self.cap and fee:
            slot = self._find(self.household)
            if self._hkey[slot] == 0 and self._hcount >= _HOUSEHOLD_LIMIT:
                self.flags = codes.F_CAP_UNTRACKED
            else:
                self._slot = slot
                left = self.cap - self._hspent[slot]
                if left < 0:
                    left = 0
                if fee > left:
                    fee = left
                    self.flags = codes.F_CAPPED
        self.fee = fee

    def _debounce_slot(self, card):
        c = self._dcard
        for s in range(_DEBOUNCE_SLOTS):
            if self._dused[s]:
                o = s * 8
                same = True
                for i in range(8):
                    if c[o + i] != card[i]:
                        same = False
                        break
                if same:
                    return s
        return -1

    def commit(self, card, now_ms):
        # The ride is durable: apply the charge and start its debounce window.
        if self.result != codes.GRANTED or self.flags & codes.F_DEBOUNCED:
            return
        d = self._dslot
        if d < 0:
            d = self._dnext
            self._dnext = (d + 1) % _DEBOUNCE_SLOTS
            o = d * 8
            for i in range(8):
                self._dcard[o + i] = card[i]
            self._dused[d] = 1
        self._dtime[d] = now_ms
        if self.fee:
            self._charge(self._slot, self.household, self.fee)

    def _charge(self, slot, household, fee):
        if slot < 0:
            return
        if self._hkey[slot] == 0:
            self._hkey[slot] = household + 1
            self._hcount += 1
        self._hspent[slot] += fee
        self.dirty = True

    def spent(self, household):
        slot = self._find(household)
        return self._hspent[slot] if self._hkey[slot] else 0

    # ---- persistence (idle and boot) ----

    def replay(self, rec, now_s):
        # Re-apply a logged ride newer than the checkpoint (boot).
        self.roll(now_s)
        if rec[26] != codes.GRANTED:
            return
        fee = (rec[24] << 8) | rec[25]
        if not fee:
            return
        t = u32.get(rec, 4)
        if month_of_day((t + self.utc_offset_s) // 86400) != self.month:
            return
        household = (rec[20] << 16) | (rec[21] << 8) | rec[22]
        slot = self._find(household)
        if self._hkey[slot] == 0 and self._hcount >= _HOUSEHOLD_LIMIT:
            return
        self._charge(slot, household, fee)

    def save(self, last_seq):
        n = self._hcount
        buf = bytearray(14 + 8 * n + 2)
        struct.pack_into(">4sIIH", buf, 0, b"LCSP", self.month, last_seq, n)
        o = 14
        for i in range(HOUSEHOLD_SLOTS):
            k = self._hkey[i]
            if k:
                hh = k - 1
                buf[o] = hh >> 16
                buf[o + 1] = (hh >> 8) & 0xFF
                buf[o + 2] = hh & 0xFF
                buf[o + 3] = 0
                struct.pack_into(">I", buf, o + 4, self._hspent[i])
                o += 8
        c = crc16(buf, 0, o)
        buf[o] = c >> 8
        buf[o + 1] = c & 0xFF
        atomic.write(CHECKPOINT, _CHECKPOINT_NEW, buf)
        self.checkpoint_seq = last_seq
        self.dirty = False

    def load(self, now_s):
        # Returns the seq the checkpoint covers (0 when there is none).
        self.roll(now_s)
        try:
            with open(CHECKPOINT, "rb") as f:
                data = f.read()
        except OSError:
            return 0
        if len(data) < 16 or data[:4] != b"LCSP":
            return 0
        _, month, last_seq, n = struct.unpack_from(">4sIIH", data)
        end = 14 + 8 * n
        if len(data) != end + 2:
            return 0
        c = crc16(data, 0, end)
        if data[end] != c >> 8 or data[end + 1] != c & 0xFF:
            return 0
        if month != self.month:
            # Another month's totals: this month's rides may be anywhere in
            # the log, so all of it is replayed.
            return 0
        self.checkpoint_seq = last_seq
        for i in range(n):
            o = 14 + 8 * i
            hh = (data[o] << 16) | (data[o + 1] << 8) | data[o + 2]
            spent = struct.unpack_from(">I", data, o + 4)[0]
            slot = self._find(hh)
            if self._hkey[slot] == 0 and self._hcount < _HOUSEHOLD_LIMIT:
                self._hkey[slot] = hh + 1
                self._hcount += 1
                self._hspent[slot] = spent
        return last_seq
