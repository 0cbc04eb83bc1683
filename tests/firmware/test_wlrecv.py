# A full whitelist arriving over the link in WHITELIST chunks (docs/uplink.md,
# kind 0x84; firmware/liftcard/wlrecv.py): chunks sealed here exactly as the
# gateway seals them (AES-CTR + MAC with the link keys) go through the
# reader's own Uplink._on_msg, so the codec, the assembly, the install and the
# error reporting are all the real ones. No broker: tests/test_reader_wlchunks.py
# does the same end to end.
import gc

# The uplink is compiled from source first, while the heap is still empty:
# compiling it beside a booted reader and this module would not fit in 192K
# (on a device it is frozen or .mpy).
import liftcard.uplink  # noqa: F401
import liftcard.wlrecv  # noqa: F401

gc.collect()

import os
import struct

import rig
from rig import check
from liftcard import uplinkcodec as uc
from hostflash import PowerLoss
from liftcard.mac import Mac
from liftcard.whitelist import RECV

CFG = {}
for _k in rig.CONFIG:
    CFG[_k] = rig.CONFIG[_k]
CFG["uplink"] = {"host": "127.0.0.1", "port": 1, "password": "pw-never-used", "keepalive_s": 60}
CHUNK = 1024
WRONG_KEY = bytes(range(32))
# The test gateway's buffers, made before any reader boots (a 4 KB block is
# hard to find in a heap the reader has fragmented).
_MAX_CHUNK = 2048
_BODY = bytearray(uc.WLCHUNK_HEADER_LEN + _MAX_CHUNK)
_MSG = bytearray(uc.HEADER_LEN + uc.WLCHUNK_HEADER_LEN + _MAX_CHUNK + uc.MAC_LEN)


def _cid(i, n):
    # Card i of an n-card list: strictly increasing, spread over the u64 range.
    # Lists of different sizes share no card (the offset n).
    return i * ((1 << 64) // n) + n


def _write(fname, n, version, key=rig.KEY, household=0):
    # Streams a signed n-card list (never the whole list in RAM).
    hdr = struct.pack(">4sBBHIIIIII", b"LCWL", 1, 16, 0, rig.READER_ID, rig.BUILDING_ID, version, n, 0, 0)
    mac = Mac(key).start()
    mac.update(hdr)
    rec = bytearray(16)
    with open(fname, "wb") as f:
        f.write(hdr)
        for i in range(n):
            struct.pack_into(">QBHHBH", rec, 0, _cid(i, n), 0, household + (i & 0xFF), 0b11, 0, 0xFFFF)
            mac.update(rec)
            f.write(rec)
        f.write(mac.digest())
    return fname


def _holds(r, n, household=0):
    # Every card of the n-card list is there with its record, and no other.
    key = bytearray(8)
    for i in range(n):
        struct.pack_into(">Q", key, 0, _cid(i, n))
        if not r.wl.lookup(key) or r.wl.rec[:8] != key:
            return False
        if (r.wl.rec[9] << 8) | r.wl.rec[10] != household + (i & 0xFF):
            return False
    return r.wl.count == n


class Gateway:
    # Seals down messages as liftcard_gateway.uplink does (the vectors prove
    # the two codecs agree). It borrows the reader codec's AES and MAC, which
    # hold the same link keys, and seals into buffers of its own made once: a
    # second Codec, or 4 KB blocks per chunk, would not fit beside the reader
    # in 192K.
    def __init__(self, r, hi=9):
        self.c = r.uplink.codec
        self.hi = hi
        self.n = 0
        self.body = _BODY
        self.msg = _MSG

    def seal(self, kind, body, n):
        self.n += 1
        msg = self.msg
        struct.pack_into(">4sBBHIIII", msg, 0, uc.MAGIC, 1, kind, 0, rig.READER_ID, rig.BUILDING_ID, self.hi, self.n)
        self.c._crypt(body, 0, msg, uc.HEADER_LEN, n, msg)
        m = self.c._mac
        m.start()
        m.update(memoryview(msg)[: uc.HEADER_LEN + n])
        msg[uc.HEADER_LEN + n : uc.HEADER_LEN + n + uc.MAC_LEN] = m.digest()
        return memoryview(msg)[: uc.HEADER_LEN + n + uc.MAC_LEN]

    def chunk(self, f, version, total, offset, n):
        # The chunk [offset, offset + n) of the open list file f.
        body = self.body
        struct.pack_into(">III", body, 0, version, total, offset)
        f.seek(offset)
        f.readinto(memoryview(body)[uc.WLCHUNK_HEADER_LEN : uc.WLCHUNK_HEADER_LEN + n])
        return self.seal(uc.WHITELIST, body, uc.WLCHUNK_HEADER_LEN + n)


def _size(fname):
    return os.stat(fname)[6]


def _exists(fname):
    try:
        os.stat(fname)
        return True
    except OSError:
        return False


def send(r, gw, fname, offsets=None, chunk=CHUNK, version=None):
    # Sends the chunks of the list in `fname` at `offsets` (default: all, in
    # order) to the reader's uplink, as they would arrive from the broker.
    total = _size(fname)
    if version is None:
        with open(fname, "rb") as f:
            f.seek(16)
            version = struct.unpack(">I", f.read(4))[0]
    if offsets is None:
        offsets = range(0, total, chunk)
    u = r.uplink
    with open(fname, "rb") as f:
        for off in offsets:
            u._on_msg(u.t_down, gw.chunk(f, version, total, off, min(chunk, total - off)))


def _reader(n1=20):
    wl = _write(rig.path("v1.bin"), n1, 1)
    r = rig.configured_reader(prefix="c", cards=wl, cfg=CFG, keep_output=False)
    check(r.uplink is not None and r.wl.version == 1)
    return r


def _ok(r):
    u = r.uplink
    check(u.last_error == 0 and u.error_text is None, "uplink error: %r" % u.error_text)


def test_chunks_in_order_install_and_duplicates_are_ignored():
    v2 = _write(rig.path("v2.bin"), 300, 2, household=1000)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, v2, (0, 1024, 1024, 2048, 1024, 3072))
    _ok(r)
    check(r.wl.version == 1 and _holds(r, 20), "the old list serves until the new one is whole")
    check(_size(RECV) == 4096 and r.uplink.wlrecv.duplicates == 2, "duplicates must not be written")
    send(r, gw, v2, (4096,))
    _ok(r)
    check(r.wl.version == 2 and _holds(r, 300, 1000), "v2 installed whole")
    check(not _exists(RECV), "the received file is gone (renamed over the base list)")
    key = bytearray(8)
    struct.pack_into(">Q", key, 0, _cid(3, 20))
    check(not r.wl.lookup(key), "a card only in v1 is gone")
    # QoS 1 may deliver the last chunk again: stale now, refused, nothing changes.
    send(r, gw, v2, (4096,))
    check(r.wl.version == 2 and r.uplink.last_error == 5 and "stale" in r.uplink.error_text)
    check(not _exists(RECV))
    rig.shutdown(r)


