"""Host (PCD) side of the DESFire native commands liftcard uses, over any
`transceive(bytes) -> bytes` (the PN532 InDataExchange, or a card object
directly). Used by the reference PCD (pcd.py) and by personalisation.

Errors:
* CardStatus(code)  the card answered a DESFire error status,
* C.AuthError       a cryptographic check failed (wrong key, forged, altered),
* Garbage           the answer does not have the shape the protocol requires.
The transport raises its own LinkError (time-out, CRC, card gone).
"""

from __future__ import annotations

import os

from . import crypto as C


class CardStatus(Exception):
    def __init__(self, code: int, where: str = ""):
        super().__init__("card status %02X%s" % (code, " in " + where if where else ""))
        self.code = code


class Garbage(Exception):
    pass


def _u24(n: int) -> bytes:
    return n.to_bytes(3, "little")


class DesfireHost:
    def __init__(self, transceive, rng=os.urandom):
        self.tx = transceive
        self.rng = rng
        self.session = None

    def _call(self, frame: bytes, where: str, expect=(0x00,)) -> tuple[int, bytes]:
        r = self.tx(bytes(frame))
        if not isinstance(r, (bytes, bytearray)) or len(r) < 1:
            raise Garbage("empty answer to %s" % where)
        r = bytes(r)
        if r[0] not in expect:
            self.session = None
            if r[0] in (0x00, 0xAF) or len(r) != 1:
                raise Garbage("unexpected answer to %s" % where)
            raise CardStatus(r[0], where)
        return r[0], r[1:]

    def _plain_ok(self, frame: bytes, where: str) -> bytes:
        """A command whose answer is status 00 (+ data) and, in an EV1 session, MAC8."""
        s = self.session
        if isinstance(s, C.EV1Session):
            s.cmd_cmac(frame)
        _, rest = self._call(frame, where)
        if isinstance(s, C.EV1Session):
            if len(rest) < 8:
                raise Garbage("answer to %s lacks its MAC" % where)
            s.verify_resp(rest[:-8], rest[-8:])
            return rest[:-8]
        return rest

    def select(self, aid: bytes) -> None:
        self.session = None
        _, rest = self._call(b"\x5a" + bytes(aid), "SelectApplication")
        if rest:
            raise Garbage("SelectApplication answered data")

    def auth_ev1(self, key_no: int, key: bytes, rnd_a: bytes | None = None) -> None:
        self.session = None
        pcd = C.EV1AuthPCD(key, rnd_a if rnd_a is not None else self.rng(16))
        _, ek = self._call(bytes([0xAA, key_no]), "AuthenticateAES", expect=(0xAF,))
        if len(ek) != 16:
            raise Garbage("AuthenticateAES: challenge is not 16 bytes")
        token = pcd.step1(ek)
        _, ek2 = self._call(b"\xaf" + token, "AuthenticateAES part 2")
        if len(ek2) != 16:
            raise Garbage("AuthenticateAES: answer is not 16 bytes")
        self.session = pcd.step2(ek2)
        self.auth_key = key_no

    def auth_ev2(self, key_no: int, key: bytes, rnd_a: bytes | None = None) -> None:
        self.session = None
        pcd = C.EV2FirstPCD(key, rnd_a if rnd_a is not None else self.rng(16))
        _, ek = self._call(bytes([0x71, key_no, 0x00]), "AuthenticateEV2First", expect=(0xAF,))
        if len(ek) != 16:
            raise Garbage("AuthenticateEV2First: challenge is not 16 bytes")
        _, resp = self._call(b"\xaf" + pcd.step1(ek), "AuthenticateEV2First part 2")
        if len(resp) != 32:
            raise Garbage("AuthenticateEV2First: answer is not 32 bytes")
        self.session = pcd.step2(resp)
        self.auth_key = key_no

    def read_data(self, file_no: int, offset: int, length: int) -> bytes:
        """ReadData (BD). Plain without a session; in an EV1 session the answer
        is data || MAC8; in an EV2 session the command carries MACt and the
        answer is data || MACt."""
        hdr = bytes([file_no]) + _u24(offset) + _u24(length)
        s = self.session
        if isinstance(s, C.EV2Session):
            frame = b"\xbd" + hdr + s.cmd_mac(0xBD, hdr)
            _, rest = self._call(frame, "ReadData")
            s.cmd_ctr += 1
            if len(rest) < 8:
                raise Garbage("ReadData answer lacks its MAC")
            data, mac = rest[:-8], rest[-8:]
            if not C.ct_equal(s.resp_mac(0x00, data), mac):
                self.session = None
                raise C.AuthError("response MAC mismatch")
            out = data
        else:
            out = self._plain_ok(b"\xbd" + hdr, "ReadData")
        if length and len(out) != length:
            raise Garbage("ReadData returned %d bytes, asked %d" % (len(out), length))
        return out

    # -- personalisation commands --
    def create_application(self, aid: bytes, key_settings: int, num_keys: int) -> None:
        self._plain_ok(b"\xca" + bytes(aid) + bytes([key_settings, 0x80 | num_keys]), "CreateApplication")

    def change_key(self, key_no: int, new_key: bytes, old_key: bytes, version: int = 0) -> None:
        """EV1 ChangeKey (C4) in an AES session. Changing the authenticated key:
        E(NewKey || ver || CRC32(C4 keyNo NewKey ver) || 0-pad); any other key:
        E((NewKey ^ OldKey) || ver || CRC32(C4 keyNo xored ver) || CRC32(NewKey) || 0-pad).
        Encryption is CBC under the session key with the session IV."""
        s = self.session
        if not isinstance(s, C.EV1Session):
            raise ValueError("ChangeKey needs an EV1 AES session")
        hdr = bytes([0xC4, key_no])
        if key_no == self.auth_key:
            body = bytes(new_key) + bytes([version])
            plain = body + C.crc32_desfire(hdr + body)
        else:
            body = C.xor(new_key, old_key) + bytes([version])
            plain = body + C.crc32_desfire(hdr + body) + C.crc32_desfire(new_key)
        plain += bytes((-len(plain)) % 16)
        ct = C.cbc_encrypt(s.key, s.iv, plain)
        s.iv = ct[-16:]
        if key_no == self.auth_key:
            self.session = None
            _, rest = self._call(hdr + ct, "ChangeKey")
            if rest:
                raise Garbage("ChangeKey answered data")
            return
        _, rest = self._call(hdr + ct, "ChangeKey")
        if len(rest) != 8:
            raise Garbage("ChangeKey answer lacks its MAC")
        s.verify_resp(b"", rest)

    def create_std_file(self, file_no: int, comm: int, access: int, size: int) -> None:
        self._plain_ok(bytes([0xCD, file_no, comm]) + access.to_bytes(2, "little") + _u24(size), "CreateStdDataFile")

    def write_data(self, file_no: int, offset: int, data: bytes, maced: bool) -> None:
        frame = bytes([0x3D, file_no]) + _u24(offset) + _u24(len(data)) + bytes(data)
        s = self.session
        if isinstance(s, C.EV1Session):
            mac = s.cmd_cmac(frame)
            if maced:
                frame += mac
            _, rest = self._call(frame, "WriteData")
            if len(rest) != 8:
                raise Garbage("WriteData answer lacks its MAC")
            s.verify_resp(b"", rest)
        else:
            self._call(frame, "WriteData")
