"""Card personalisation with the real DESFire commands.
`personalise_desfire(transceive, uid, keys, cred)` runs over any transceive
(a USB PN532's InDataExchange, or an emulated card's own interface):

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
from .desfire import DesfireHost


def personalise_desfire(
    transceive, uid: bytes, keys: K.BuildingKeys, cred: K.Credential, factory_key: bytes = bytes(16), rng=None
) -> None:
    h = DesfireHost(transceive, rng) if rng is not None else DesfireHost(transceive)
    h.select(b"\x00\x00\x00")
    h.create_application(K.AID_LCF, K.APP_KEY_SETTINGS, K.APP_NUM_KEYS)
    h.select(K.AID_LCF)
    h.auth_ev1(K.KEY_APP_MASTER, factory_key)
    h.change_key(K.KEY_READ, keys.desfire_key(uid, K.KEY_READ), factory_key, version=cred.key_version)
    h.create_std_file(K.FILE_CRED, 1, K.CRED_ACCESS, K.CRED_LEN)
    h.write_data(K.FILE_CRED, 0, cred.encode(), maced=True)
    h.change_key(K.KEY_APP_MASTER, keys.desfire_key(uid, K.KEY_APP_MASTER), factory_key, version=cred.key_version)
