"""Card cryptography for liftcard NFC credentials (CPython reference).

Everything here is specified byte by byte in docs/nfc.md; the MicroPython reader
must produce the same bytes (tests/vectors/nfc.jsonl pins them).

* AES-128 primitives (ECB, CBC with an explicit IV) and AES-CMAC (RFC 4493) from
  the `cryptography` package, plus `cmac_iv`, the CMAC with a non-zero start IV
  that DESFire EV1 secure messaging chains (equal to RFC 4493 when iv = 0).
* AN10922 AES-128 key diversification (section 2.2: CMAC, 0x01 constant, pad to 32).
* DESFire EV1 native AES authentication (0xAA), both sides, with the EV1 CBC IV
  chaining, and the EV1 secure-messaging session (CMAC IV chaining, 8-byte MACs,
  CRC32 + CBC for enciphered command data).
* DESFire EV2 AuthenticateEV2First (0x71) both sides, session keys from SV1/SV2,
  and the EV2 truncated MAC (MACt) for CommMode.MAC.
* NTAG 424 DNA SUN: SDMMAC (AN12196 section 3.3/3.4) and PICCData.
"""

from __future__ import annotations

import hmac
import os
import struct
import zlib

from cryptography.hazmat.primitives import cmac as _cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ZERO16 = bytes(16)


class AuthError(Exception):
    """A cryptographic check failed (wrong key, forged or altered message)."""


# ---------------------------------------------------------------------------
# AES primitives
# ---------------------------------------------------------------------------


def _check_key(key: bytes) -> None:
    if len(key) != 16:
        raise ValueError("AES-128 key must be 16 bytes")


def aes_ecb_encrypt(key: bytes, block: bytes) -> bytes:
    _check_key(key)
    if len(block) % 16:
        raise ValueError("ECB data must be a multiple of 16 bytes")
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def aes_ecb_decrypt(key: bytes, block: bytes) -> bytes:
    _check_key(key)
    if len(block) % 16:
        raise ValueError("ECB data must be a multiple of 16 bytes")
    d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return d.update(block) + d.finalize()


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    _check_key(key)
    if len(data) % 16 or len(iv) != 16:
        raise ValueError("CBC data must be whole blocks and the IV 16 bytes")
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(data) + e.finalize()


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    _check_key(key)
    if len(data) % 16 or len(iv) != 16:
        raise ValueError("CBC data must be whole blocks and the IV 16 bytes")
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return d.update(data) + d.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def rotl(b: bytes) -> bytes:
    """Rotate left by one byte (DESFire RndA' / RndB')."""
    return b[1:] + b[:1]


def ct_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(bytes(a), bytes(b))


# ---------------------------------------------------------------------------
# CMAC
# ---------------------------------------------------------------------------


def cmac(key: bytes, msg: bytes) -> bytes:
    """AES-CMAC (RFC 4493 / NIST SP 800-38B), full 16 bytes, via `cryptography`."""
    _check_key(key)
    c = _cmac.CMAC(algorithms.AES(key))
    c.update(bytes(msg))
    return c.finalize()


