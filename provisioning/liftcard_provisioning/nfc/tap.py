"""The liftcard tap procedure (docs/nfc.md "Tap procedure") on a PN532 host
driver (pcd.PN532, or anything with its init / list_target / exchange /
release). The MicroPython reader follows this model.

    reader = Reader(pn, BuildingKeys(building_id, read_master), legacy_uid=False)
    tap = reader.read_tap(today=None)     # -> Tap(result, card_id, flags, kind, uid)

Results: "OK" (credential verified; the reader then looks card_id up in its
whitelist), "NO_CARD", and the docs/formats.md reason names BAD_READ,
AUTH_FAILED, REPLAY, CARD_REMOVED, CARD_GARBAGE, LEGACY_DISABLED, EXPIRED.
"""

from __future__ import annotations

from typing import NamedTuple

from . import credential as K
from . import crypto as C
from . import ntag
from .desfire import CardStatus, DesfireHost, Garbage
from .pcd import LinkError, PN532, PN532Error, Target

FLAG_LEGACY_UID = 0x02  # docs/formats.md ride record flag


class Tap(NamedTuple):
    """(result, card_id, flags, kind, uid); tap[:2] is (result code name, card_id)."""

    result: str
    card_id: bytes | None = None
    flags: int = 0
    kind: str = ""
    uid: bytes = b""


class Reader:
    """The tap procedure (docs/nfc.md, "Tap procedure")."""

    def __init__(self, pn: PN532, keys: K.BuildingKeys, legacy_uid: bool = False, use_ev2: bool = False):
        self.pn, self.keys, self.legacy_uid, self.use_ev2 = pn, keys, legacy_uid, use_ev2
        self.sun_counters: dict[bytes, int] = {}

    def read_tap(self, today: int | None = None) -> Tap:
        pn = self.pn
        try:
            if pn.need_init:
                pn.init()
            t = pn.list_target()
        except PN532Error:
            return Tap("BAD_READ")
        if t is None:
            return Tap("NO_CARD")
        try:
            return self._read(t, today)
        except LinkError:
            return Tap(self._lost_or_garbage(t), uid=t.uid)
        except Garbage:
            return Tap("CARD_GARBAGE", uid=t.uid)
        except (C.AuthError, CardStatus, K.CredentialError):
            return Tap("AUTH_FAILED", uid=t.uid)
        except PN532Error:
            return Tap("BAD_READ", uid=t.uid)
        finally:
            try:
                if not pn.need_init:
                    pn.release()
            except PN532Error:
                pass

    def _lost_or_garbage(self, t: Target) -> str:
        """After a radio error: is the card still there? Re-activate and compare the UID."""
        try:
            self.pn.release()
            again = self.pn.list_target()
        except PN532Error:
            return "BAD_READ"
        if again is None or again.uid != t.uid:
            return "CARD_REMOVED"
        return "CARD_GARBAGE"

    def _read(self, t: Target, today):
        if not t.iso_dep:
            cid = K.legacy_card_id(t.uid)
            if not self.legacy_uid:
                return Tap("LEGACY_DISABLED", cid, FLAG_LEGACY_UID, "uid", t.uid)
            return Tap("OK", cid, FLAG_LEGACY_UID, "uid", t.uid)

        def tx(data):
            return self.pn.exchange(t.tg, data)

        r = tx(b"\x5a" + K.AID_LCF)
        if r == b"\x00":
            return self._desfire(t, tx, today)
        if len(r) == 1:
            raise CardStatus(r[0], "SelectApplication")  # a DESFire without the liftcard application
        if len(r) == 2 and r[0] in (0x67, 0x68, 0x6A, 0x6D, 0x6E):
            return self._ntag(t, tx)  # an ISO 7816-4 card refusing a native command
        raise Garbage("unexpected answer to SelectApplication")

    def _desfire(self, t, tx, today):
        h = DesfireHost(tx)
        key = self.keys.desfire_key(t.uid, K.KEY_READ)
        if self.use_ev2:
            h.auth_ev2(K.KEY_READ, key)
        else:
            h.auth_ev1(K.KEY_READ, key)
        cred = K.Credential.decode(h.read_data(K.FILE_CRED, 0, K.CRED_LEN))
        if cred.building_id != self.keys.building_id:
            raise C.AuthError("credential for another building")
        if today is not None and not cred.valid_from <= today <= cred.valid_until:
            return Tap("EXPIRED", cred.card_id, 0, "desfire", t.uid)
        return Tap("OK", cred.card_id, 0, "desfire", t.uid)

    def _ntag(self, t, tx):
        card_id, ctr = ntag.read_sun(tx, t.uid, self.keys)
        last = self.sun_counters.get(card_id, -1)
        if ctr <= last:
            return Tap("REPLAY", card_id, 0, "ntag424", t.uid)
        self.sun_counters[card_id] = ctr
        return Tap("OK", card_id, 0, "ntag424", t.uid)
