"""Emulated contactless cards (ISO 14443A) for the PN532 emulator.

Every card has an ISO 14443A identity (UID, ATQA as the PN532 reports
SENS_RES, SAK, and the ATS when it speaks ISO 14443-4) and a `transceive`
that takes the bytes the PN532 would put in an I-block (InDataExchange
DataOut) and returns:

* bytes   - the card's answer (the PN532 reports status 00 and these bytes),
* RfError - a radio-level failure the PN532 reports as its status byte
            (SILENCE = 0x01 time-out, 0x02 CRC error, ...).

`power_on()` is called when the card enters the field (volatile state reset)
and `deselect()` on InRelease.

`make_desfire` and `make_ntag424` build personalised cards: a DESFire is
personalised through its own command interface by the product's
`personalise_desfire`, the host side, which knows nothing of these emulators.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import crypto as C
from liftcard_provisioning.nfc.credential import (
    CC_FILE_ID,
    NDEF_APP_DF_NAME,
    NDEF_FILE_ID,
    SunLayout,
    ndef_template,
)
from liftcard_provisioning.nfc.personalise import personalise_desfire


@dataclass(frozen=True)
class RfError:
    code: int  # the PN532 status byte (UM0701-02 Table "Error code list")


SILENCE = RfError(0x01)
CRC_ERROR = RfError(0x02)

DESFIRE_ATS = bytes.fromhex("067577810280")
NTAG424_ATS = bytes.fromhex("067777710280")

# DESFire native status codes
OK, ADDITIONAL_FRAME = 0x00, 0xAF
NO_SUCH_KEY, LENGTH_ERROR, ILLEGAL_COMMAND = 0x40, 0x7E, 0x1C
PERMISSION_DENIED, PARAMETER_ERROR, APPLICATION_NOT_FOUND = 0x9D, 0x9E, 0xA0
AUTHENTICATION_ERROR, BOUNDARY_ERROR, DUPLICATE_ERROR, FILE_NOT_FOUND = 0xAE, 0xBE, 0xDE, 0xF0
INTEGRITY_ERROR = 0x1E


class Card:
    kind = "card"
    iso_dep = False

    def __init__(self, uid: bytes, atqa: int, sak: int, ats: bytes | None = None, name: str = ""):
        if len(uid) not in (4, 7, 10):
            raise ValueError("UID must be 4, 7 or 10 bytes")
        self.uid, self.atqa, self.sak, self.ats = bytes(uid), atqa, sak, ats
        self.name = name or "%s-%s" % (self.kind, self.uid.hex())

    def power_on(self) -> None:
        pass

    def deselect(self) -> None:
        self.power_on()

    def transceive(self, data: bytes):
        return SILENCE


class MifareClassicCard(Card):
    """UID-only card: no ISO 14443-4, answers nothing the reader sends."""

    kind = "classic"

    def __init__(self, uid: bytes, name: str = ""):
        super().__init__(uid, 0x0004 if len(uid) == 4 else 0x0044, 0x08, None, name)


# ---------------------------------------------------------------------------
# DESFire EV1/EV2/EV3 (native command set, AES applications)
# ---------------------------------------------------------------------------


@dataclass
class _File:
    comm: int  # 0 plain, 1 MAC, 3 enciphered (only 0 and 1 supported here)
    access: int  # R(15..12) W(11..8) RW(7..4) CAR(3..0)
    data: bytearray


@dataclass
class _App:
    key_settings: int
    keys: list  # [ [key16, version], ... ]
    files: dict = field(default_factory=dict)


class DesfireCard(Card):
    """DESFire EV1+ with the native command subset liftcard uses:

    5A SelectApplication, AA AuthenticateAES (EV1), 71 AuthenticateEV2First,
    AF additional frame, BD ReadData, CA CreateApplication, C4 ChangeKey,
    CD CreateStdDataFile, 3D WriteData. The PICC level allows
    CreateApplication without authentication (factory key settings 0x0F).
    Any error status ends the authentication, as on the real card."""

    kind = "desfire"
    iso_dep = True

    def __init__(self, uid: bytes, name: str = "", rng=os.urandom):
        super().__init__(uid, 0x0344, 0x20, DESFIRE_ATS, name)
        self.apps: dict[bytes, _App] = {}
        self.rng = rng
        self.power_on()

    def power_on(self) -> None:
        self.aid = b"\x00\x00\x00"
        self.auth_key = None
        self.session = None  # EV1Session or EV2Session
        self.pending = None  # (kind, key_no, picc_state)

    # -- helpers --
    def _app(self):
        return self.apps.get(self.aid)

    def _err(self, code: int) -> bytes:
        self.auth_key = self.session = self.pending = None
        return bytes([code])

    def _ok(self, data: bytes = b"") -> bytes:
        if isinstance(self.session, C.EV1Session):
            return b"\x00" + data + self.session.resp_mac(data)
        return b"\x00" + data

    def transceive(self, data: bytes):
        data = bytes(data)
        if not data:
            return self._err(LENGTH_ERROR)
        cmd = data[0]
        if self.pending is not None:
            pending, self.pending = self.pending, None
            if cmd == 0xAF:
                return self._auth_finish(pending, data[1:])
        handler = {
            0x5A: self._select,
            0xAA: self._auth_start,
            0x71: self._auth_start,
            0xBD: self._read,
            0xCA: self._create_app,
            0xC4: self._change_key,
            0xCD: self._create_file,
            0x3D: self._write,
        }.get(cmd)
        if handler is None:
            return self._err(ILLEGAL_COMMAND)
        if isinstance(self.session, C.EV2Session) and cmd != 0xBD and cmd not in (0x5A, 0xAA, 0x71):
            return self._err(PERMISSION_DENIED)  # EV2 secure messaging is implemented for ReadData only
        return handler(data)

    def _select(self, data):
        if len(data) != 4:
            return self._err(LENGTH_ERROR)
        aid = data[1:4]
        if aid != b"\x00\x00\x00" and aid not in self.apps:
            return self._err(APPLICATION_NOT_FOUND)
        self.aid, self.auth_key, self.session = aid, None, None
        return b"\x00"

    def _auth_start(self, data):
        ev2 = data[0] == 0x71
        if len(data) != (3 if ev2 else 2) and not (ev2 and len(data) >= 3 and len(data) == 3 + data[2]):
            return self._err(LENGTH_ERROR)
        app = self._app()
        if app is None:  # PICC master key is not an AES key in this emulator
            return self._err(AUTHENTICATION_ERROR)
        key_no = data[1]
        if key_no >= len(app.keys):
            return self._err(NO_SUCH_KEY)
        self.auth_key = self.session = None
        key = app.keys[key_no][0]
        if ev2:
            picc = C.EV2FirstPICC(key, self.rng(16), self.rng(4))
        else:
            picc = C.EV1AuthPICC(key, self.rng(16))
        self.pending = ("ev2" if ev2 else "ev1", key_no, picc)
        return b"\xaf" + picc.challenge()

    def _auth_finish(self, pending, token):
        _kind, key_no, picc = pending
        if len(token) != 32:
            return self._err(LENGTH_ERROR)
        try:
            resp, session = picc.answer(token)
        except C.AuthError:
            return self._err(AUTHENTICATION_ERROR)
        self.auth_key, self.session = key_no, session
        return b"\x00" + resp

    def _may(self, f: _File, which: str):
        """-> None if allowed, else an error status."""
        r, w, rw = (f.access >> 12) & 15, (f.access >> 8) & 15, (f.access >> 4) & 15
        allowed = (r, rw) if which == "r" else (w, rw)
        if 0xE in allowed:
            return None
        if all(k == 0xF for k in allowed):
            return PERMISSION_DENIED
        if self.auth_key is None or self.auth_key not in allowed:
            return AUTHENTICATION_ERROR
        return None

    def _read(self, data):
        ev2 = isinstance(self.session, C.EV2Session)
        if len(data) != (16 if ev2 else 8):
            return self._err(LENGTH_ERROR)
        app = self._app()
        f = app.files.get(data[1]) if app else None
        if f is None:
            return self._err(FILE_NOT_FOUND)
        if ev2:
            if not C.ct_equal(self.session.cmd_mac(0xBD, data[1:8]), data[8:16]):
                return self._err(INTEGRITY_ERROR)
        elif isinstance(self.session, C.EV1Session):
            self.session.cmd_cmac(data)
        err = self._may(f, "r")
        if err is not None:
            return self._err(err)
        off = int.from_bytes(data[2:5], "little")
        n = int.from_bytes(data[5:8], "little")
        if n == 0:
            n = len(f.data) - off
        if off + n > len(f.data) or n < 0:
            return self._err(BOUNDARY_ERROR)
        if n > 59:
            return self._err(LENGTH_ERROR)  # multi-frame (AF) reads are not emulated
        out = bytes(f.data[off : off + n])
        if ev2:
            self.session.cmd_ctr += 1
            return b"\x00" + out + self.session.resp_mac(0x00, out)
        if f.comm == 1 and not isinstance(self.session, C.EV1Session):
            return self._err(AUTHENTICATION_ERROR)
        return self._ok(out)

    def _create_app(self, data):
        if len(data) != 6:
            return self._err(LENGTH_ERROR)
        if self.aid != b"\x00\x00\x00":
            return self._err(PERMISSION_DENIED)
        aid, ks1, ks2 = data[1:4], data[4], data[5]
        nkeys = ks2 & 0x0F
        if aid == b"\x00\x00\x00" or (ks2 & 0xC0) != 0x80 or not 1 <= nkeys <= 14:
            return self._err(PARAMETER_ERROR)
        if aid in self.apps:
            return self._err(DUPLICATE_ERROR)
        self.apps[aid] = _App(ks1, [[bytes(16), 0] for _ in range(nkeys)])
        return b"\x00"

    def _change_key(self, data):
        if not isinstance(self.session, C.EV1Session):
            return self._err(AUTHENTICATION_ERROR)
        if len(data) != 34:
            return self._err(LENGTH_ERROR)
        app = self._app()
        key_no = data[1] & 0x3F
        if app is None or key_no >= len(app.keys):
            return self._err(NO_SUCH_KEY)
        car = app.key_settings >> 4
        need = {0x0: 0, 0xE: key_no}.get(car, car)
        if car == 0xF or self.auth_key != need:
            return self._err(PERMISSION_DENIED)
        s = self.session
        plain = C.cbc_decrypt(s.key, s.iv, data[2:34])
        s.iv = data[-16:]
        hdr = data[:2]
        if key_no == self.auth_key:
            new, ver, crc, pad = plain[:16], plain[16], plain[17:21], plain[21:]
            if any(pad) or not C.ct_equal(crc, C.crc32_desfire(hdr + plain[:17])):
                return self._err(INTEGRITY_ERROR)
            app.keys[key_no] = [new, ver]
            self.auth_key = self.session = None
            return b"\x00"
        xored, ver, crc1, crc2, pad = plain[:16], plain[16], plain[17:21], plain[21:25], plain[25:]
        new = C.xor(xored, app.keys[key_no][0])
        if (
            any(pad)
            or not C.ct_equal(crc1, C.crc32_desfire(hdr + plain[:17]))
            or not C.ct_equal(crc2, C.crc32_desfire(new))
        ):
            return self._err(INTEGRITY_ERROR)
        app.keys[key_no] = [new, ver]
        return self._ok()

    def _create_file(self, data):
        if len(data) != 8:
            return self._err(LENGTH_ERROR)
        app = self._app()
        if app is None:
            return self._err(PERMISSION_DENIED)
        if isinstance(self.session, C.EV1Session):
            self.session.cmd_cmac(data)
        if not app.key_settings & 0x04 and self.auth_key != 0:
            return self._err(AUTHENTICATION_ERROR)
        no, comm = data[1], data[2]
        access = int.from_bytes(data[3:5], "little")
        size = int.from_bytes(data[5:8], "little")
        if no > 31 or comm not in (0, 1) or size == 0:
            return self._err(PARAMETER_ERROR)
        if no in app.files:
            return self._err(DUPLICATE_ERROR)
        app.files[no] = _File(comm, access, bytearray(size))
        return self._ok()

    def _write(self, data):
        if len(data) < 8:
            return self._err(LENGTH_ERROR)
        app = self._app()
        f = app.files.get(data[1]) if app else None
        if f is None:
            return self._err(FILE_NOT_FOUND)
        off = int.from_bytes(data[2:5], "little")
        n = int.from_bytes(data[5:8], "little")
        maced = f.comm == 1 and isinstance(self.session, C.EV1Session)
        if len(data) != 8 + n + (8 if maced else 0):
            return self._err(LENGTH_ERROR)
        if isinstance(self.session, C.EV1Session):
            mac = self.session.cmd_cmac(data[: 8 + n])
            if maced and not C.ct_equal(mac, data[8 + n :]):
                return self._err(INTEGRITY_ERROR)
        err = self._may(f, "w")
        if err is not None:
            return self._err(err)
        if f.comm == 1 and not maced:
            return self._err(AUTHENTICATION_ERROR)
        if off + n > len(f.data):
            return self._err(BOUNDARY_ERROR)
        f.data[off : off + n] = data[8 : 8 + n]
        return self._ok()


# ---------------------------------------------------------------------------
# NTAG 424 DNA with SUN
# ---------------------------------------------------------------------------


class Ntag424Card(Card):
    """NTAG 424 DNA answering the ISO 7816-4 subset a plain NDEF read uses:
    ISOSelectFile by DF name D2760000850101, ISOSelectFile E103/E104,
    ISOReadBinary. SDM: on the first ISOReadBinary after the NDEF file is
    selected, SDMReadCtr is incremented and PICCData + SDMMAC are mirrored
    (fresh random PICCData padding); further reads in the same selection see
    the same bytes."""

    kind = "ntag424"
    iso_dep = True

    def __init__(
        self,
        uid: bytes,
        meta_key: bytes,
        file_key: bytes,
        card_id: bytes,
        counter: int = 0,
        name: str = "",
        rng=os.urandom,
    ):
        if len(uid) != 7:
            raise ValueError("NTAG 424 UID is 7 bytes")
        super().__init__(uid, 0x0344, 0x20, NTAG424_ATS, name)
        self.meta_key, self.file_key, self.counter, self.rng = meta_key, file_key, counter, rng
        tmpl, self.layout = ndef_template(card_id)
        self.ndef = bytearray(256)
        self.ndef[: len(tmpl)] = tmpl
        self.cc = bytes.fromhex("0017200100FF0406E10401000000")
        self.cc += bytes(32 - len(self.cc))
        self.power_on()

    def power_on(self) -> None:
        self.app_selected = False
        self.file = None
        self.view = None

    def sun_view(self) -> bytes:
        lay: SunLayout = self.layout
        self.counter = min(self.counter + 1, 0xFFFFFF)
        view = bytearray(self.ndef)
        picc = C.picc_data_encrypt(self.meta_key, self.uid, self.counter, self.rng(5))
        view[lay.picc_off : lay.picc_off + 32] = picc.hex().upper().encode()
        mac = C.sdmmac(self.file_key, self.uid, self.counter, bytes(view[lay.card_id_off : lay.mac_off]))
        view[lay.mac_off : lay.mac_off + 16] = mac.hex().upper().encode()
        return bytes(view)

    def transceive(self, data: bytes):
        d = bytes(data)
        if len(d) < 4:
            return b"\x67\x00"
        cla, ins, p1, p2 = d[:4]
        if cla != 0x00:
            return b"\x6e\x00"
        if ins == 0xA4:
            if len(d) < 5 or len(d) < 5 + d[4]:
                return b"\x67\x00"
            body = d[5 : 5 + d[4]]
            if p1 == 0x04:
                if body != NDEF_APP_DF_NAME:
                    return b"\x6a\x82"
                self.app_selected, self.file, self.view = True, None, None
                return b"\x90\x00"
            if p1 == 0x00 and self.app_selected and body in (NDEF_FILE_ID, CC_FILE_ID):
                self.file, self.view = body, None
                return b"\x90\x00"
            return b"\x6a\x82"
        if ins == 0xB0:
            if self.file is None:
                return b"\x69\x86"
            if p1 & 0x80 or len(d) != 5:
                return b"\x6b\x00" if p1 & 0x80 else b"\x67\x00"
            off, le = (p1 << 8) | p2, d[4] or 256
            if self.file == CC_FILE_ID:
                content = self.cc
            else:
                if self.view is None:
                    self.view = self.sun_view()
                content = self.view
            if off >= len(content):
                return b"\x6b\x00"
            return content[off : off + le] + b"\x90\x00"
        return b"\x6d\x00"


# ---------------------------------------------------------------------------
# Personalised cards
# ---------------------------------------------------------------------------


class _Direct:
    """A card's transceive as the host's transceive: a radio error raises."""

    def __init__(self, card):
        self.card = card

    def __call__(self, data: bytes) -> bytes:
        r = self.card.transceive(data)
        if isinstance(r, RfError):
            raise IOError("card link error %02X" % r.code)
        return r


def personalise_desfire_direct(card: DesfireCard, keys: K.BuildingKeys, cred: K.Credential) -> None:
    personalise_desfire(_Direct(card), card.uid, keys, cred)
    card.power_on()


def make_desfire(uid: bytes, keys: K.BuildingKeys, cred: K.Credential, name: str = "") -> DesfireCard:
    """A DESFire card personalised through its own command interface."""
    card = DesfireCard(uid, name=name)
    personalise_desfire_direct(card, keys, cred)
    return card


def make_ntag424(uid: bytes, keys: K.BuildingKeys, card_id: bytes, counter: int = 0, name: str = "") -> Ntag424Card:
    """An NTAG 424 DNA configured for liftcard SUN (SDM settings set directly;
    the ChangeFileSettings personalisation of a real tag is not emulated)."""
    return Ntag424Card(
        uid, keys.ntag_meta_key(), keys.ntag_key(uid, K.NTAG_KEY_FILE), card_id, counter=counter, name=name
    )


# ---------------------------------------------------------------------------
# Attackers and failures
# ---------------------------------------------------------------------------


class MagicClone(Card):
    """A 'magic' card carrying the UID (and ATQA/SAK/ATS) of a real card but
    not its keys.

    mode "no_app":    a blank DESFire: SelectApplication LCF -> A0.
    mode "wrong_key": a DESFire with the LCF application and credential file
                      but keys it does not know (random): authentication fails.
    mode "replay":    answers each command with the next frame of a recording
                      of the real card (`recording`, list of responses) and
                      then repeats the last-but-one pattern; exact replay of a
                      past exchange."""

    kind = "clone"

    def __init__(self, original: Card, mode: str = "wrong_key", recording=None, name: str = ""):
        super().__init__(original.uid, original.atqa, original.sak, original.ats, name)
        self.iso_dep = original.iso_dep
        self.mode = mode
        self.recording = list(recording or [])
        self.inner = None
        if mode == "no_app":
            self.inner = DesfireCard(original.uid)
        elif mode == "wrong_key":
            fake = K.BuildingKeys(0, os.urandom(16), os.urandom(16))
            self.inner = DesfireCard(original.uid)
            personalise_desfire_direct(self.inner, fake, K.Credential(os.urandom(8), 0))
        elif mode != "replay":
            raise ValueError("mode must be no_app, wrong_key or replay")
        self.power_on()

    def power_on(self) -> None:
        self.pos = 0
        if self.inner is not None:
            self.inner.power_on()

    def transceive(self, data: bytes):
        if self.inner is not None:
            return self.inner.transceive(data)
        if self.pos >= len(self.recording):
            return SILENCE
        r = self.recording[self.pos]
        self.pos += 1
        return r


class FaultyCard(Card):
    """An ISO 14443-4 card (DESFire identity) that misbehaves.

    mode "garbage":   answers every frame with junk bytes (status 00 at the PN532)
    mode "truncated": answers SelectApplication correctly, then truncated frames
    mode "crc":       every answer arrives with a CRC error (PN532 status 02)
    mode "mute":      stays in the field but never answers (PN532 status 01)"""

    kind = "faulty"
    iso_dep = True

    def __init__(self, uid: bytes, mode: str = "garbage", name: str = ""):
        if mode not in ("garbage", "truncated", "crc", "mute"):
            raise ValueError("bad FaultyCard mode")
        super().__init__(uid, 0x0344, 0x20, DESFIRE_ATS, name)
        self.mode = mode
        self.n = 0

    def transceive(self, data: bytes):
        self.n += 1
        if self.mode == "mute":
            return SILENCE
        if self.mode == "crc":
            return CRC_ERROR
        if self.mode == "truncated":
            if data[:1] == b"\x5a":
                return b"\x00"
            return b"\xaf" + hashlib.sha256(bytes(data)).digest()[:5]
        junk = hashlib.sha256(b"junk" + bytes(data) + struct.pack(">I", self.n)).digest()
        return junk[: 3 + junk[0] % 20]


class RecordingCard(Card):
    """Wraps a card and records every response (to build a replay clone)."""

    def __init__(self, inner: Card):
        super().__init__(inner.uid, inner.atqa, inner.sak, inner.ats, inner.name)
        self.inner, self.iso_dep, self.kind = inner, inner.iso_dep, inner.kind
        self.responses: list = []

    def power_on(self) -> None:
        self.inner.power_on()

    def deselect(self) -> None:
        self.inner.deselect()

    def transceive(self, data: bytes):
        r = self.inner.transceive(data)
        self.responses.append(r)
        return r


class TamperingCard(Card):
    """Wraps a card and alters one byte of its n-th response (tests)."""

    def __init__(self, inner: Card, index: int, pos: int, xor_mask: int = 0x01):
        super().__init__(inner.uid, inner.atqa, inner.sak, inner.ats, inner.name)
        self.inner, self.iso_dep, self.kind = inner, inner.iso_dep, inner.kind
        self.index, self.pos, self.mask, self.n = index, pos, xor_mask, 0

    def power_on(self) -> None:
        self.inner.power_on()
        self.n = 0

    def deselect(self) -> None:
        self.inner.deselect()

    def transceive(self, data: bytes):
        r = self.inner.transceive(data)
        if self.n == self.index and isinstance(r, bytes) and r:
            b = bytearray(r)
            b[self.pos % len(b)] ^= self.mask
            r = bytes(b)
        self.n += 1
        return r
