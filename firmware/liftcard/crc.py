# CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): guards ride records and journal
# entries against torn writes. A 16-bit result stays a small int on the ESP32
# (binascii.crc32 returns up to 2**32, which would allocate on every tap).

from array import array


def _table():
    t = array("H", bytes(512))
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t[i] = c & 0xFFFF
    return t


_T = _table()


def crc16(buf, start, end, crc=0xFFFF):
    t = _T
    for i in range(start, end):
        crc = ((crc << 8) & 0xFF00) ^ t[((crc >> 8) ^ buf[i]) & 0xFF]
    return crc
