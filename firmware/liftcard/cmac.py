# AES-128 CMAC (RFC 4493), CMAC with a chained IV (DESFire EV1 secure
# messaging), CBC in place and AN10922 key diversification, all on the
# built-in cryptolib.aes in ECB mode (docs/nfc.md). Byte-exact with
# provisioning/liftcard_provisioning/nfc/crypto.py; tests/vectors/nfc.jsonl pins them.
#
# Buffers are bytearrays with explicit offsets and lengths: no slicing, so
# nothing is allocated once a Cmac exists. A cryptolib.aes object encrypts or
# decrypts, never both: a key used both ways needs two (see `ecb`).

from cryptolib import aes
from micropython import const

_ECB = const(1)
_ZERO = bytes(16)


class AuthError(Exception):
    # A cryptographic check failed: wrong key, forged or altered data.
    pass


def dbl(src, dst):
    # dst = src * x in GF(2^128) (RFC 4493 subkey doubling).
    carry = src[0] >> 7
    for i in range(15):
        dst[i] = ((src[i] << 1) | (src[i + 1] >> 7)) & 0xFF
    dst[15] = ((src[15] << 1) & 0xFF) ^ (0x87 if carry else 0)


def ecb(key):
    # A new AES-128 ECB object: one for encrypting, another for decrypting.
    return aes(key, _ECB)


class Cmac:
    def __init__(self, key):
        self.enc = aes(key, _ECB)
        self.k1 = bytearray(16)
        self.k2 = bytearray(16)
        self._x = bytearray(16)
        self.enc.encrypt(_ZERO, self._x)
        dbl(self._x, self.k1)
        dbl(self.k1, self.k2)

    def mac(self, msg, off, n, out, iv=None):
        # out[0:16] = CMAC of msg[off:off+n], the CBC chain starting at iv
        # (None = zero: plain RFC 4493). iv may be out itself.
        x = self._x
        enc = self.enc
        if iv is None:
            for i in range(16):
                x[i] = 0
        else:
            for i in range(16):
                x[i] = iv[i]
        full = n > 0 and n % 16 == 0
        body = n - 16 if full else n - n % 16
        p = off
        end = off + body
        while p < end:
            for i in range(16):
                x[i] ^= msg[p + i]
            enc.encrypt(x, x)
            p += 16
        if full:
            k = self.k1
            for i in range(16):
                x[i] ^= msg[p + i] ^ k[i]
        else:
            k = self.k2
            r = n - body
            for i in range(16):
                if i < r:
                    b = msg[p + i]
                elif i == r:
                    b = 0x80
                else:
                    b = 0
                x[i] ^= b ^ k[i]
        enc.encrypt(x, out)


def cbc_encrypt(enc, iv, buf, off, n, tmp):
    # In place; iv (16 bytes) becomes the last cipher block. tmp: 16 bytes.
    p = off
    while p < off + n:
        for i in range(16):
            tmp[i] = buf[p + i] ^ iv[i]
        enc.encrypt(tmp, iv)
        for i in range(16):
            buf[p + i] = iv[i]
        p += 16


def cbc_decrypt(dec, iv, buf, off, n, tmp):
    # In place; iv (16 bytes) becomes the last cipher block. tmp: 16 bytes.
    p = off
    while p < off + n:
        _dec_block(dec, buf, p, tmp)
        for i in range(16):
            c = buf[p + i]
            buf[p + i] = tmp[i] ^ iv[i]
            iv[i] = c
        p += 16


_blk = bytearray(16)


def _dec_block(dec, buf, p, out):
    b = _blk
    for i in range(16):
        b[i] = buf[p + i]
    dec.decrypt(b, out)


def an10922(master, div, dn, out):
    # AN10922 AES-128 diversification: master is the master key's Cmac,
    # div[0:dn] the input (1..31 bytes); the key lands in out[0:16].
    # M = 01 || D, padded 80 00.. to 32 bytes and the last block XORed with
    # K2 (K1 when M is exactly 32 bytes); key = CBC-MAC (IV 0) of M.
    if not 1 <= dn <= 31:
        raise ValueError("AN10922 input must be 1..31 bytes")
    x = master._x
    enc = master.enc
    k = master.k1 if dn == 31 else master.k2
    for blk in range(2):
        for i in range(16):
            j = blk * 16 + i  # index in M
            if j == 0:
                b = 1
            elif j <= dn:
                b = div[j - 1]
            elif j == dn + 1:
                b = 0x80
            else:
                b = 0
            if blk:
                x[i] ^= b ^ k[i]
            else:
                x[i] = b
        enc.encrypt(x, out if blk else x)


def mac_t(full, out, off):
    # NXP truncation: the odd-indexed bytes of a 16-byte CMAC -> out[off:off+8].
    for i in range(8):
        out[off + i] = full[2 * i + 1]


def equal(a, ao, b, bo, n):
    # Constant time in the content.
    d = 0
    for i in range(n):
        d |= a[ao + i] ^ b[bo + i]
    return d == 0
