# The naive baseline for the reader benchmark, MicroPython side.
#
#   MICROPYPATH=$(python -m liftcard_provisioning.mpybuild -q --micropypath) micropython -X heapsize=192K tools/bench/baseline_mp.py \
#       --dir TMP --config config.json --wl whitelist.json --taps taps.bin
#
# What a first reader would do: the whole whitelist as one JSON object loaded
# into a dict ({"<16 hex card id>": [household, floors, status, class,
# valid_until]}), and each ride appended to a file on littlefs with f.write +
# f.flush. The fee decision and the record format are the firmware's own
# (liftcard.fees.Fees, liftcard.ridelog.pack/seal), so the comparison isolates
# the two things the firmware does differently: the list stays on flash, the
# log is a raw NOR partition.
#
# If the dict does not fit the heap, this prints {"fits": false, "error": ...}
# and exits 0: the driver then reruns it with a larger heap for timings and
# labels that run as such. Prints one JSON object on stdout.

import binascii
import gc
import json
import sys
import time
from array import array

import vfs

from liftcard import codes, ridelog
from liftcard.fees import Fees
from hostflash import BlockDev, create_image

_EPOCH_UNIX = 1704067200
_PAGE = 256


class CountingBlockDev(BlockDev):
    # Second pass only: littlefs reads and 256-byte pages programmed.
    def __init__(self, *a):
        BlockDev.__init__(self, *a)
        self.reads = 0
        self.pages = 0

    def readblocks(self, block, buf, off=0):
        self.reads += 1
        BlockDev.readblocks(self, block, buf, off)

    def writeblocks(self, block, buf, off=None):
        o = off or 0
        self.pages += (o + len(buf) - 1) // _PAGE - o // _PAGE + 1
        BlockDev.writeblocks(self, block, buf, off)


