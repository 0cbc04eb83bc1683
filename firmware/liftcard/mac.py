# HMAC-SHA256 truncated to 16 bytes, streamed, on the built-in hashlib.
#
# Written here rather than taken from micropython-lib: the registry's
# micropython-hmac pulls in a pure-Python hashlib that would shadow the built-in
# (hardware-accelerated on the ESP32) one.

import hashlib
from micropython import const

MAC_LEN = const(16)
_BLOCK = const(64)


class Mac:
    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        k = bytearray(_BLOCK)
        k[: len(key)] = key
        self._ipad = bytes(b ^ 0x36 for b in k)
        self._opad = bytes(b ^ 0x5C for b in k)
        self._h = None

    def start(self):
        self._h = hashlib.sha256(self._ipad)
        return self

    def update(self, data):
        self._h.update(data)

    def digest(self, full=False):
        # MAC_LEN bytes; full: all 32 (a derived key rather than a MAC).
        inner = self._h.digest()
        self._h = None
        outer = hashlib.sha256(self._opad)
        outer.update(inner)
        d = outer.digest()
        return d if full else d[:MAC_LEN]

    def of(self, data, full=False):
        self.start()
        self.update(data)
        return self.digest(full)


def equal(a, b):
    # Constant time in the content, so a forger learns nothing from timing.
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0
