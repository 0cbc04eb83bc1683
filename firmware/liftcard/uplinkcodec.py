# Reader <-> gateway link payloads (docs/uplink.md): the reader's side.
#
#   header (24) | body, AES-128-CTR encrypted | MAC16 over header + ciphertext
#
# Up: RIDES (a batch of ride records), STATUS (heartbeat), SUNCTR_UP (NTAG
# SUN counters). Down: ACK, TIME, DELTA (an LCWD blob), WHITELIST (a chunk of
# an LCWL file), SUNCTR_DOWN (the building's SUN counters, same body), RESEND
# (the seq to send the held rides again from). Keys are derived
# from the reader key; the counter of every message only grows (replay).
#
# Off the tap path, but run for every batch: the message buffers are
# preallocated and the CTR keystream goes through two 16-byte buffers. What
# still allocates: the hashlib objects of the MAC, and u32 counters above 2**30
# (ESP32 small ints are 31-bit).

import struct

import cryptolib
from micropython import const

from .mac import Mac, equal

MAGIC = b"LCLK"
VERSION = const(1)

RIDES = const(0x01)
STATUS = const(0x02)
SUNCTR_UP = const(0x03)  # NTAG 424 SUN counters this reader accepted
ACK = const(0x81)
TIME = const(0x82)
DELTA = const(0x83)
WHITELIST = const(0x84)
SUNCTR_DOWN = const(0x85)  # counters other readers of the building accepted
RESEND = const(0x86)  # send again what the log holds from a seq on (a restored gateway)

HEADER_LEN = const(24)
MAC_LEN = const(16)
RIDE_LEN = const(32)
MAX_RIDES = const(32)
STATUS_LEN = const(44)  # 28, the ack mark and the oldest seq held, then rssi, version, list capacity
MAX_BLOB = const(4096)
MIN_DELTA = const(40)  # the smallest LCWD: header + MAC
MIN_WHITELIST = const(48)  # the smallest LCWL: header + MAC
WLCHUNK_HEADER_LEN = const(12)
SUN_ENTRY_LEN = const(11)  # card_id u64, counter u24
MAX_SUN = const(64)
MIN_MSG = const(40)
MAX_MSG = const(4148)  # header + 12 + 4096 + MAC
_UP_MAX = const(1064)  # header + 32 rides + MAC
_U32 = const(0xFFFFFFFF)

ST_CLOCK_SYNCED = const(0x01)
ST_LOG_FULL = const(0x02)

_HDR = ">4sBBHIIII"  # magic version kind reserved reader building counter_hi counter_lo
_STATUS = ">IIIIIBBHIIIbBBBI"


class UplinkError(Exception):
    # A refused message; reason is one of: size magic version kind reader
    # building mac replay field (the same strings as the gateway's
    # FormatError). The message is the reason alone: nothing from the payload.
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def derive(key):
    # (enc_key 16 bytes, mac_key 32 bytes) from the reader's 32-byte key.
    m = Mac(key)
    return m.of(b"liftcard uplink enc"), m.of(b"liftcard uplink mac", True)


