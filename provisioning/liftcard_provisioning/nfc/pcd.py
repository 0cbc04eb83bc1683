"""Reference PCD: a PN532 host driver over a serial port (pty or USB) and the
liftcard tap procedure. The MicroPython driver follows this model.

    pn = PN532(path)                      # os.open + termios raw, select() timeouts
    reader = Reader(pn, BuildingKeys(building_id, read_master), legacy_uid=False)
    tap = reader.read_tap(today=None)     # -> Tap(result, card_id, flags, kind, uid)

Results: "OK" (credential verified; the reader then looks card_id up in its
whitelist), "NO_CARD", and the docs/formats.md reason names BAD_READ,
AUTH_FAILED, REPLAY, CARD_REMOVED, CARD_GARBAGE, LEGACY_DISABLED, EXPIRED.
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from dataclasses import dataclass
from typing import NamedTuple

from . import credential as K
from . import crypto as C
from . import frames as Fr
from .desfire import CardStatus, DesfireHost, Garbage

FLAG_LEGACY_UID = 0x02  # docs/formats.md ride record flag


class PN532Error(Exception):
    pass


class PN532Timeout(PN532Error):
    """The chip did not ACK or answer in time."""


class LinkError(Exception):
    """InDataExchange reported a non-zero status (radio problem, card gone)."""

    def __init__(self, status: int):
        super().__init__("PN532 status %02X" % status)
        self.status = status


@dataclass(frozen=True)
class Target:
    tg: int
    atqa: int
    sak: int
    uid: bytes
    ats: bytes | None

    @property
    def iso_dep(self) -> bool:
        return bool(self.sak & 0x20)


class PN532:
    def __init__(self, path: str, ack_timeout: float = 0.2, resp_timeout: float = 1.0):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[4] = attrs[5] = termios.B115200
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        except termios.error:
            pass
        self.reader = Fr.FrameReader()
        self.ack_timeout, self.resp_timeout = ack_timeout, resp_timeout
        self.need_init = True
        self.sent_frames = self.sent_bytes = self.recv_frames = 0
        self.naks = 0

    def close(self) -> None:
        os.close(self.fd)

    # -- link --
    def _write(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        self.sent_frames += 1
        os.write(self.fd, data)

    def _next_frame(self, deadline: float):
        while True:
            f = self.reader.pop()
            if f is not None:
                self.recv_frames += 1
                return f
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    self.reader.feed(os.read(self.fd, 512))
                except BlockingIOError:
                    pass

    def command(self, cmd: int, params: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one command, wait for the ACK (resend up to twice), then the
        response (NACK up to 3 times on a checksum error). -> response data
        after the response code (cmd + 1)."""
        frame = Fr.encode(Fr.TFI_HOST, bytes([cmd]) + bytes(params))
        for attempt in range(3):
            self._write(frame)
            f = self._wait_ack()
            if f:
                break
        else:
            self.need_init = True
            raise PN532Timeout("no ACK for command %02X" % cmd)
        deadline = time.monotonic() + (self.resp_timeout if timeout is None else timeout)
        nacks = 0
        while True:
            f = self._next_frame(deadline)
            if f is None:
                self._write(Fr.ACK)  # abort the command
                self.need_init = True
                raise PN532Timeout("no response to command %02X" % cmd)
            if f.kind == "bad":
                if nacks >= 3:
                    self.need_init = True
                    raise PN532Error("repeated checksum errors")
                nacks += 1
                self.naks += 1
                self._write(Fr.NACK)
                continue
            if f.kind == "error":
                raise PN532Error("PN532 error frame (syntax) for command %02X" % cmd)
            if f.kind != "info":
                continue
            if f.tfi != Fr.TFI_CHIP or not f.data or f.data[0] != cmd + 1:
                continue  # a stale frame: skip it
            return f.data[1:]

    def _wait_ack(self) -> bool:
        deadline = time.monotonic() + self.ack_timeout
        while True:
            f = self._next_frame(deadline)
            if f is None:
                return False
            if f.kind == "ack":
                return True
            # anything else before the ACK is stale; keep looking

    # -- chip commands --
    def init(self) -> None:
        """Wake-up (HSU) and configure. Called again after any chip time-out."""
        self.reader = Fr.FrameReader()
        os.write(self.fd, Fr.WAKEUP)
        self.command(0x14, b"\x01\x14\x01")  # SAMConfiguration: normal mode, timeout 1 s, use IRQ
        fw = self.command(0x02)
        if len(fw) != 4 or fw[0] != 0x32:
            raise PN532Error("not a PN532")
        self.command(0x32, b"\x05\xFF\x01\x00")  # MaxRetries: ATR FF, PSL 01, PassiveActivation 00 (once)
        self.command(0x32, b"\x02\x00\x0B\x0A")  # timings: RFU, ATR_RES 0B, InDataExchange timeout 0A (~51 ms)
        self.need_init = False

    def list_target(self) -> Target | None:
        r = self.command(0x4A, b"\x01\x00")
        if not r or r[0] == 0:
            return None
        try:
            tg, atqa, sak, n = r[1], int.from_bytes(r[2:4], "big"), r[4], r[5]
            uid = bytes(r[6:6 + n])
            rest = r[6 + n:]
            if len(uid) != n or n not in (4, 7, 10):
                raise IndexError
        except IndexError:
            raise PN532Error("malformed InListPassiveTarget answer") from None
        ats = None
        if sak & 0x20:
            if not rest or rest[0] != len(rest):
                raise PN532Error("malformed ATS")
            ats = bytes(rest)
        return Target(tg, atqa, sak, uid, ats)

    def exchange(self, tg: int, data: bytes) -> bytes:
        r = self.command(0x40, bytes([tg]) + bytes(data))
        if not r:
            raise PN532Error("empty InDataExchange answer")
        if r[0] & 0x3F:
            raise LinkError(r[0] & 0x3F)
        return bytes(r[1:])

    def release(self) -> None:
        self.command(0x52, b"\x00")


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

        r = tx(b"\x5A" + K.AID_LCF)
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
        def apdu(data, where):
            r = tx(data)
            if len(r) < 2:
                raise Garbage("short answer to " + where)
            if r[-2:] != b"\x90\x00":
                raise CardStatus(r[-2], where)
            return r[:-2]

        apdu(b"\x00\xA4\x04\x0C\x07" + K.NDEF_APP_DF_NAME + b"\x00", "ISOSelectFile NDEF application")
        apdu(b"\x00\xA4\x00\x0C\x02" + K.NDEF_FILE_ID + b"\x00", "ISOSelectFile E104")
        data = apdu(b"\x00\xB0\x00\x00" + bytes([K.NDEF_READ_LEN]), "ISOReadBinary")
        if len(data) != K.NDEF_READ_LEN:
            raise Garbage("ISOReadBinary returned %d bytes" % len(data))
        card_id, picc, mac, mac_input = K.parse_sun_ndef(data)
        _tag, uid, ctr = C.picc_data_decrypt(self.keys.ntag_meta_key(), picc)
        if uid != t.uid:
            raise C.AuthError("PICCData UID differs from the anticollision UID")
        file_key = self.keys.ntag_key(uid, K.NTAG_KEY_FILE)
        if not C.ct_equal(C.sdmmac(file_key, uid, ctr, mac_input), mac):
            raise C.AuthError("SDMMAC mismatch")
        last = self.sun_counters.get(card_id, -1)
        if ctr <= last:
            return Tap("REPLAY", card_id, 0, "ntag424", t.uid)
        self.sun_counters[card_id] = ctr
        return Tap("OK", card_id, 0, "ntag424", t.uid)
