# Whitelist lookups over lists big enough that the sparse index has windows of
# several records (and a final, shorter window), including ids at the u64 edges.
import rig
from rig import check
from liftcard.mac import Mac

import struct


def _id(i, n):
    # Strictly increasing over i = 0..n-1, spread over the whole u64 range,
    # with gaps so that id + 1 is never a card.
    return (i * ((1 << 64) // n)) + (1 if i == 0 else 0)


def _write(fname, n, version=1):
    # Streams a signed list of n cards without holding it in RAM.
    hdr = struct.pack(">4sBBHIIIIII", b"LCWL", 1, 16, 0, rig.READER_ID, rig.BUILDING_ID, version, n, 0, 0)
    mac = Mac(rig.KEY).start()
    mac.update(hdr)
    rec = bytearray(16)
    with open(fname, "wb") as f:
        f.write(hdr)
        for i in range(n):
            struct.pack_into(">QBBBHBH", rec, 0, _id(i, n), 0, 0, i & 0xFF, 0b11, 0, 0xFFFF)
            mac.update(rec)
            f.write(rec)
        f.write(mac.digest())
    return fname


def _check_all(r, n):
    key = bytearray(8)
    for i in range(n):
        v = _id(i, n)
        struct.pack_into(">Q", key, 0, v)
        check(r.wl.lookup(key), "card %d of %d not found" % (i, n))
        check(r.wl.rec[:8] == key and r.wl.rec[10] == i & 0xFF, "card %d: wrong record" % i)
        struct.pack_into(">Q", key, 0, v + 1)
        check(not r.wl.lookup(key), "id after card %d found" % i)
    for edge in (0, (1 << 64) - 1):
        struct.pack_into(">Q", key, 0, edge)
        check(not r.wl.lookup(key), "edge id %x found" % edge)


def test_lookup_every_card_of_lists_with_multi_record_windows():
    for n in (1, 2, 511, 512, 513, 1500, 5003):
        wl = _write(rig.path("wl-%d.bin" % n), n, version=n)
        r = rig.configured_reader(prefix="w", cards=wl, keep_output=False)
        check(r.wl.count == n)
        _check_all(r, n)
        rig.shutdown(r)
        r = None


def test_lookup_reads_one_window_per_tap():
    n = 5003
    wl = _write(rig.path("wl.bin"), n)
    r = rig.configured_reader(prefix="w", cards=wl, keep_output=False)
    dev = r.board.fs_dev
    key = bytearray(8)
    struct.pack_into(">Q", key, 0, _id(4321, n))
    before = dev.reads
    check(r.wl.lookup(key))
    reads = dev.reads - before
    # A 5003-card list spans 20 littlefs blocks: finding one window is a short
    # walk down the file's block list plus the window's own read, not one
    # walk per binary-search step (about 13 steps here).
    check(reads <= 8, "one lookup took %d block reads" % reads)
    rig.shutdown(r)
