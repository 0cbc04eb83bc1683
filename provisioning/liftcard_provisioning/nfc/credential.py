"""liftcard credential formats on the card (docs/nfc.md, "Credential formats").

DESFire: application AID 4C 43 46 ("LCF", wire order), AES keys, file 01 a
standard data file in CommMode.MAC holding the 26-byte credential below.

    off size field
      0   4  magic "LCCR"
      4   1  version = 1
      5   1  key_version (master-key generation used to diversify; informative)
      6   8  card_id (the whitelist id, docs/formats.md "card id")
     14   4  building_id (u32 BE)
     18   2  issuer (u16 BE)
     20   2  valid_from (u16 local day, docs/formats.md)
     22   2  valid_until (u16 local day, 0xFFFF = no end)
     24   2  CRC16/CCITT-FALSE of bytes 0..23 (BE)

NTAG 424 DNA: NDEF file E104 holding one URI record (https://) whose text is
    lc.invalid/t?i=<card_id 16 HEX>&p=<PICCENCData 32 HEX>&m=<SDMMAC 16 HEX>
with SDM mirroring PICCData at p= and SDMMAC at m=; SDMMACInputOffset is the
first character of the card id, so the MAC covers "<card_id>&p=<picc>&m=".

Keys (AN10922 AES-128, crypto.an10922_aes128) for building B (u32 BE):
    DESFire key k : master = perso_master (k = 0) or read_master (k = 1)
                    div input = UID(7) || 4C 43 46 || B(4) || k      (15 bytes)
    NTAG key k    : master = perso_master (k = 0) or read_master (k = 2)
                    div input = UID(7) || 4C 43 4E || B(4) || k      (15 bytes)
    NTAG SDMMetaRead (key 1, not per card): read_master,
                    div input = 4C 43 4E || B(4) || FF               (8 bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from liftcard_protocol.fields import crc16

from .crypto import an10922_aes128

AID_LCF = b"LCF"  # 4C 43 46 as sent in SelectApplication / CreateApplication
FILE_CRED = 0x01
KEY_APP_MASTER = 0
KEY_READ = 1
CRED_MAGIC = b"LCCR"
CRED_VERSION = 1
CRED_LEN = 26
# file access rights, 16-bit value Read(15..12) Write(11..8) RW(7..4) Change(3..0); sent LSB first
CRED_ACCESS = 0x1000  # read: key 1; write, read&write, change: key 0
APP_KEY_SETTINGS = (
    0x0B  # change MK allowed, free listing, no free create/delete, config changeable; keys changed with MK
)
APP_NUM_KEYS = 2

NTAG_DIV_TAG = b"LCN"
NTAG_KEY_MASTER = 0
NTAG_KEY_META = 1
NTAG_KEY_FILE = 2
NDEF_APP_DF_NAME = bytes.fromhex("D2760000850101")
NDEF_FILE_ID = bytes.fromhex("E104")
CC_FILE_ID = bytes.fromhex("E103")
URL_HOST = b"lc.invalid/t?"
URI_PREFIX_HTTPS = 0x04


class CredentialError(ValueError):
    pass


@dataclass(frozen=True)
class Credential:
    card_id: bytes
    building_id: int
    issuer: int = 0
    valid_from: int = 0
    valid_until: int = 0xFFFF
    key_version: int = 1

    def encode(self) -> bytes:
        if len(self.card_id) != 8:
            raise CredentialError("card_id must be 8 bytes")
        body = (
            CRED_MAGIC
            + bytes([CRED_VERSION, self.key_version])
            + bytes(self.card_id)
            + struct.pack(">IHHH", self.building_id, self.issuer, self.valid_from, self.valid_until)
        )
        return body + struct.pack(">H", crc16(body))

    @classmethod
    def decode(cls, data: bytes) -> "Credential":
        if len(data) != CRED_LEN:
            raise CredentialError("credential must be %d bytes" % CRED_LEN)
        if data[:4] != CRED_MAGIC:
            raise CredentialError("bad credential magic")
        if data[4] != CRED_VERSION:
            raise CredentialError("unknown credential version")
        if struct.unpack(">H", data[24:26])[0] != crc16(data[:24]):
            raise CredentialError("credential CRC mismatch")
        b, iss, vf, vu = struct.unpack(">IHHH", data[14:24])
        if vf > vu:
            raise CredentialError("valid_from after valid_until")
        return cls(bytes(data[6:14]), b, iss, vf, vu, data[5])


def _b32(building_id: int) -> bytes:
    return struct.pack(">I", building_id)


def desfire_div_input(uid: bytes, building_id: int, key_no: int) -> bytes:
    return bytes(uid) + AID_LCF + _b32(building_id) + bytes([key_no])


def ntag_div_input(uid: bytes, building_id: int, key_no: int) -> bytes:
    return bytes(uid) + NTAG_DIV_TAG + _b32(building_id) + bytes([key_no])


def ntag_meta_div_input(building_id: int) -> bytes:
    return NTAG_DIV_TAG + _b32(building_id) + b"\xff"


@dataclass(frozen=True)
class BuildingKeys:
    """The building's master keys. A reader holds only read_master; the
    technicians' personalisation tool also holds perso_master."""

    building_id: int
    read_master: bytes
    perso_master: bytes | None = None

    def desfire_key(self, uid: bytes, key_no: int) -> bytes:
        master = self.read_master if key_no == KEY_READ else self.perso_master
        if master is None:
            raise ValueError("no personalisation master key")
        return an10922_aes128(master, desfire_div_input(uid, self.building_id, key_no))

    def ntag_key(self, uid: bytes, key_no: int) -> bytes:
        if key_no == NTAG_KEY_META:
            return self.ntag_meta_key()
        master = self.read_master if key_no == NTAG_KEY_FILE else self.perso_master
        if master is None:
            raise ValueError("no personalisation master key")
        return an10922_aes128(master, ntag_div_input(uid, self.building_id, key_no))

    def ntag_meta_key(self) -> bytes:
        return an10922_aes128(self.read_master, ntag_meta_div_input(self.building_id))


