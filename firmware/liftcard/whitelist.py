# The reader's card whitelist on flash (docs/formats.md: LCWL, LCWD, LCWO).
#
# The base list is a sorted file of 16-byte records, never held in RAM. A
# sparse index (every step-th card id, at most _IDX_MAX of them: 4 KB) is built
# while the list's MAC is checked at open; a lookup searches it in RAM, then
# reads the one window of `step` records that can hold the card with a single
# seek and read, and searches that. On littlefs every seek to another block
# walks the file's block list, so one seek per tap instead of one per
# binary-search step is what keeps flash reads near O(log n). Deltas merge into a
# small overlay (at most OVERLAY_MAX entries, kept in RAM and on flash) that is
# consulted first; when it would grow past that, base and overlay are streamed
# into a new base list. Every replacement writes a new file, verifies it, and
# renames it over the old one (atomic.py): after a power cut the reader holds
# the old list or the new one, never a mix.

import os
import struct
from micropython import const

from . import atomic
from .mac import MAC_LEN, Mac, equal

REC = const(16)
HDR = const(32)
OP = const(17)
DHDR = const(24)
OVERLAY_MAX = const(256)
_OP_UPSERT = const(1)
_OP_REMOVE = const(2)
_FORMAT = const(1)
_CHUNK_RECS = const(64)
_IDX_MAX = const(512)

DIR = "wl"
BASE = "wl/base.bin"
BASE_NEW = "wl/base.new"
OVERLAY = "wl/overlay.bin"
OVERLAY_NEW = "wl/overlay.new"
RECV = "wl/recv.new"  # a list arriving in chunks (wlrecv.py)


class WhitelistError(Exception):
    pass


def _cmp8(a, ao, b, bo):
    for i in range(8):
        d = a[ao + i] - b[bo + i]
        if d:
            return d
    return 0


def _check_record(buf, off):
    sc = buf[off + 13]
    if (sc >> 4) > 3 or (sc & 15) > 3:
        raise WhitelistError("invalid status or class in a card record")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def discard_partial():
    # At boot: a list a power cut caught half received (wlrecv.py) is not
    # resumed; the gateway sends it again from offset 0.
    _remove(RECV)


