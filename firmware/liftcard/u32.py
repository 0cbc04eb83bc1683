# Big-endian unsigned 32-bit fields in byte buffers (the byte formats of
# docs/formats.md and docs/uplink.md), read and written in place: neither
# allocates (a value of 2**30 or more is a heap int on an ESP32, as anywhere
# else), so both serve the tap path. Where a whole header is packed, struct
# does it in one call instead.

import struct


def get(buf, off=0):
    return (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]


def put(buf, off, v):
    struct.pack_into(">I", buf, off, v)