def parse(argv):
    opts = {
        "dir": None,
        "config": None,
        "wl": None,
        "taps": None,
        "fs-size": "2097152",
        "count-taps": "300",
        "time": "91000000",
        "capacity": "1",
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") or a[2:] not in opts or i + 1 >= len(argv):
            raise SystemExit("baseline_mp: bad argument %s" % a)
        opts[a[2:]] = argv[i + 1]
        i += 2
    for k in ("dir", "config", "wl", "taps"):
        if not opts[k]:
            raise SystemExit("baseline_mp: --%s is required" % k)
    return opts


def stats(vals):
    n = len(vals)
    if not n:
        return None
    vals.sort()
    total = 0
    for v in vals:
        total += v
    return {
        "n": n,
        "median": vals[n // 2] if n & 1 else (vals[n // 2 - 1] + vals[n // 2]) / 2,
        "p90": vals[min(n - 1, (n * 90) // 100)],
        "p99": vals[min(n - 1, (n * 99) // 100)],
        "max": vals[-1],
        "mean": total / n,
    }


def put_card(card, ids, i):
    o = (i % (len(ids) // 8)) * 8
    for k in range(8):
        card[k] = ids[o + k]


def mount(img, size, dev_cls, fresh):
    if fresh:
        create_image(img, size)
    dev = dev_cls(img)
    if fresh:
        vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/flash")
    return dev


def umount(dev):
    try:
        vfs.umount("/flash")
    except OSError:
        pass
    dev.close()


class Baseline:
    def __init__(self, cfg, wl, offset_s):
        self.wl = wl
        self.fees = Fees(time.ticks_diff)
        self.fees.configure(cfg["tariff"], cfg["floors"], cfg["ground_floor"], cfg.get("utc_offset_min", 480))
        self.offset = offset_s
        self.rec16 = bytearray(16)
        self.rec = bytearray(32)
        self.seq = 1
        self.t_boot = time.ticks_ms()
        self.f = None

    def tap(self, card):
        fees = self.fees
        now = int(time.time()) - _EPOCH_UNIX + self.offset
        ms = time.ticks_ms()
        v = self.wl.get(binascii.hexlify(card).decode())
        found = v is not None
        if found:
            r = self.rec16
            hh = v[0]
            r[8] = hh >> 16
            r[9] = (hh >> 8) & 255
            r[10] = hh & 255
            r[11] = v[1] >> 8
            r[12] = v[1] & 255
            r[13] = (v[2] << 4) | v[3]
            r[14] = v[4] >> 8
            r[15] = v[4] & 255
        fees.decide(found, self.rec16, card, 0, now, ms)
        rec = self.rec
        up = time.ticks_diff(ms, self.t_boot) // 1000
        ridelog.pack(rec, now, up, card, fees.household, fees.floor, fees.fee, fees.result, fees.flags, 1)
        ridelog.seal(rec, self.seq)
        self.seq += 1
        self.f.write(rec)
        self.f.flush()  # durable before "granted"
        fees.commit(card, ms)
        return fees.result


def main():
    opt = parse(sys.argv[1:])
    d = opt["dir"]
    fs_size = int(opt["fs-size"])
    count_n = int(opt["count-taps"])
    out = {"fits": True}
    with open(opt["taps"], "rb") as f:
        ids = f.read()
    ntaps = len(ids) // 8
    dur = array("I", bytes(4 * ntaps))
    res = bytearray(ntaps)
    with open(opt["config"]) as f:
        cfg = json.load(f)
    gc.collect()
    heap_total = gc.mem_alloc() + gc.mem_free()
    a0 = gc.mem_alloc()
    out["heap"] = {"limit": heap_total}
    t0 = time.ticks_ms()
    wl = None
    try:
        with open(opt["wl"]) as f:
            wl = json.load(f)
    except MemoryError as e:
        wl = None
        gc.collect()
        out["fits"] = False
        out["error"] = "MemoryError while loading the JSON whitelist into a dict: %s" % (
            e or "memory allocation failed"
        )
        print(json.dumps(out))
        return
    out["load_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    gc.collect()
    out["heap"]["whitelist_dict_bytes"] = gc.mem_alloc() - a0
    out["cards"] = len(wl)

    now0 = int(time.time()) - _EPOCH_UNIX
    b = Baseline(cfg, wl, int(opt["time"]) - now0)
    img = d + "/baseline-fs.img"
    dev = mount(img, fs_size, BlockDev, True)
    b.f = open("/flash/rides.log", "ab")
    card = bytearray(8)

    # ---- timed loop (stock BlockDev) ----
    p0, e0, w0 = dev.programmed, dev.erased, dev.writes
    gc.collect()
    base = gc.mem_alloc()
    peak = base
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
    try:
        for i in range(ntaps):
            put_card(card, ids, i)
            t0 = ticks_us()
            r = b.tap(card)
            t1 = ticks_us()
            dur[i] = ticks_diff(t1, t0)
            res[i] = r
            m = gc.mem_alloc()
            if m > peak:
                peak = m
    except MemoryError as e:
        out["fits"] = False
        out["error"] = "MemoryError during the taps (tap %d): %s" % (i, e or "memory allocation failed")
        print(json.dumps(out))
        return
    out["heap"]["loop_start"] = base
    out["heap"]["peak_in_loop"] = peak
    out["heap"]["free_at_end"] = gc.mem_free()
    out["taps"] = ntaps
    hist = {}
    for i in range(ntaps):
        name = codes.RESULT_NAMES[res[i]]
        hist[name] = hist.get(name, 0) + 1
    out["results"] = hist
    out["tap_us"] = stats([dur[i] for i in range(ntaps)])
    out["flash"] = {
        "rides": ntaps,
        "fs_bytes_programmed": dev.programmed - p0,
        "fs_sectors_erased": dev.erased - e0,
        "fs_program_ops": (dev.writes - w0) - (dev.erased - e0),
    }
    b.f.close()
    umount(dev)
    gc.collect()

    # ---- counting pass: reads and pages per ride, same file continued ----
    dev = mount(img, fs_size, CountingBlockDev, False)
    b.f = open("/flash/rides.log", "ab")
    r0, g0, p0, e0 = dev.reads, dev.pages, dev.programmed, dev.erased
    for i in range(count_n):
        put_card(card, ids, i)
        b.tap(card)
    out["counts"] = {
        "taps": count_n,
        "fs_reads_per_ride": (dev.reads - r0) / count_n,
        "fs_pages_programmed_per_ride": (dev.pages - g0) / count_n,
        "fs_bytes_programmed_per_ride": (dev.programmed - p0) / count_n,
        "fs_sectors_erased_per_ride": (dev.erased - e0) / count_n,
    }
    b.f.close()
    umount(dev)
    b = None
    wl = None
    gc.collect()

    # ---- capacity: how many 32-byte rides one file holds on an empty fs ----
    if opt["capacity"] == "1":
        cap_img = d + "/baseline-cap.img"
        dev = mount(cap_img, fs_size, BlockDev, True)
        chunk = bytes(4096)
        written = 0
        f = open("/flash/rides.log", "wb")
        try:
            while True:
                f.write(chunk)
                written += len(chunk)
                f.flush()
        except OSError:
            pass
        try:
            f.close()
        except OSError:
            pass
        # The last chunk may have been partly written before ENOSPC.
        try:
            import os

            written = os.stat("/flash/rides.log")[6]
        except OSError:
            pass
        umount(dev)
        out["capacity"] = {
            "fs_bytes": fs_size,
            "file_bytes": written,
            "rides": written // 32,
            "note": "one file on an otherwise empty littlefs; the list and config would share it",
        }
    print(json.dumps(out))


try:
    main()
except MemoryError as e:
    gc.collect()
    print(json.dumps({"fits": False, "error": "MemoryError: %s" % (e or "memory allocation failed")}))