class Whitelist:
    # Buffers are allocated once per reader; configure() and open() reuse them.
    def __init__(self, key, reader_id, building_id):
        self.configure(key, reader_id, building_id)
        self.base_version = 0
        self.version = 0  # the version held: base, or overlay on top of it
        self.count = 0
        self.loaded = False
        self.error = None  # why no list is loaded, for the status report
        self._f = None
        self.rec = bytearray(REC)
        self._ov = bytearray(OP * OVERLAY_MAX)
        self._ovn = 0
        self._chunk = bytearray(REC * _CHUNK_RECS)
        self._prev = bytearray(8)
        self._idx = bytearray(8 * _IDX_MAX)
        self._nidx = 0
        self._step = 1
        self._win = None  # bytearray(step * REC), sized at open

    def configure(self, key, reader_id, building_id):
        self._mac = Mac(key)
        self.reader_id = reader_id
        self.building_id = building_id

    # ---- boot ----

    def open(self):
        self.close()
        try:
            os.mkdir(DIR)
        except OSError:
            pass
        # Leftovers of a replacement a power cut interrupted before its rename.
        # (Not RECV: open() also runs after an install or a compaction, which
        # must not cut a list arriving in chunks short; see discard_partial.)
        _remove(BASE_NEW)
        _remove(OVERLAY_NEW)
        self.loaded = False
        self.error = None
        self.base_version = self.version = self.count = 0
        self._ovn = 0
        self._nidx = 0
        if not _exists(BASE):
            self.error = "no whitelist installed"
            return
        try:
            f = open(BASE, "rb")
            _, version, count = self._verify_list(f, None, False, index=True)
        except (OSError, WhitelistError) as e:
            self.error = "whitelist on flash is invalid: %s" % e
            return
        self._f = f
        self.base_version = self.version = version
        self.count = count
        self.loaded = True
        self._load_overlay()

    def _load_overlay(self):
        if not _exists(OVERLAY):
            return
        try:
            with open(OVERLAY, "rb") as f:
                data = f.read()
            base, new, n = self._parse_ops(data, b"LCWO")
            if base != self.base_version:
                raise WhitelistError("stale overlay")
        except (OSError, WhitelistError):
            # Stale (a compaction or full replacement was cut after its rename)
            # or damaged: the base list alone is a consistent older version.
            _remove(OVERLAY)
            return
        self._ov[: n * OP] = memoryview(data)[DHDR : DHDR + n * OP]
        self._ovn = n
        self.version = new

    def close(self):
        if self._f:
            self._f.close()
            self._f = None

    # ---- the tap path: no allocation ----

    def lookup(self, key):
        # key: 8-byte card id. On True, self.rec holds the card's record.
        ov = self._ov
        lo = 0
        hi = self._ovn - 1
        while lo <= hi:
            mid = (lo + hi) >> 1
            c = _cmp8(ov, mid * OP + 1, key, 0)
            if c < 0:
                lo = mid + 1
            elif c > 0:
                hi = mid - 1
            else:
                at = mid * OP
                if ov[at] == _OP_REMOVE:
                    return False
                rec = self.rec
                for i in range(REC):
                    rec[i] = ov[at + 1 + i]
                return True
        f = self._f
        if f is None or not self._nidx:
            return False
        # The last index entry <= key, in RAM.
        idx = self._idx
        lo = 0
        hi = self._nidx - 1
        j = -1
        while lo <= hi:
            mid = (lo + hi) >> 1
            if _cmp8(idx, mid * 8, key, 0) <= 0:
                j = mid
                lo = mid + 1
            else:
                hi = mid - 1
        if j < 0:
            return False
        # Its window of records: one seek, one read.
        step = self._step
        first = j * step
        n = self.count - first
        if n > step:
            n = step
        win = self._win
        f.seek(HDR + first * REC)
        f.readinto(win)  # past the last record it reads the MAC: never compared
        lo = 0
        hi = n - 1
        while lo <= hi:
            mid = (lo + hi) >> 1
            c = _cmp8(win, mid * REC, key, 0)
            if c < 0:
                lo = mid + 1
            elif c > 0:
                hi = mid - 1
            else:
                rec = self.rec
                at = mid * REC
                for i in range(REC):
                    rec[i] = win[at + i]
                return True
        return False

    # ---- verification ----

    def _verify_list(self, src, dst, check_records, newer_than=-1, index=False):
        # Streams a whole LCWL file from src (optionally copying it to dst),
        # checking the header, the MAC and, for a new list, record order and
        # fields. Returns (header bytes, version, count).
        size = src.seek(0, 2)
        src.seek(0)
        hdr = src.read(HDR)
        if len(hdr) < HDR:
            raise WhitelistError("whitelist too short")
        magic, fmt, rsize, flags, reader, building, version, count = struct.unpack_from(">4sBBHIIII", hdr)
        if magic != b"LCWL":
            raise WhitelistError("not a whitelist (bad magic)")
        if fmt != _FORMAT or rsize != REC:
            raise WhitelistError("unsupported whitelist format")
        if flags or hdr[28] or hdr[29] or hdr[30] or hdr[31]:
            raise WhitelistError("whitelist header has reserved bits set")
        if size != HDR + count * REC + MAC_LEN:
            raise WhitelistError("whitelist size does not match its count")
        if reader != self.reader_id:
            raise WhitelistError("whitelist is for another reader")
        if building != self.building_id:
            raise WhitelistError("whitelist is for another building")
        if version <= newer_than:
            raise WhitelistError("stale whitelist version %d (holding %d)" % (version, newer_than))
        mac = self._mac.start()
        mac.update(hdr)
        if dst:
            dst.write(hdr)
        if index:
            step = (count + _IDX_MAX - 1) // _IDX_MAX or 1
            self._step = step
            self._nidx = 0
            if self._win is None or len(self._win) != step * REC:
                self._win = None
                self._win = bytearray(step * REC)
            at = 0  # the next record that starts an index window
        g = 0
        chunk = self._chunk
        prev = self._prev
        left = count
        first = True
        while left:
            n = min(left, _CHUNK_RECS)
            view = memoryview(chunk)[: n * REC]
            if src.readinto(view) != n * REC:
                raise WhitelistError("whitelist truncated")
            mac.update(view)
            if check_records:
                for r in range(n):
                    off = r * REC
                    if not first and _cmp8(chunk, off, prev, 0) <= 0:
                        raise WhitelistError("whitelist records are not strictly sorted")
                    first = False
                    _check_record(chunk, off)
                    for i in range(8):
                        prev[i] = chunk[off + i]
            if dst:
                dst.write(view)
            if index:
                while at < g + n:
                    o = (at - g) * REC
                    k = self._nidx * 8
                    for i in range(8):
                        self._idx[k + i] = chunk[o + i]
                    self._nidx += 1
                    at += step
            g += n
            left -= n
        tag = src.read(MAC_LEN)
        if not equal(mac.digest(), tag):
            raise WhitelistError("whitelist MAC does not verify")
        if dst:
            dst.write(tag)
        return hdr, version, count

    def _parse_ops(self, data, magic):
        # Checks an LCWD delta or LCWO overlay; returns (base, new, count).
        if len(data) < DHDR + MAC_LEN:
            raise WhitelistError("delta too short")
        m, fmt, rsize, n, reader, building, base, new = struct.unpack_from(">4sBBHIIII", data)
        if m != magic:
            raise WhitelistError("not a whitelist delta (bad magic)")
        if fmt != _FORMAT or rsize != REC:
            raise WhitelistError("unsupported delta format")
        if len(data) != DHDR + n * OP + MAC_LEN:
            raise WhitelistError("delta size does not match its count")
        if reader != self.reader_id:
            raise WhitelistError("delta is for another reader")
        if building != self.building_id:
            raise WhitelistError("delta is for another building")
        mv = memoryview(data)
        if not equal(self._mac.of(mv[: len(data) - MAC_LEN]), mv[len(data) - MAC_LEN :]):
            raise WhitelistError("delta MAC does not verify")
        if new <= base:
            raise WhitelistError("delta does not move the version forward")
        for i in range(n):
            at = DHDR + i * OP
            op = data[at]
            if i and _cmp8(data, at + 1, data, at + 1 - OP) <= 0:
                raise WhitelistError("delta operations are not strictly sorted")
            if op == _OP_UPSERT:
                _check_record(data, at + 1)
            elif op == _OP_REMOVE:
                for k in range(9, OP):
                    if data[at + k]:
                        raise WhitelistError("remove operation carries a record")
            else:
                raise WhitelistError("unknown delta operation %d" % op)
        return base, new, n

    # ---- updates (never on the tap path) ----

    def install(self, path, move=False):
        # Full replacement from a staged LCWL file (any path, host or device).
        # move: the file is already on this filesystem and ours to take (a
        # list received in chunks): it is verified where it is and renamed
        # over the base list, so the flash never holds three copies.
        try:
            src = open(path, "rb")
        except OSError:
            raise WhitelistError("cannot open %s" % path)
        if move:
            try:
                _, version, count = self._verify_list(src, None, True, self.version)
            finally:
                src.close()
            self.close()
            try:
                atomic.commit(path, BASE)
            except OSError:
                self.open()  # keep serving the old list
                raise
            _remove(OVERLAY)
            self.open()
            return version, count
        try:
            with atomic.Replace(BASE, BASE_NEW) as dst:
                _, version, count = self._verify_list(src, dst, True, self.version)
                src.close()
                self.close()  # the old list, before the new one takes its name
        except BaseException:
            src.close()
            raise
        _remove(OVERLAY)
        self.open()
        return version, count

    def apply_delta(self, data):
        # data: the delta's bytes (a delta is at most a few KB).
        base, new, n = self._parse_ops(data, b"LCWD")
        if not self.loaded:
            raise WhitelistError("no whitelist to apply a delta to")
        if new <= self.version:
            raise WhitelistError("stale delta %d->%d (holding %d)" % (base, new, self.version))
        if base != self.version:
            raise WhitelistError("delta %d->%d does not follow held version %d" % (base, new, self.version))
        merged, m = self._merge_overlay(data, n)
        if m <= OVERLAY_MAX:
            self._write_overlay(merged, m, new)
        else:
            self._compact(merged, m, new)
        return new

    def _merge_overlay(self, data, n):
        # Sorted merge of the overlay with the delta's operations; the delta wins.
        ov = self._ov
        out = bytearray((self._ovn + n) * OP)
        i = j = m = 0
        while i < self._ovn or j < n:
            if j >= n:
                src, at = ov, i * OP
                i += 1
            elif i >= self._ovn:
                src, at = data, DHDR + j * OP
                j += 1
            else:
                c = _cmp8(ov, i * OP + 1, data, DHDR + j * OP + 1)
                if c < 0:
                    src, at = ov, i * OP
                    i += 1
                else:
                    if c == 0:
                        i += 1
                    src, at = data, DHDR + j * OP
                    j += 1
            out[m * OP : (m + 1) * OP] = src[at : at + OP]
            m += 1
        return out, m

    def _write_overlay(self, entries, m, new):
        hdr = struct.pack(
            ">4sBBHIIII", b"LCWO", _FORMAT, REC, m, self.reader_id, self.building_id, self.base_version, new
        )
        body = memoryview(entries)[: m * OP]
        mac = self._mac.start()
        mac.update(hdr)
        mac.update(body)
        tag = mac.digest()
        atomic.write(OVERLAY, OVERLAY_NEW, hdr, body, tag)
        self._ov[: m * OP] = body
        self._ovn = m
        self.version = new

    def _merged_records(self, entries, m):
        # Yields the offset of each resulting record: base records merged with
        # overlay entries (upserts replace or insert, removes drop).
        f = self._f
        chunk = self._chunk
        left = self.count
        f.seek(HDR)
        buffered = 0
        pos = 0
        j = 0
        while left or j < m:
            if left and pos == buffered:
                k = min(left, _CHUNK_RECS)
                f.readinto(memoryview(chunk)[: k * REC])
                buffered = k
                pos = 0
            if not left:
                c = 1
            elif j >= m:
                c = -1
            else:
                c = _cmp8(chunk, pos * REC, entries, j * OP + 1)
            if c < 0:
                yield chunk, pos * REC
                pos += 1
                left -= 1
            else:
                if c == 0:
                    pos += 1
                    left -= 1
                if entries[j * OP] == _OP_UPSERT:
                    yield entries, j * OP + 1
                j += 1

    def _compact(self, entries, m, new):
        count = 0
        for _ in self._merged_records(entries, m):
            count += 1
        hdr = struct.pack(">4sBBHIIIIII", b"LCWL", _FORMAT, REC, 0, self.reader_id, self.building_id, new, count, 0, 0)
        mac = self._mac.start()
        mac.update(hdr)
        out = bytearray(REC)
        with atomic.Replace(BASE, BASE_NEW) as dst:
            dst.write(hdr)
            for buf, at in self._merged_records(entries, m):
                for i in range(REC):
                    out[i] = buf[at + i]
                mac.update(out)
                dst.write(out)
            dst.write(mac.digest())
            self.close()  # the old list, before the new one takes its name
        _remove(OVERLAY)
        self.open()
