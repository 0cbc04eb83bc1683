"""Host (PCD) side of the NTAG 424 DNA SUN read liftcard uses, over any
`transceive(bytes) -> bytes` (the PN532 InDataExchange, or a card object
directly). docs/nfc.md "NTAG 424 DNA keyfob (SUN)":

    00 A4 04 0C 07 D2760000850101 00   ISOSelectFile the NDEF application  -> 90 00
    00 A4 00 0C 02 E104 00             ISOSelectFile the NDEF file         -> 90 00
    00 B0 00 00 5C                     ISOReadBinary 92 bytes              -> record 90 00

`read_sun(tx, uid, keys)` sends them and checks what comes back: the liftcard
record byte by byte (credential.parse_sun_ndef), PICCData decrypted with the
building's SDMMetaRead key, its UID against the anticollision UID, and the
SDMMAC under the tag's diversified SDMFileRead key. The counter's freshness
(REPLAY) is the caller's: only it knows the last counter seen per card id.

Errors as in desfire.py: CardStatus (a status word other than 90 00; SW1 is
its code), Garbage (an answer of the wrong shape), C.AuthError (a
cryptographic check failed), K.CredentialError (not the liftcard record).
"""

from __future__ import annotations

from . import credential as K
from . import crypto as C
from .desfire import CardStatus, Garbage

SELECT_NDEF_APP = b"\x00\xa4\x04\x0c\x07" + K.NDEF_APP_DF_NAME + b"\x00"
SELECT_NDEF_FILE = b"\x00\xa4\x00\x0c\x02" + K.NDEF_FILE_ID + b"\x00"
READ_NDEF = b"\x00\xb0\x00\x00" + bytes([K.NDEF_READ_LEN])


def _apdu(tx, data: bytes, where: str) -> bytes:
    r = tx(data)
    if len(r) < 2:
        raise Garbage("short answer to " + where)
    if r[-2:] != b"\x90\x00":
        raise CardStatus(r[-2], where)
    return r[:-2]


def read_ndef(tx) -> bytes:
    """The three APDUs: -> the NDEF_READ_LEN bytes of the record."""
    _apdu(tx, SELECT_NDEF_APP, "ISOSelectFile NDEF application")
    _apdu(tx, SELECT_NDEF_FILE, "ISOSelectFile E104")
    data = _apdu(tx, READ_NDEF, "ISOReadBinary")
    if len(data) != K.NDEF_READ_LEN:
        raise Garbage("ISOReadBinary returned %d bytes" % len(data))
    return data


def verify_sun(data: bytes, uid: bytes, keys: K.BuildingKeys) -> tuple[bytes, int]:
    """Check a record read from the tag with anticollision UID `uid`.
    -> (card_id, SDMReadCtr)."""
    card_id, picc, mac, mac_input = K.parse_sun_ndef(data)
    _tag, picc_uid, ctr = C.picc_data_decrypt(keys.ntag_meta_key(), picc)
    if picc_uid != uid:
        raise C.AuthError("PICCData UID differs from the anticollision UID")
    file_key = keys.ntag_key(picc_uid, K.NTAG_KEY_FILE)
    if not C.ct_equal(C.sdmmac(file_key, picc_uid, ctr, mac_input), mac):
        raise C.AuthError("SDMMAC mismatch")
    return card_id, ctr


def read_sun(tx, uid: bytes, keys: K.BuildingKeys) -> tuple[bytes, int]:
    """Read and verify the SUN record: -> (card_id, SDMReadCtr)."""
    return verify_sun(read_ndef(tx), uid, keys)
