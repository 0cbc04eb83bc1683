"""Card personalisation with the real DESFire commands (and the NTAG 424
emulator's factory). `personalise_desfire(transceive, uid, keys, cred)` runs
over any transceive (a USB PN532 later, the emulator now):

 1. 5A 000000                      SelectApplication (PICC level)
 2. CA 4C4346 0B 82                CreateApplication LCF, key settings 0B, 2 AES keys
 3. 5A 4C4346                      SelectApplication LCF
 4. AA 00 ...                      AuthenticateAES key 0 (factory key: 16 zero bytes)
 5. C4 01 E(...)                   ChangeKey 1 -> diversified read key
 6. CD 01 01 0010 1A0000           CreateStdDataFile 1, CommMode.MAC, access 0x1000, 26 bytes
 7. 3D 01 000000 1A0000 data MAC8  WriteData the credential
 8. C4 00 E(...)                   ChangeKey 0 -> diversified application master key (ends the session)
"""

from __future__ import annotations

from . import credential as K
from .cards import DesfireCard, Ntag424Card, RfError
from .desfire import DesfireHost


def personalise_desfire(transceive, uid: bytes, keys: K.BuildingKeys, cred: K.Credential,
                        factory_key: bytes = bytes(16), rng=None) -> None:
    h = DesfireHost(transceive, rng) if rng is not None else DesfireHost(transceive)
    h.select(b"\x00\x00\x00")
    h.create_application(K.AID_LCF, K.APP_KEY_SETTINGS, K.APP_NUM_KEYS)
    h.select(K.AID_LCF)
    h.auth_ev1(K.KEY_APP_MASTER, factory_key)
    h.change_key(K.KEY_READ, keys.desfire_key(uid, K.KEY_READ), factory_key, version=cred.key_version)
    h.create_std_file(K.FILE_CRED, 1, K.CRED_ACCESS, K.CRED_LEN)
    h.write_data(K.FILE_CRED, 0, cred.encode(), maced=True)
    h.change_key(K.KEY_APP_MASTER, keys.desfire_key(uid, K.KEY_APP_MASTER), factory_key,
                 version=cred.key_version)


class _Direct:
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
    return Ntag424Card(uid, keys.ntag_meta_key(), keys.ntag_key(uid, K.NTAG_KEY_FILE), card_id,
                       counter=counter, name=name)