def test_the_list_reopening_mid_stream_does_not_cut_the_transfer():
    # An install or a compaction reopens the whitelist; a list arriving in
    # chunks meanwhile must carry on where it was.
    v2 = _write(rig.path("v2.bin"), 300, 2, household=1000)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, v2, (0, 1024))
    r.wl.open()
    check(_size(RECV) == 2048, "reopening the list dropped the partial file")
    send(r, gw, v2, (2048, 3072, 4096))
    _ok(r)
    check(r.wl.version == 2 and _holds(r, 300, 1000) and not _exists(RECV))
    rig.shutdown(r)


def test_a_gap_drops_the_partial_file_and_waits_for_offset_0():
    v2 = _write(rig.path("v2.bin"), 300, 2, household=1000)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, v2, (0, 1024, 3072))
    u = r.uplink
    check(u.last_error == 5 and "gap" in u.error_text, "the gap is reported: %r" % u.error_text)
    check(not _exists(RECV) and r.wl.version == 1 and _holds(r, 20))
    u.last_error = 0
    u.error_text = None
    send(r, gw, v2, (4096, 2048))  # the rest of that stream: waited out quietly
    _ok(r)
    check(not _exists(RECV) and u.wlrecv.skipped == 2 and r.wl.version == 1)
    send(r, gw, v2)  # the gateway starts over
    _ok(r)
    check(r.wl.version == 2 and _holds(r, 300, 1000) and not _exists(RECV))
    rig.shutdown(r)


def test_a_new_version_mid_stream_starts_over():
    v2 = _write(rig.path("v2.bin"), 300, 2, household=1000)
    v3 = _write(rig.path("v3.bin"), 280, 3, household=2000)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, v2, (0, 1024))
    send(r, gw, v3, (0, 1024))  # offset 0 of v3: v2's partial is dropped
    _ok(r)
    check(_size(RECV) == 2048 and r.uplink.wlrecv.version == 3)
    send(r, gw, v2, (2048,))  # v2 again, mid-stream: v3's partial dropped
    check(r.uplink.last_error == 5 and not _exists(RECV))
    send(r, gw, v3, (2048, 3072))  # waits for offset 0
    check(not _exists(RECV) and r.wl.version == 1 and _holds(r, 20))
    send(r, gw, v3)
    check(r.wl.version == 3 and _holds(r, 280, 2000) and not _exists(RECV))
    rig.shutdown(r)