# ---------------------------------------------------------------------------
# NTAG 424 NDEF file with SUN
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SunLayout:
    card_id_off: int  # = SDMMACInputOffset
    picc_off: int  # PICCDataOffset
    mac_off: int  # SDMMACOffset
    length: int  # NLEN + 2: bytes of the file in use


def ndef_template(card_id: bytes) -> tuple[bytes, SunLayout]:
    """The NDEF file as personalised (mirror fields zero-filled ASCII '0')."""
    if len(card_id) != 8:
        raise CredentialError("card_id must be 8 bytes")
    text = URL_HOST + b"i=" + card_id.hex().upper().encode() + b"&p=" + b"0" * 32 + b"&m=" + b"0" * 16
    payload = bytes([URI_PREFIX_HTTPS]) + text
    record = bytes([0xD1, 0x01, len(payload), 0x55]) + payload
    nlen = len(record)
    data = struct.pack(">H", nlen) + record
    base = 2 + 4 + 1 + len(URL_HOST)  # first byte of "i="
    card_id_off = base + 2
    picc_off = card_id_off + 16 + 3
    mac_off = picc_off + 32 + 3
    return data, SunLayout(card_id_off, picc_off, mac_off, len(data))


# The reader reads exactly the liftcard NDEF message (NLEN + record) in one
# ISOReadBinary, so every byte it reads is either a checked constant or covered
# by the SDMMAC: 92 bytes.
NDEF_READ_LEN = len(ndef_template(bytes(8))[0])


def parse_sun_ndef(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Parse what the reader read from the NDEF file.
    -> (card_id, PICCENCData, SDMMAC, mac_input). Raises CredentialError."""
    if len(data) < 2:
        raise CredentialError("NDEF file too short")
    nlen = struct.unpack(">H", data[:2])[0]
    tmpl, lay = ndef_template(bytes(8))
    if nlen != len(tmpl) - 2 or len(data) < lay.length:
        raise CredentialError("NDEF length is not the liftcard SUN record")
    msg = bytes(data[: lay.length])
    if msg[2 : 2 + 4 + 1 + len(URL_HOST) + 2] != tmpl[2 : 2 + 4 + 1 + len(URL_HOST) + 2]:
        raise CredentialError("not a liftcard SUN record")
    if msg[lay.picc_off - 3 : lay.picc_off] != b"&p=" or msg[lay.mac_off - 3 : lay.mac_off] != b"&m=":
        raise CredentialError("not a liftcard SUN record")
    try:
        card_id = _unhex(msg[lay.card_id_off : lay.card_id_off + 16])
        picc = _unhex(msg[lay.picc_off : lay.picc_off + 32])
        mac = _unhex(msg[lay.mac_off : lay.mac_off + 16])
    except ValueError:
        raise CredentialError("SUN fields are not upper-case hex") from None
    return card_id, picc, mac, msg[lay.card_id_off : lay.mac_off]


def _unhex(b: bytes) -> bytes:
    if any(c not in b"0123456789ABCDEF" for c in b):
        raise ValueError("hex")
    return bytes.fromhex(b.decode())


def legacy_card_id(uid: bytes) -> bytes:
    """docs/formats.md: a UID-only card's id is its UID left-padded with zeros."""
    return bytes(8 - len(uid)) + bytes(uid)
