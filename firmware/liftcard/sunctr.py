# The last NTAG 424 SDMReadCtr accepted per card id (docs/nfc.md: a SUN
# message whose counter is not greater is a REPLAY). A small bounded table in
# RAM; when full, the least recently used card is forgotten (a replay of that
# card's older messages would then pass once: size the table for the fobs of
# a building). Saved to flash while idle when it changed (file `sun.ctr`,
# written beside and renamed), loaded at configuration.
#
# Shared through the gateway (docs/uplink.md, SUNCTR): a counter accepted at a
# tap is marked unsent (one byte store on the tap path); the uplink sends the
# unsent entries from idle time (unsent(), sent()); the counters the gateway
# forwards from the building's other readers are merged with max() (merge()):
# a counter never goes down.
#
#   file: "LCSC" count(2) entries(count x (card_id 8, counter 3 BE)) crc16(2)

from array import array
from micropython import const

from . import atomic
from .crc import crc16

PATH = "sun.ctr"
_NEW = "sun.new"
_ENTRY = const(11)


class CounterTable:
    def __init__(self, size=128):
        self.size = size
        self.ids = bytearray(8 * size)
        self.ctr = array("i", [-1] * size)  # -1: empty slot
        self.used = array("i", [0] * size)  # last use, for eviction
        self.unsent = bytearray(size)  # 1: accepted here, not yet sent to the gateway
        self._clock = 0
        self.dirty = False

    def find(self, card):
        ids = self.ids
        for s in range(self.size):
            if self.ctr[s] < 0:
                continue
            b = 8 * s
            for i in range(8):
                if ids[b + i] != card[i]:
                    break
            else:
                return s
        return -1

    def fresh(self, card, counter):
        # True when counter is greater than the last one accepted for card.
        s = self.find(card)
        return s < 0 or counter > self.ctr[s]

    def accept(self, card, counter):
        self.unsent[self._put(card, counter, self.find(card))] = 1

    def take(self, card, counter):
        # The tap's check and record with one look-up: False (a replay) when
        # counter is not above the last accepted for card, else accepted.
        s = self.find(card)
        if s >= 0 and counter <= self.ctr[s]:
            return False
        self.unsent[self._put(card, counter, s)] = 1
        return True

    def _put(self, card, counter, s):
        # s: the card's slot, or -1 (a new entry, evicting the least used).
        if s < 0:
            s = 0
            for i in range(self.size):
                if self.ctr[i] < 0:
                    s = i
                    break
                if self.used[i] < self.used[s]:
                    s = i
            for i in range(8):
                self.ids[8 * s + i] = card[i]
            self.unsent[s] = 0
        self.ctr[s] = counter
        self._clock += 1
        self.used[s] = self._clock
        self.dirty = True
        return s

    # ---- sharing through the gateway (off the tap path) ----

    def unsent_slots(self, most):
        # Up to `most` slots whose counter was accepted here and not yet sent.
        out = []
        for s in range(self.size):
            if self.unsent[s] and self.ctr[s] >= 0:
                out.append(s)
                if len(out) == most:
                    break
        return out

    def entries(self, slots):
        # (card id, counter) of the slots, for the uplink codec.
        mv = memoryview(self.ids)
        for s in slots:
            yield mv[8 * s : 8 * s + 8], self.ctr[s]

    def sent(self, slots):
        for s in slots:
            self.unsent[s] = 0

    def merge(self, body):
        # The entries of a SUNCTR from the gateway (n x (card_id 8, counter 3
        # BE), the codec checked the size): each counter raises this reader's
        # with max(), never lowers it; an unknown card is inserted, evicting as
        # accept() does. Returns how many entries raised a counter.
        n = 0
        for p in range(0, len(body) - 10, 11):
            c = (body[p + 8] << 16) | (body[p + 9] << 8) | body[p + 10]
            card = body[p : p + 8]
            s = self.find(card)
            if s >= 0 and c <= self.ctr[s]:
                continue
            self.unsent[self._put(card, c, s)] = 0  # the gateway has it already
            n += 1
        return n

    def save(self):
        n = 0
        for s in range(self.size):
            if self.ctr[s] >= 0:
                n += 1
        buf = bytearray(6 + _ENTRY * n + 2)
        buf[0:4] = b"LCSC"
        buf[4] = n >> 8
        buf[5] = n & 0xFF
        p = 6
        for s in range(self.size):
            c = self.ctr[s]
            if c < 0:
                continue
            buf[p : p + 8] = self.ids[8 * s : 8 * s + 8]
            buf[p + 8] = (c >> 16) & 0xFF
            buf[p + 9] = (c >> 8) & 0xFF
            buf[p + 10] = c & 0xFF
            p += _ENTRY
        c = crc16(buf, 0, p)
        buf[p] = c >> 8
        buf[p + 1] = c & 0xFF
        atomic.write(PATH, _NEW, buf)
        self.dirty = False

    def load(self):
        # A missing or damaged file leaves the table empty (a fresh reader).
        for s in range(self.size):
            self.ctr[s] = -1
            self.used[s] = 0
            self.unsent[s] = 0
        try:
            with open(PATH, "rb") as f:
                buf = f.read(6 + _ENTRY * self.size + 2)
        except OSError:
            return 0
        if len(buf) < 8 or buf[0:4] != b"LCSC":
            return 0
        n = (buf[4] << 8) | buf[5]
        end = 6 + _ENTRY * n
        if n > self.size or len(buf) != end + 2 or crc16(buf, 0, end) != (buf[end] << 8) | buf[end + 1]:
            return 0
        for s in range(n):
            p = 6 + _ENTRY * s
            self.ids[8 * s : 8 * s + 8] = buf[p : p + 8]
            self.ctr[s] = (buf[p + 8] << 16) | (buf[p + 9] << 8) | buf[p + 10]
            self.used[s] = s
        self._clock = n
        self.dirty = False
        return n