def _dbl(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n = (n & ((1 << 128) - 1)) ^ 0x87
    return n.to_bytes(16, "big")


def cmac_subkeys(key: bytes) -> tuple[bytes, bytes]:
    """(K1, K2) of RFC 4493 section 2.3."""
    k1 = _dbl(aes_ecb_encrypt(key, ZERO16))
    return k1, _dbl(k1)


def cmac_iv(key: bytes, msg: bytes, iv: bytes = ZERO16) -> bytes:
    """CMAC whose CBC chain starts at `iv` instead of zero (DESFire EV1 secure
    messaging). With iv = 0 this is exactly RFC 4493 (checked against `cmac`)."""
    k1, k2 = cmac_subkeys(key)
    msg = bytes(msg)
    if msg and len(msg) % 16 == 0:
        body, last = msg[:-16], xor(msg[-16:], k1)
    else:
        r = len(msg) % 16
        body = msg[: len(msg) - r]
        tail = msg[len(msg) - r :] + b"\x80" + bytes(15 - r)
        last = xor(tail, k2)
    return cbc_encrypt(key, iv, body + last)[-16:]


def mac_t(full: bytes) -> bytes:
    """NXP truncation of a 16-byte CMAC to 8 bytes: the odd-indexed bytes
    (S14 S12 ... in NXP's MSB-first numbering = indexes 1, 3, ..., 15).
    Used by EV2 secure messaging and NTAG 424 SDMMAC."""
    return bytes(full[1::2])


# ---------------------------------------------------------------------------
# AN10922 key diversification (AES-128)
# ---------------------------------------------------------------------------


def an10922_aes128(master: bytes, div_input: bytes) -> bytes:
    """AN10922 section 2.2 AES-128 diversification.

    M = 0x01 || div_input (div_input 1..31 bytes). If M is shorter than 32
    bytes it is padded with 0x80 00 .. 00 to 32 bytes and the last block is
    XORed with K2, else (exactly 32 bytes) with K1; the diversified key is
    the CBC-MAC (IV 0) of the 32-byte result under the master key. Note this
    differs from plain CMAC(M) whenever len(M) <= 16: AN10922 always pads to
    two blocks."""
    _check_key(master)
    if not 1 <= len(div_input) <= 31:
        raise ValueError("AN10922 diversification input must be 1..31 bytes")
    k1, k2 = cmac_subkeys(master)
    m = b"\x01" + bytes(div_input)
    if len(m) < 32:
        m = m + b"\x80" + bytes(31 - len(m))
        sub = k2
    else:
        sub = k1
    block = m[:16] + xor(m[16:], sub)
    return cbc_encrypt(master, ZERO16, block)[-16:]


# ---------------------------------------------------------------------------
# CRC32 as DESFire EV1 uses it (enciphered command data, ChangeKey)
# ---------------------------------------------------------------------------


def crc32_desfire(data: bytes) -> bytes:
    """CRC-32 (IEEE, reflected, init 0xFFFFFFFF) *without* the final XOR
    (JAMCRC), 4 bytes little-endian: DESFire EV1 CRC32 for AES sessions."""
    return struct.pack("<I", (~zlib.crc32(bytes(data))) & 0xFFFFFFFF)


# ---------------------------------------------------------------------------
# DESFire EV1 native AES authentication (0xAA)
# ---------------------------------------------------------------------------


def ev1_session_key(rnd_a: bytes, rnd_b: bytes) -> bytes:
    """AES session key: RndA[0:4] || RndB[0:4] || RndA[12:16] || RndB[12:16]."""
    return rnd_a[0:4] + rnd_b[0:4] + rnd_a[12:16] + rnd_b[12:16]


class EV1AuthPCD:
    """Reader side of the EV1 native AES authentication.

    1. send  AA keyNo                    -> receive AF || ekRndB (16)
    2. step1(ekRndB): RndB = D(K, IV=0, ekRndB); token = E(K, IV=ekRndB, RndA || rotl(RndB))
       send  AF || token (32)            -> receive 00 || ekRndA' (16)
    3. step2(ekRndA'): rotl(RndA) must equal D(K, IV=token[16:32], ekRndA')
    CBC IV chaining: every cipher operation uses the last ciphertext block seen
    in the exchange as its IV; after success the session IV is 16 zero bytes."""

    def __init__(self, key: bytes, rnd_a: bytes | None = None):
        _check_key(key)
        self.key = bytes(key)
        self.rnd_a = bytes(rnd_a) if rnd_a is not None else os.urandom(16)
        if len(self.rnd_a) != 16:
            raise ValueError("RndA must be 16 bytes")
        self.rnd_b = b""
        self._iv = ZERO16

    def step1(self, ek_rnd_b: bytes) -> bytes:
        if len(ek_rnd_b) != 16:
            raise AuthError("authentication: first answer must be 16 bytes")
        self.rnd_b = cbc_decrypt(self.key, ZERO16, ek_rnd_b)
        token = cbc_encrypt(self.key, ek_rnd_b, self.rnd_a + rotl(self.rnd_b))
        self._iv = token[16:32]
        return token

    def step2(self, ek_rnd_a1: bytes) -> "EV1Session":
        if len(ek_rnd_a1) != 16:
            raise AuthError("authentication: final answer must be 16 bytes")
        rnd_a1 = cbc_decrypt(self.key, self._iv, ek_rnd_a1)
        if not ct_equal(rnd_a1, rotl(self.rnd_a)):
            raise AuthError("authentication: card did not prove the key")
        return EV1Session(ev1_session_key(self.rnd_a, self.rnd_b))


class EV1AuthPICC:
    """Card side of the EV1 native AES authentication (mirror of EV1AuthPCD)."""

    def __init__(self, key: bytes, rnd_b: bytes | None = None):
        _check_key(key)
        self.key = bytes(key)
        self.rnd_b = bytes(rnd_b) if rnd_b is not None else os.urandom(16)
        self._ek = b""

    def challenge(self) -> bytes:
        self._ek = cbc_encrypt(self.key, ZERO16, self.rnd_b)
        return self._ek

    def answer(self, token: bytes) -> tuple[bytes, "EV1Session"]:
        """token = the 32 bytes after AF. Returns (ekRndA', session)."""
        if len(token) != 32:
            raise ValueError("length")
        plain = cbc_decrypt(self.key, self._ek, token)
        rnd_a, rnd_b1 = plain[:16], plain[16:]
        if not ct_equal(rnd_b1, rotl(self.rnd_b)):
            raise AuthError("RndB' mismatch")
        ek = cbc_encrypt(self.key, token[16:32], rotl(rnd_a))
        return ek, EV1Session(ev1_session_key(rnd_a, self.rnd_b))


class EV1Session:
    """EV1 secure messaging after an AES authentication (both sides keep one).

    The 16-byte IV starts at zero and chains over the whole session:
    * every command frame sent (command code + header + data) that is not
      enciphered: IV = CMAC_IV(Ks, IV, frame); a MACed command carries the first
      8 bytes of that value after its data;
    * enciphered command data: (data || CRC32(cmd||header||data)) padded with
      zeros to 16, E(Ks, IV, ...) in CBC; IV = last cipher block;
    * every response with status 00 carries MAC8 = first 8 bytes of
      CMAC_IV(Ks, IV, data || 00) after its data; IV = that full CMAC."""

    def __init__(self, key: bytes):
        self.key = bytes(key)
        self.iv = ZERO16

    # -- commands --
    def cmd_cmac(self, frame: bytes) -> bytes:
        self.iv = cmac_iv(self.key, frame, self.iv)
        return self.iv[:8]

    def encrypt_cmd(self, cmd_and_header: bytes, data: bytes) -> bytes:
        plain = bytes(data) + crc32_desfire(bytes(cmd_and_header) + bytes(data))
        plain += bytes((-len(plain)) % 16)
        ct = cbc_encrypt(self.key, self.iv, plain)
        self.iv = ct[-16:]
        return ct

    def decrypt_cmd(self, cmd_and_header: bytes, ct: bytes, data_len: int) -> bytes:
        """Card side of encrypt_cmd: returns data, raises AuthError on a bad CRC/padding."""
        if not ct or len(ct) % 16:
            raise AuthError("enciphered data is not whole blocks")
        plain = cbc_decrypt(self.key, self.iv, ct)
        self.iv = ct[-16:]
        data, crc, pad = plain[:data_len], plain[data_len : data_len + 4], plain[data_len + 4 :]
        if len(crc) != 4 or any(pad) or not ct_equal(crc, crc32_desfire(bytes(cmd_and_header) + data)):
            raise AuthError("enciphered data CRC mismatch")
        return data

    # -- responses --
    def resp_mac(self, data: bytes, status: int = 0) -> bytes:
        self.iv = cmac_iv(self.key, bytes(data) + bytes([status]), self.iv)
        return self.iv[:8]

    def verify_resp(self, data: bytes, mac8: bytes, status: int = 0) -> None:
        if len(mac8) != 8 or not ct_equal(self.resp_mac(data, status), mac8):
            raise AuthError("response MAC mismatch")


# ---------------------------------------------------------------------------
# DESFire EV2 AuthenticateEV2First (0x71)
# ---------------------------------------------------------------------------


def ev2_session_keys(key: bytes, rnd_a: bytes, rnd_b: bytes) -> tuple[bytes, bytes]:
    """(SesAuthENCKey, SesAuthMACKey) = CMAC(K, SV1), CMAC(K, SV2) with
    SVx = label || 00 01 00 80 || RndA[0:2] || (RndA[2:8] ^ RndB[0:6]) || RndB[6:16] || RndA[8:16],
    label A5 5A for ENC, 5A A5 for MAC (bytes written MSB first as in AN12196)."""
    ctx = rnd_a[0:2] + xor(rnd_a[2:8], rnd_b[0:6]) + rnd_b[6:16] + rnd_a[8:16]
    sv1 = b"\xa5\x5a\x00\x01\x00\x80" + ctx
    sv2 = b"\x5a\xa5\x00\x01\x00\x80" + ctx
    return cmac(key, sv1), cmac(key, sv2)


class EV2Session:
    """EV2 secure messaging state: TI, CmdCtr, session keys. MACt is the odd
    bytes of CMAC(SesAuthMACKey, input)."""

    def __init__(self, ti: bytes, enc_key: bytes, mac_key: bytes):
        self.ti, self.enc_key, self.mac_key = bytes(ti), bytes(enc_key), bytes(mac_key)
        self.cmd_ctr = 0

    def cmd_mac(self, cmd: int, header_and_data: bytes) -> bytes:
        return mac_t(
            cmac(self.mac_key, bytes([cmd]) + struct.pack("<H", self.cmd_ctr) + self.ti + bytes(header_and_data))
        )

    def resp_mac(self, status: int, data: bytes) -> bytes:
        """MAC over the response; call after the command counter was incremented."""
        return mac_t(cmac(self.mac_key, bytes([status]) + struct.pack("<H", self.cmd_ctr) + self.ti + bytes(data)))


class EV2FirstPCD:
    """Reader side of AuthenticateEV2First (AN12196 section 5.6, Table 14). All
    cipher operations use IV = 0 (no chaining).
    71 keyNo 00            -> AF || E(K, RndB)
    AF || E(K, RndA || rotl(RndB)) (32)  -> 00 || E(K, TI || rotl(RndA) || PDcap2(6) || PCDcap2(6))"""

    def __init__(self, key: bytes, rnd_a: bytes | None = None):
        _check_key(key)
        self.key = bytes(key)
        self.rnd_a = bytes(rnd_a) if rnd_a is not None else os.urandom(16)
        self.rnd_b = b""

    def step1(self, ek_rnd_b: bytes) -> bytes:
        if len(ek_rnd_b) != 16:
            raise AuthError("authentication: first answer must be 16 bytes")
        self.rnd_b = cbc_decrypt(self.key, ZERO16, ek_rnd_b)
        return cbc_encrypt(self.key, ZERO16, self.rnd_a + rotl(self.rnd_b))

    def step2(self, resp: bytes) -> EV2Session:
        if len(resp) != 32:
            raise AuthError("authentication: final answer must be 32 bytes")
        plain = cbc_decrypt(self.key, ZERO16, resp)
        if not ct_equal(plain[4:20], rotl(self.rnd_a)):
            raise AuthError("authentication: card did not prove the key")
        enc, mac = ev2_session_keys(self.key, self.rnd_a, self.rnd_b)
        return EV2Session(plain[0:4], enc, mac)


class EV2FirstPICC:
    def __init__(self, key: bytes, rnd_b: bytes | None = None, ti: bytes | None = None):
        _check_key(key)
        self.key = bytes(key)
        self.rnd_b = bytes(rnd_b) if rnd_b is not None else os.urandom(16)
        self.ti = bytes(ti) if ti is not None else os.urandom(4)

    def challenge(self) -> bytes:
        return cbc_encrypt(self.key, ZERO16, self.rnd_b)

    def answer(self, token: bytes) -> tuple[bytes, EV2Session]:
        if len(token) != 32:
            raise ValueError("length")
        plain = cbc_decrypt(self.key, ZERO16, token)
        rnd_a = plain[:16]
        if not ct_equal(plain[16:], rotl(self.rnd_b)):
            raise AuthError("RndB' mismatch")
        resp = cbc_encrypt(self.key, ZERO16, self.ti + rotl(rnd_a) + bytes(12))
        enc, mac = ev2_session_keys(self.key, rnd_a, self.rnd_b)
        return resp, EV2Session(self.ti, enc, mac)


# ---------------------------------------------------------------------------
# NTAG 424 DNA Secure Unique NFC (SUN) message
# ---------------------------------------------------------------------------

PICC_DATA_TAG = 0xC7  # UID mirrored (bit 7), SDMReadCtr mirrored (bit 6), UID length 7


def ctr_le3(counter: int) -> bytes:
    if not 0 <= counter <= 0xFFFFFF:
        raise ValueError("SDMReadCtr is 24 bits")
    return counter.to_bytes(3, "little")


def sdm_session_mac_key(file_read_key: bytes, uid: bytes, counter: int) -> bytes:
    """SesSDMFileReadMACKey = CMAC(K_SDMFileRead, SV2),
    SV2 = 3C C3 00 01 00 80 || UID (7) || SDMReadCtr (3, LSB first)."""
    return cmac(file_read_key, b"\x3c\xc3\x00\x01\x00\x80" + bytes(uid) + ctr_le3(counter))


def sdmmac(file_read_key: bytes, uid: bytes, counter: int, mac_input: bytes = b"") -> bytes:
    """SDMMAC = MACt(CMAC(SesSDMFileReadMACKey, mac_input)), 8 bytes."""
    return mac_t(cmac(sdm_session_mac_key(file_read_key, uid, counter), mac_input))


def picc_data_encrypt(meta_read_key: bytes, uid: bytes, counter: int, pad: bytes) -> bytes:
    """PICCENCData = E(K_SDMMetaRead, IV=0, C7 || UID(7) || SDMReadCtr(3 LSB) || pad(5)).
    The chip fills `pad` with random bytes."""
    if len(uid) != 7 or len(pad) != 5:
        raise ValueError("UID must be 7 bytes and pad 5")
    return cbc_encrypt(meta_read_key, ZERO16, bytes([PICC_DATA_TAG]) + bytes(uid) + ctr_le3(counter) + bytes(pad))


def picc_data_decrypt(meta_read_key: bytes, enc: bytes) -> tuple[int, bytes, int]:
    """-> (PICCDataTag, UID, SDMReadCtr). Raises AuthError if the tag byte is not C7."""
    if len(enc) != 16:
        raise AuthError("PICCData must be 16 bytes")
    p = cbc_decrypt(meta_read_key, ZERO16, enc)
    if p[0] != PICC_DATA_TAG:
        raise AuthError("PICCDataTag mismatch (wrong SDMMetaRead key or forged data)")
    return p[0], p[1:8], int.from_bytes(p[8:11], "little")
