# The tap procedure (docs/nfc.md "Reason codes", "Tap procedure"): poll the
# PN532 for a card, tell its type, verify its credential, and hand the board
# a tap for the reader's decision path:
#
#   DESFire (SAK 0x20, 5A LCF -> 00)   EV1 AES auth + MAC'd credential read -> TAP_CREDENTIAL
#   NTAG 424 (5A -> ISO status)         SUN verified, counter newer         -> TAP_CREDENTIAL
#                                       counter not newer                   -> TAP_FAILED REPLAY
#   no ISO 14443-4 (SAK 0x20 clear)     padded UID                          -> TAP_LEGACY_UID
#   failures                            AUTH_FAILED, CARD_REMOVED, CARD_GARBAGE, BAD_READ
#
# The card id comes from the verified credential, never from the UID (except
# legacy UID-only cards, which the reader refuses unless legacy_uid is on).
# A card left in the field is read once: it is a tap again only after a poll
# found the field empty or another card. A chip that stops answering is
# re-initialised (wake-up, SAMConfiguration) at most once a second; polling
# allocates nothing.

import time
from micropython import const

from . import codes
from .cmac import AuthError, Cmac, an10922, ecb
from .desfire import Desfire
from .ntag import Ntag, meta_div
from .pn532 import DIN, DOUT, Garbage, LinkError, PN532Error
from .sunctr import CounterTable

_NO_FLOOR = const(0xFF)
_REINIT_MS = const(1000)


class Nfc:
    def __init__(self, pn):
        self.pn = pn
        self.desfire = Desfire()
        self.ntag = Ntag()
        self.counters = CounterTable()
        self._counters_loaded = False
        self.master = None  # Cmac of the building's read master key
        self.meta_dec = None  # AES decryptor of the NTAG SDMMetaRead key
        self.building_id = 0
        self.cred_from = 0  # validity of the last DESFire credential read
        self.cred_until = 0xFFFF
        self._held = bytearray(10)
        self._held_len = 0
        self._retry_at = 0
        self.taps = 0
        self.chip_errors = 0

    def configure(self, read_master, building_id):
        # read_master: 16 bytes, or None (credential cards then fail AUTH_FAILED).
        self.building_id = building_id
        self.master = None
        self.meta_dec = None
        if read_master:
            self.master = Cmac(read_master)
            d = bytearray(8)
            k = bytearray(16)
            meta_div(building_id, d)
            an10922(self.master, d, 8, k)
            self.meta_dec = ecb(k)
        if not self._counters_loaded:
            # Once: a later CONFIG must not overwrite counters accepted since
            # the last idle save with the older file (a replay would pass).
            self.counters.load()
            self._counters_loaded = True

    def maintain(self):
        # From the reader's idle time: the replay counters reach flash.
        if self.counters.dirty:
            self.counters.save()

    # ---- polling ----

    def poll(self, board):
        # Returns a tap kind (card id in board.card, failure in
        # board.tap_failure) or 0 when there is nothing to report.
        self.cred_from = 0
        self.cred_until = 0xFFFF
        pn = self.pn
        if pn.need_init:
            now = time.ticks_ms()
            if self._retry_at and time.ticks_diff(now, self._retry_at) < 0:
                return 0
            try:
                pn.init(1 if self.chip_errors else 3)
                self._retry_at = 0
            except PN532Error:
                self.chip_errors += 1
                self._retry_at = time.ticks_add(now, _REINIT_MS) or 1
                return 0
        try:
            found = pn.list_target()
        except (PN532Error, Garbage):
            return 0  # not a tap; a time-out marked the chip for re-init
        if not found:
            self._held_len = 0
            return 0
        if pn.same_uid(self._held, self._held_len):
            self._release()
            return 0
        held = self._held
        n = pn.uid_len
        for i in range(n):
            held[i] = pn.uid[i]
        self._held_len = n
        card = board.card
        code = 0
        kind = codes.TAP_FAILED
        try:
            kind = self._read(card)
        except LinkError:
            code = self._lost_or_garbage()
        except Garbage:
            code = codes.CARD_GARBAGE
        except AuthError:
            code = codes.AUTH_FAILED
        except PN532Error:
            code = codes.BAD_READ
        if code:
            for i in range(8):
                card[i] = 0
            board.tap_failure = code
            if code != codes.CARD_GARBAGE and code != codes.AUTH_FAILED:
                self._held_len = 0  # gone, or the chip failed: read it again when seen
        elif kind == codes.TAP_FAILED:
            code = codes.REPLAY
            board.tap_failure = code
        else:
            board.tap_failure = 0
        self._release()
        self.taps += 1
        board.tap_kind = kind
        board.tap_floor = _NO_FLOOR
        return kind

    def _release(self):
        if not self.pn.need_init:
            try:
                self.pn.release()
            except (PN532Error, Garbage):
                pass

    def _lost_or_garbage(self):
        # After a radio error: is the same card still there?
        pn = self.pn
        try:
            pn.release()
            again = pn.list_target()
        except (PN532Error, Garbage):
            return codes.BAD_READ
        if not again or not pn.same_uid(self._held, self._held_len):
            return codes.CARD_REMOVED
        return codes.CARD_GARBAGE

    def _read(self, card):
        pn = self.pn
        if not pn.sak & 0x20:
            # UID-only: the reader grants it only with legacy_uid on.
            n = pn.uid_len
            for i in range(8):
                card[i] = pn.uid[i - 8 + n] if i >= 8 - n else 0
            return codes.TAP_LEGACY_UID
        o = pn.out
        o[DOUT] = 0x5A  # SelectApplication LCF
        o[DOUT + 1] = 0x4C
        o[DOUT + 2] = 0x43
        o[DOUT + 3] = 0x46
        m = pn.exchange(4)
        rx = pn.rx
        s = rx[DIN]
        if m == 1 and s == 0:
            if self.master is None or pn.uid_len != 7:
                raise AuthError("no read key, or a UID the keys cannot be diversified from")
            d = self.desfire
            d.read(pn, self.master, self.building_id)
            c = d.cred
            for i in range(8):
                card[i] = c[6 + i]
            self.cred_from = (c[20] << 8) | c[21]
            self.cred_until = (c[22] << 8) | c[23]
            return codes.TAP_CREDENTIAL
        if m == 1:
            raise AuthError("no liftcard application")
        if m == 2 and s in (0x67, 0x68, 0x6A, 0x6D, 0x6E):
            if self.master is None:
                raise AuthError("no read key")
            t = self.ntag
            t.read(pn, self.master, self.meta_dec, self.building_id, card)
            if not self.counters.take(card, t.counter):
                return codes.TAP_FAILED  # REPLAY, with the verified card id
            return codes.TAP_CREDENTIAL
        raise Garbage("unexpected answer to SelectApplication")
