# NTAG 424 DNA SUN read and verification (docs/nfc.md "NTAG 424 DNA keyfob").
# The caller has probed with 5A 4C4346 and got an ISO status: this selects the
# NDEF application and file, reads the 92-byte liftcard record once, checks
# every byte of it, decrypts PICCData (SDMMetaRead key, per building) and
# verifies SDMMAC (SDMFileRead key, per card). The replay counter check is the
# caller's (sunctr.py).
#
#   00 A4 04 0C 07 D2760000850101 00 -> 90 00
#   00 A4 00 0C 02 E104 00           -> 90 00
#   00 B0 00 00 5C                   -> 92 bytes 90 00

from micropython import const

from .cmac import AuthError, Cmac, an10922, equal, mac_t
from .pn532 import DIN, DOUT, Garbage

READ_LEN = const(92)
_CID = const(22)  # card id (16 hex) = SDMMACInputOffset
_PICC = const(41)  # PICCENCData (32 hex)
_MAC = const(76)  # SDMMAC (16 hex)
_HEAD = b"\x00\x5a\xd1\x01\x56\x55\x04lc.invalid/t?i="  # file bytes 0..21

_SEL_APP = b"\x00\xa4\x04\x0c\x07\xd2\x76\x00\x00\x85\x01\x01\x00"
_SEL_FILE = b"\x00\xa4\x00\x0c\x02\xe1\x04\x00"
_READ = b"\x00\xb0\x00\x00\x5c"


def meta_div(building_id, out):
    # SDMMetaRead diversification input: 4C 43 4E B(4) FF (8 bytes).
    out[0] = 0x4C
    out[1] = 0x43
    out[2] = 0x4E
    for i in range(4):
        out[3 + i] = (building_id >> (24 - 8 * i)) & 0xFF
    out[7] = 0xFF


def _nib(c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    raise AuthError("SUN field is not upper-case hex")


def unhex(src, off, n, out):
    for i in range(n):
        out[i] = (_nib(src[off + 2 * i]) << 4) | _nib(src[off + 2 * i + 1])


class Ntag:
    def __init__(self):
        self.div = bytearray(15)
        self.key = bytearray(16)
        self.picc = bytearray(16)
        self.plain = bytearray(16)
        self.sv = bytearray(16)
        self.mac = bytearray(8)
        self.full = bytearray(16)
        self.counter = 0

    def _apdu(self, pn, cmd, expect):
        o = pn.out
        for i in range(len(cmd)):
            o[DOUT + i] = cmd[i]
        m = pn.exchange(len(cmd))
        rx = pn.rx
        if m < 2:
            raise Garbage("short APDU answer")
        if rx[DIN + m - 2] != 0x90 or rx[DIN + m - 1] != 0x00:
            raise AuthError("ISO status")
        if m - 2 != expect:
            raise Garbage("APDU answer length")

    def read(self, pn, master, meta_dec, building_id, card):
        # card (8 bytes) <- the MAC-verified card id; self.counter <- SDMReadCtr.
        self._apdu(pn, _SEL_APP, 0)
        self._apdu(pn, _SEL_FILE, 0)
        self._apdu(pn, _READ, READ_LEN)
        rx = pn.rx
        for i in range(len(_HEAD)):
            if rx[DIN + i] != _HEAD[i]:
                raise AuthError("not a liftcard SUN record")
        b = DIN + _PICC - 3
        e = DIN + _MAC - 3
        if (
            rx[b] != 0x26
            or rx[b + 1] != 0x70
            or rx[b + 2] != 0x3D
            or rx[e] != 0x26
            or rx[e + 1] != 0x6D
            or rx[e + 2] != 0x3D
        ):  # "&p=", "&m="
            raise AuthError("not a liftcard SUN record")
        unhex(rx, DIN + _CID, 8, card)
        picc = self.picc
        unhex(rx, DIN + _PICC, 16, picc)
        unhex(rx, DIN + _MAC, 8, self.mac)
        # PICCData = D(K_SDMMetaRead, IV 0, PICCENCData): one block
        p = self.plain
        meta_dec.decrypt(picc, p)
        if p[0] != 0xC7:
            raise AuthError("PICCDataTag")
        if pn.uid_len != 7:
            raise AuthError("UID length")
        for i in range(7):
            if p[1 + i] != pn.uid[i]:
                raise AuthError("PICCData UID is not the card's")
        self.counter = p[8] | (p[9] << 8) | (p[10] << 16)
        # K_SDMFileRead = AN10922(read_master, UID || 4C 43 4E || B || 02)
        div = self.div
        for i in range(7):
            div[i] = p[1 + i]
        meta_div(building_id, self.key)  # borrow key[0:7] for LCN || B
        for i in range(7):
            div[7 + i] = self.key[i]
        div[14] = 0x02
        an10922(master, div, 15, self.key)
        # SesSDMFileReadMACKey = CMAC(K, 3C C3 00 01 00 80 || UID || ctr(3 LE))
        sv = self.sv
        sv[0] = 0x3C
        sv[1] = 0xC3
        sv[2] = 0x00
        sv[3] = 0x01
        sv[4] = 0x00
        sv[5] = 0x80
        for i in range(10):
            sv[6 + i] = p[1 + i]
        full = self.full
        Cmac(self.key).mac(sv, 0, 16, full)
        # SDMMAC = MACt(CMAC(session key, file bytes 22..75))
        Cmac(full).mac(rx, DIN + _CID, _MAC - _CID, full)
        mac_t(full, sv, 0)
        if not equal(sv, 0, self.mac, 0, 8):
            raise AuthError("SDMMAC")