class Codec:
    # One per reader and boot. Up counter: (boot << 32) | msgno; each encode
    # uses msgno + 1. `boot` must be a persisted boot count that never repeats
    # and is on flash before the first encode. The counter is the CTR nonce:
    # keep one Codec for the whole boot and configure() it when the config
    # changes, so that no (key, counter, kind) is ever used twice
    # (docs/uplink.md, "The nonce rule").
    # Down replay state: (last_hi, last_lo), the last accepted down counter
    # (0, 0 = none; a counter of 0 is never accepted). Persist it if a replayed
    # TIME after a reboot matters; restore it by assigning both.

    def __init__(self, key, reader_id, building_id, boot=0):
        self.configure(key, reader_id, building_id)
        self.boot = boot
        self.msgno = 0
        self.last_hi = 0
        self.last_lo = 0
        self._blk = bytearray(16)  # the CTR counter block
        self._ks = bytearray(16)  # its keystream block
        self._up = bytearray(_UP_MAX)
        self._down = None  # made at the first open() that does not decrypt in place
        # Fields of the last message open() accepted, by kind.
        self.seq = 0  # ACK: every record up to seq is acknowledged
        self.epoch_s = 0  # TIME: liftcard epoch seconds
        self.from_seq = 0  # RESEND: send the held rides again from this seq
        self.blob = None  # DELTA: the LCWD; WHITELIST: the chunk's data; SUNCTR_DOWN: the entries (memoryview into a reused buffer)
        self.version = 0  # WHITELIST: version, total, offset
        self.total = 0
        self.offset = 0

    def configure(self, key, reader_id, building_id):
        # New keys and identity (a reconfigured reader). The up counter and
        # the down replay state carry on: counters only grow within a boot,
        # whatever the key.
        enc, mac = derive(key)
        # ECB only: this MicroPython's cryptolib has no CTR (mode 6 raises),
        # so CTR is built here from single-block ECB encryptions.
        self._aes = cryptolib.aes(enc, 1)
        self._mac = Mac(mac)
        self.reader_id = reader_id
        self.building_id = building_id

    # ---- AES-128-CTR ----

    def _crypt(self, src, soff, dst, doff, n, hdr):
        # dst[doff:doff+n] = src[soff:soff+n] XOR keystream. The first counter
        # block is counter(8) | kind | 7 zero bytes, taken from the header
        # bytes hdr[16:24] and hdr[5]; +1 (big-endian) per 16-byte block.
        # aes.encrypt writes into the preallocated _ks: nothing per block.
        blk = self._blk
        ks = self._ks
        aes = self._aes
        for i in range(8):
            blk[i] = hdr[16 + i]
        blk[8] = hdr[5]
        for i in range(9, 16):
            blk[i] = 0
        pos = 0
        while pos < n:
            aes.encrypt(blk, ks)
            m = n - pos
            if m > 16:
                m = 16
            for i in range(m):
                dst[doff + pos + i] = src[soff + pos + i] ^ ks[i]
            pos += 16
            i = 15
            while i >= 0:
                v = (blk[i] + 1) & 0xFF
                blk[i] = v
                if v:
                    break
                i -= 1

    # ---- up: encode ----

    def _seal(self, kind, end):
        # Header, encrypt the body in place, MAC. Returns a memoryview of the
        # message in the reused buffer: valid until the next encode.
        if self.msgno >= _U32:
            raise UplinkError("field")  # 2**32 messages in one boot: reboot
        self.msgno += 1
        b = self._up
        struct.pack_into(_HDR, b, 0, MAGIC, VERSION, kind, 0, self.reader_id, self.building_id, self.boot, self.msgno)
        self._crypt(b, HEADER_LEN, b, HEADER_LEN, end - HEADER_LEN, b)
        mv = memoryview(b)
        m = self._mac
        m.start()
        m.update(mv[:end])
        b[end : end + MAC_LEN] = m.digest()
        return mv[: end + MAC_LEN]

    def rides(self, records):
        # RIDES from 0..32 ride records (32-byte buffers, e.g. as the ride log
        # yields them; a reused buffer is fine: each is copied at once).
        b = self._up
        pos = HEADER_LEN
        n = 0
        for r in records:
            if n == MAX_RIDES:
                raise UplinkError("size")
            if len(r) != RIDE_LEN:
                raise UplinkError("size")
            for i in range(RIDE_LEN):
                b[pos + i] = r[i]
            pos += RIDE_LEN
            n += 1
        return self._seal(RIDES, pos)

    def status(
        self,
        uptime,
        free_heap,
        backlog,
        wl_version,
        unrecorded=0,
        last_error=0,
        flags=0,
        boot=0,
        time=0,
        acked_seq=0,
        oldest_seq=1,
        rssi=0,
        fw_major=0,
        fw_minor=0,
        fw_patch=0,
        wl_capacity=0,
    ):
        # STATUS heartbeat; boot is the low 16 bits of the boot count, time
        # the reader's clock (liftcard epoch seconds), acked_seq the log's ack
        # mark and oldest_seq the lowest seq it still holds (a gateway behind
        # them asks for a RESEND); rssi the signal in dBm (0: unknown), the
        # firmware's version, and wl_capacity the cards the whitelist can hold
        # (wlcap.py; 0: unknown), so the gateway sends no list that cannot fit.
        if rssi < -128:
            rssi = -128
        elif rssi > 127:
            rssi = 127
        struct.pack_into(
            _STATUS,
            self._up,
            HEADER_LEN,
            uptime,
            free_heap,
            backlog,
            wl_version,
            unrecorded,
            last_error,
            flags,
            boot & 0xFFFF,
            time,
            acked_seq,
            oldest_seq,
            rssi,
            fw_major,
            fw_minor,
            fw_patch,
            wl_capacity,
        )
        return self._seal(STATUS, HEADER_LEN + STATUS_LEN)

    def sunctr(self, entries):
        # SUNCTR_UP from 1..64 (card_id 8 bytes, counter 0..0xFFFFFF) pairs.
        b = self._up
        pos = HEADER_LEN
        n = 0
        for card, ctr in entries:
            if n == MAX_SUN or len(card) != 8 or ctr < 0 or ctr > 0xFFFFFF:
                raise UplinkError("size" if n == MAX_SUN else "field")
            for i in range(8):
                b[pos + i] = card[i]
            b[pos + 8] = (ctr >> 16) & 0xFF
            b[pos + 9] = (ctr >> 8) & 0xFF
            b[pos + 10] = ctr & 0xFF
            pos += SUN_ENTRY_LEN
            n += 1
        if not n:
            raise UplinkError("size")
        return self._seal(SUNCTR_UP, pos)

    # ---- down: verify, decrypt, decode ----

    def open(self, msg, in_place=False):
        # Checks a down message and returns its kind, the decoded fields in
        # attributes (seq, epoch_s, blob, version/total/offset). Raises
        # UplinkError(reason); a refused message leaves the replay state and
        # the fields as they were (blob content is only valid until the next
        # open(): the buffer is reused). Checks in
        # order: size, magic, version, MAC, reserved, kind, reader, building,
        # replay, body.
        # in_place: msg is writable (the link's receive buffer) and the body
        # is decrypted where it is, blob pointing into msg; saves a second
        # 4 KB buffer in the reader's heap. msg is scrambled if refused after
        # the MAC.
        n = len(msg)
        if n < MIN_MSG or n > MAX_MSG:
            raise UplinkError("size")
        for i in range(4):
            if msg[i] != MAGIC[i]:
                raise UplinkError("magic")
        if msg[4] != VERSION:
            raise UplinkError("version")
        end = n - MAC_LEN
        mv = memoryview(msg)
        m = self._mac
        m.start()
        m.update(mv[:end])
        if not equal(m.digest(), mv[end:]):
            raise UplinkError("mac")
        if msg[6] or msg[7]:
            raise UplinkError("field")
        kind = msg[5]
        if (
            kind != ACK
            and kind != TIME
            and kind != DELTA
            and kind != WHITELIST
            and kind != SUNCTR_DOWN
            and kind != RESEND
        ):
            raise UplinkError("kind")
        _, _, _, _, reader, building, hi, lo = struct.unpack_from(_HDR, msg, 0)
        if reader != self.reader_id:
            raise UplinkError("reader")
        if building != self.building_id:
            raise UplinkError("building")
        if hi < self.last_hi or (hi == self.last_hi and lo <= self.last_lo):
            raise UplinkError("replay")
        blen = end - HEADER_LEN
        if blen > WLCHUNK_HEADER_LEN + MAX_BLOB:
            raise UplinkError("size")
        if kind == ACK or kind == TIME or kind == RESEND:
            if blen != 4:
                raise UplinkError("size")
        elif kind == DELTA:
            if blen < MIN_DELTA or blen > MAX_BLOB:
                raise UplinkError("size")
        elif kind == SUNCTR_DOWN:
            if blen % SUN_ENTRY_LEN or blen == 0 or blen > MAX_SUN * SUN_ENTRY_LEN:
                raise UplinkError("size")
        elif blen <= WLCHUNK_HEADER_LEN:
            raise UplinkError("size")
        if in_place:
            body = msg
            b0 = HEADER_LEN
        else:
            body = self._down
            if body is None:
                body = self._down = bytearray(WLCHUNK_HEADER_LEN + MAX_BLOB)
            b0 = 0
        self._crypt(msg, HEADER_LEN, body, b0, blen, msg)
        if kind == ACK or kind == TIME or kind == RESEND:
            v = struct.unpack_from(">I", body, b0)[0]
            if kind == ACK:
                self.seq = v
            elif kind == TIME:
                self.epoch_s = v
            else:
                self.from_seq = v
        elif kind == DELTA or kind == SUNCTR_DOWN:
            self.blob = memoryview(body)[b0 : b0 + blen]
        else:
            version, total, offset = struct.unpack_from(">III", body, b0)
            dlen = blen - WLCHUNK_HEADER_LEN
            if total < MIN_WHITELIST or offset + dlen > total:
                raise UplinkError("field")
            self.version = version
            self.total = total
            self.offset = offset
            self.blob = memoryview(body)[b0 + WLCHUNK_HEADER_LEN : b0 + blen]
        self.last_hi = hi
        self.last_lo = lo
        return kind
