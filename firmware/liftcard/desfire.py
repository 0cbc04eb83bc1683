# DESFire EV1 credential read (docs/nfc.md "Tap procedure, DESFire"): native
# AES authentication (AA) with key 1 diversified per card (AN10922), then
# ReadData of file 1 in CommMode.MAC, the MAC checked with the EV1 session's
# chained CMAC, then the 26-byte credential checked. The caller has selected
# the LCF application (5A 4C4346 -> 00).
#
#   AA 01                  -> AF ekRndB(16)
#   AF token(32)           -> 00 ekRndA'(16)
#   BD 01 000000 1A0000    -> 00 credential(26) MAC8
#
# Works on the PN532's own buffers (pn.out / pn.rx): a tap allocates only the
# AES key schedules (cryptolib cannot re-key) and RndA.

import os

from micropython import const

from . import u32
from .cmac import AuthError, Cmac, an10922, cbc_decrypt, cbc_encrypt, ecb, equal
from .crc import crc16
from .pn532 import DIN, DOUT, Garbage

CRED_LEN = const(26)
_KEY_READ = const(1)
_FILE = const(1)
_AF = const(0xAF)


def check_status(rx, m, expect):
    # DESFire answer status: the expected one, a card error (AUTH_FAILED) or
    # an answer of the wrong shape (CARD_GARBAGE).
    if m < 1:
        raise Garbage("empty answer")
    s = rx[DIN]
    if s != expect:
        if s == 0 or s == _AF or m != 1:
            raise Garbage("unexpected answer")
        raise AuthError("card status")


class Desfire:
    def __init__(self):
        self.div = bytearray(15)
        self.key = bytearray(16)
        self.rnd_a = bytearray(16)
        self.rnd_b = bytearray(16)
        self.iv = bytearray(16)
        self.ks = bytearray(16)
        self.x = bytearray(16)
        self.tmp = bytearray(16)
        self.msg = bytearray(CRED_LEN + 1)
        self.cred = bytearray(CRED_LEN)  # the verified credential
        self.rnd = None  # tests: a fixed RndA

    def read(self, pn, master, building_id):
        # master: the read master key's Cmac. Raises AuthError, Garbage,
        # LinkError, PN532Error; on return self.cred holds a credential that
        # verified and belongs to this building.
        div = self.div
        for i in range(7):
            div[i] = pn.uid[i]
        div[7] = 0x4C  # "LCF"
        div[8] = 0x43
        div[9] = 0x46
        u32.put(div, 10, building_id)
        div[14] = _KEY_READ
        an10922(master, div, 15, self.key)
        ks = self._authenticate(pn)
        self._read_file(pn, Cmac(ks))
        check_credential(self.cred, building_id)

    def _authenticate(self, pn):
        o = pn.out
        rx = pn.rx
        key = self.key
        enc = ecb(key)
        dec = ecb(key)
        iv = self.iv
        tmp = self.tmp
        rnd_a = self.rnd_a
        rnd_b = self.rnd_b
        src = self.rnd or os.urandom(16)
        for i in range(16):
            rnd_a[i] = src[i]
        o[DOUT] = 0xAA
        o[DOUT + 1] = _KEY_READ
        m = pn.exchange(2)
        check_status(rx, m, _AF)
        if m != 17:
            raise Garbage("challenge is not 16 bytes")
        # RndB = D(K, IV 0, ekRndB); the IV becomes ekRndB
        for i in range(16):
            iv[i] = 0
            rnd_b[i] = rx[DIN + 1 + i]
        cbc_decrypt(dec, iv, rnd_b, 0, 16, tmp)
        # token = E(K, IV ekRndB, RndA || rotl(RndB)); the IV becomes token[16:32]
        o[DOUT] = _AF
        for i in range(16):
            o[DOUT + 1 + i] = rnd_a[i]
            o[DOUT + 17 + i] = rnd_b[(i + 1) & 15]
        cbc_encrypt(enc, iv, o, DOUT + 1, 32, tmp)
        m = pn.exchange(33)
        check_status(rx, m, 0)
        if m != 17:
            raise Garbage("answer is not 16 bytes")
        x = self.x
        for i in range(16):
            x[i] = rx[DIN + 1 + i]
        cbc_decrypt(dec, iv, x, 0, 16, tmp)
        d = 0
        for i in range(16):
            d |= x[i] ^ rnd_a[(i + 1) & 15]
        if d:
            raise AuthError("card did not prove the key")
        ks = self.ks
        for i in range(4):
            ks[i] = rnd_a[i]
            ks[4 + i] = rnd_b[i]
            ks[8 + i] = rnd_a[12 + i]
            ks[12 + i] = rnd_b[12 + i]
        return ks

    def _read_file(self, pn, sess):
        # EV1 secure messaging, session IV 0: IV1 = CMAC_IV(Ks, 0, command);
        # the answer's MAC8 = CMAC_IV(Ks, IV1, data || 00)[0:8].
        o = pn.out
        rx = pn.rx
        iv = self.iv
        o[DOUT] = 0xBD
        o[DOUT + 1] = _FILE
        o[DOUT + 2] = 0
        o[DOUT + 3] = 0
        o[DOUT + 4] = 0
        o[DOUT + 5] = CRED_LEN
        o[DOUT + 6] = 0
        o[DOUT + 7] = 0
        sess.mac(o, DOUT, 8, iv)
        m = pn.exchange(8)
        check_status(rx, m, 0)
        if m != 1 + CRED_LEN + 8:
            raise Garbage("ReadData length")
        msg = self.msg
        cred = self.cred
        for i in range(CRED_LEN):
            msg[i] = cred[i] = rx[DIN + 1 + i]
        msg[CRED_LEN] = 0
        sess.mac(msg, 0, CRED_LEN + 1, iv, iv)
        if not equal(iv, 0, rx, DIN + 1 + CRED_LEN, 8):
            raise AuthError("response MAC")


def check_credential(c, building_id):
    # docs/nfc.md "DESFire credential"; every refusal is AUTH_FAILED.
    if c[0] != 0x4C or c[1] != 0x43 or c[2] != 0x43 or c[3] != 0x52 or c[4] != 1:
        raise AuthError("not a liftcard credential")
    if crc16(c, 0, 24) != (c[24] << 8) | c[25]:
        raise AuthError("credential CRC")
    if (c[20] << 8) | c[21] > (c[22] << 8) | c[23]:
        raise AuthError("valid_from after valid_until")
    if u32.get(c, 14) != building_id:
        raise AuthError("credential for another building")