def test_a_stale_version_is_refused_without_touching_anything():
    v2 = _write(rig.path("v2.bin"), 300, 2, household=1000)
    v3 = _write(rig.path("v3.bin"), 280, 3, household=2000)
    v1 = rig.path("v1.bin")
    r = _reader()
    check(r.command("WL " + v2).startswith("OK whitelist v2"))
    gw = Gateway(r)
    send(r, gw, v3, (0,))  # an assembly of v3 in progress
    for stale, offsets in ((v2, (0,)), (v1, (0,)), (v2, (1024, 4096))):
        send(r, gw, stale, offsets)
        u = r.uplink
        check(u.last_error == 5 and "stale" in u.error_text, "stale chunk: %r" % u.error_text)
        check(r.wl.version == 2 and _size(RECV) == 1024 and u.wlrecv.version == 3, "a stale chunk touched state")
    send(r, gw, v3, (1024, 2048, 3072, 4096))
    check(r.wl.version == 3 and _holds(r, 280, 2000))
    rig.shutdown(r)


def test_chunk_header_disagreeing_with_the_list_is_refused():
    v2 = _write(rig.path("v2.bin"), 300, 2)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, v2, (0,), version=5)  # chunks say v5, the list says v2
    check(r.uplink.last_error == 5 and "version" in r.uplink.error_text)
    check(not _exists(RECV) and r.wl.version == 1)
    rig.shutdown(r)


def test_a_forged_list_is_assembled_but_not_installed():
    forged = _write(rig.path("forged.bin"), 300, 2, key=WRONG_KEY, household=1000)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, forged)
    u = r.uplink
    check(u.last_error == 5 and "MAC" in u.error_text, "forged list: %r" % u.error_text)
    check(rig.KEY_HEX not in u.error_text)
    check(r.wl.version == 1 and _holds(r, 20) and not _exists(RECV), "the old list must stay")
    st = r.command("STATUS")
    check('"whitelist_version": 1' in st and "MAC" in st, st)
    rig.shutdown(r)


def test_a_list_larger_than_the_heap_is_assembled_on_flash():
    # 14,000 cards: 224 KB, more than the whole 192K heap.
    n = 14000
    big = _write(rig.path("big.bin"), n, 2, household=3000)
    check(_size(big) > 192 * 1024)
    r = _reader()
    gw = Gateway(r)
    send(r, gw, big, chunk=_MAX_CHUNK)
    _ok(r)
    check(r.wl.version == 2 and r.wl.count == n and not _exists(RECV))
    key = bytearray(8)
    for i in (0, 1, 6999, n - 1):
        struct.pack_into(">Q", key, 0, _cid(i, n))
        check(r.wl.lookup(key), "card %d" % i)
    rig.shutdown(r)


# ---- power cut at every flash write of a chunked list ----


def wl_prepare():
    _write(rig.path("v1.bin"), 40, 1)
    _write(rig.path("v2.bin"), 300, 2, household=1000)
    r = rig.configured_reader(prefix="base", cards=rig.path("v1.bin"), cfg=CFG, keep_output=False)
    rig.shutdown(r)
    r = None
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rail = rig.arm(r)
    send(r, Gateway(r), rig.path("v2.bin"))
    check(r.wl.version == 2, "dry run did not install")
    rig.save_json("plan.json", {"writes": rail.writes})
    rig.shutdown(r)


def wl_cut(cut):
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rig.arm(r, int(cut))
    try:
        send(r, Gateway(r), rig.path("v2.bin"))
    except PowerLoss:
        pass
    rig.shutdown(r)


def wl_verify():
    r = rig.boot("run", keep_output=False)
    v = r.wl.version
    check(v in (1, 2), "version %d after the cut" % v)
    check(_holds(r, 40) if v == 1 else _holds(r, 300, 1000), "the list is not wholly version %d" % v)
    check(not _exists(RECV), "a partial file survived the reboot")
    seen = rig.load_json("seen.json") if _exists(rig.path("seen.json")) else []
    if v not in seen:
        seen.append(v)
    rig.save_json("seen.json", seen)
    # The gateway sends it again (new counters): the reader ends on v2.
    send(r, Gateway(r, hi=10), rig.path("v2.bin"))
    check(r.wl.version == 2 and _holds(r, 300, 1000), "resend after the cut did not install v2")
    rig.shutdown(r)


def test_power_cut_at_every_write_of_a_chunked_list():
    rig.child("test_wlrecv", "wl_prepare")
    total = rig.load_json("plan.json")["writes"]
    check(total >= 5, "only %d writes" % total)
    for cut in range(total + 1):
        rig.child("test_wlrecv", "wl_cut", cut)
        rig.child("test_wlrecv", "wl_verify")
    seen = rig.load_json("seen.json")
    check(sorted(seen) == [1, 2], "both outcomes should occur: %r" % seen)
    print("cut at each of", total, "writes")
