# Reader benchmark, MicroPython side: the firmware's real tap path.
#
#   MICROPYPATH=$(python -m liftcard_provisioning.mpybuild -q --micropypath) micropython -X heapsize=192K tools/bench/reader_mp.py \
#       --dir TMP --config config.json --wl whitelist.bin --taps taps.bin [options]
#
# Run by tools/bench/reader.py, which writes the inputs (config, LCWL whitelist,
# the card ids to tap: 8 bytes each) and reads the one JSON object this prints
# on stdout. Everything here goes through the firmware's own objects: the host
# Board (littlefs over a file-backed BlockDev, the ride log on a NOR-rules
# partition), Reader.boot(), the CONFIG / WL / TIME commands and Reader.tap().
#
# Phases (each in this one process, with the heap the command line gives):
#   A  timing: per-tap latency with time.ticks_us, heap high-water, bytes
#      programmed and sectors erased per ride (the devices' own counters), plus
#      a breakdown (lookup alone, fee decision alone, log append alone).
#   B  counts: the same images rebooted with counting devices: littlefs reads
#      per tap, NOR page programs per ride, boot time with the list installed.
#   C  wrap: a small ride log driven around its ring with the gateway acking and
#      the reader idling between bursts, to see whether any sector erase lands
#      on a tap (the firmware erases ahead while idle).
#
# Test data never lives on the heap as many objects: the card ids are one bytes
# object, the timings one array, allocated before the reader boots.

import gc

gc.collect()
_SCRIPT_ALLOC = gc.mem_alloc()  # this script's own bytecode (compiled before it runs)

import json
import os
import sys
import time
from array import array

import vfs

import board_host
from liftcard import codes, ridelog
from board_host import Board
from hostflash import BlockDev, NorFlash, create_image
from liftcard.reader import Reader

gc.collect()
_MODULES_ALLOC = gc.mem_alloc()

_PAGE = 256
_MASK30 = (1 << 30) - 1


class Sink:
    # The board's stdout (relay, LED, RIDE lines): counted, not kept.
    def __init__(self):
        self.lines = 0

    def write(self, b):
        self.lines += 1
        return len(b)


class CountingBlockDev(BlockDev):
    # Phase B only: counts what littlefs reads and programs (calls, bytes,
    # 256-byte pages touched) and the host time spent inside the emulated
    # device. Phase A's timings never go through it.
    def __init__(self, *a):
        BlockDev.__init__(self, *a)
        self.reads = 0
        self.read_bytes = 0
        self.pages = 0
        self.us = 0

    def readblocks(self, block, buf, off=0):
        t0 = time.ticks_us()
        self.reads += 1
        self.read_bytes += len(buf)
        BlockDev.readblocks(self, block, buf, off)
        self.us += time.ticks_diff(time.ticks_us(), t0)

    def writeblocks(self, block, buf, off=None):
        t0 = time.ticks_us()
        o = off or 0
        self.pages += (o + len(buf) - 1) // _PAGE - o // _PAGE + 1
        BlockDev.writeblocks(self, block, buf, off)
        self.us += time.ticks_diff(time.ticks_us(), t0)


class CountingNor(NorFlash):
    def __init__(self, *a):
        NorFlash.__init__(self, *a)
        self.reads = 0
        self.pages = 0
        self.us = 0

    def readblocks(self, block, buf, off=0):
        t0 = time.ticks_us()
        self.reads += 1
        NorFlash.readblocks(self, block, buf, off)
        self.us += time.ticks_diff(time.ticks_us(), t0)

    def writeblocks(self, block, buf, off=None):
        t0 = time.ticks_us()
        o = off or 0
        self.pages += (o + len(buf) - 1) // _PAGE - o // _PAGE + 1
        NorFlash.writeblocks(self, block, buf, off)
        self.us += time.ticks_diff(time.ticks_us(), t0)


class SkewBoard(Board):
    # Phase C: the host board with a monotonic clock the benchmark can move
    # forward, so the reader sees its idle time without the benchmark sleeping.
    skew = 0

    def ticks_ms(self):
        return (time.ticks_ms() + self.skew) & _MASK30


def parse(argv):
    opts = {
        "dir": None,
        "config": None,
        "wl": None,
        "taps": None,
        "fs-size": "2097152",
        "log-size": "2097152",
        "probe": "100",
        "count-taps": "300",
        "breakdown": "500",
        "wrap-log-size": "65536",
        "wrap-taps": "3000",
        "time": "91000000",
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") or a[2:] not in opts or i + 1 >= len(argv):
            raise SystemExit("reader_mp: bad argument %s" % a)
        opts[a[2:]] = argv[i + 1]
        i += 2
    for k in ("dir", "config", "wl", "taps"):
        if not opts[k]:
            raise SystemExit("reader_mp: --%s is required" % k)
    return opts


def fail(msg):
    print(json.dumps({"ok": False, "error": msg}))
    sys.exit(1)


def stats(arr, n):
    # Sorts arr[:n] in place (an array of ints: no list, no large allocation
    # once the reader runs) and returns the summary.
    if not n:
        return None
    gap = 1
    while gap < n // 3:
        gap = gap * 3 + 1
    while gap:
        for i in range(gap, n):
            v = arr[i]
            j = i
            while j >= gap and arr[j - gap] > v:
                arr[j] = arr[j - gap]
                j -= gap
            arr[j] = v
        gap //= 3
    total = 0
    for i in range(n):
        total += arr[i]
    return {
        "n": n,
        "median": arr[n // 2] if n & 1 else (arr[n // 2 - 1] + arr[n // 2]) / 2,
        "p90": arr[min(n - 1, (n * 90) // 100)],
        "p99": arr[min(n - 1, (n * 99) // 100)],
        "max": arr[n - 1],
        "mean": total / n,
    }


def select(dst, src, res, code, n):
    # Copies the timings of taps with result `code` (all when code < 0) into dst.
    k = 0
    for i in range(n):
        if code < 0 or res[i] == code:
            dst[k] = src[i]
            k += 1
    return k


def put_card(card, ids, i):
    o = (i % (len(ids) // 8)) * 8
    for k in range(8):
        card[k] = ids[o + k]


def make_images(fs, log, fs_size, log_size):
    create_image(fs, fs_size)
    create_image(log, log_size)
    dev = BlockDev(fs)
    vfs.VfsLfs2.mkfs(dev)
    dev.close()


def shutdown(reader):
    # Clean power-off between phases: close the list, unmount, close images.
    b = reader.board
    try:
        reader.wl.close()
    except Exception:
        pass
    gc.collect()
    try:
        vfs.umount("/flash")
    except OSError:
        pass
    for dev in (b.fs_dev, b.nor):
        if dev:
            dev.close()
    gc.collect()


def must(reply, what):
    if not reply.startswith("OK"):
        fail("%s: %s" % (what, reply))
    return reply


def main():
    opt = parse(sys.argv[1:])
    d = opt["dir"]
    fs_img = d + "/reader-fs.img"
    log_img = d + "/reader-log.img"
    fs_size = int(opt["fs-size"])
    log_size = int(opt["log-size"])
    probe_n = int(opt["probe"])
    count_n = int(opt["count-taps"])
    brk_n = int(opt["breakdown"])
    wrap_log = int(opt["wrap-log-size"])
    wrap_n = int(opt["wrap-taps"])
    t_set = opt["time"]

    # Test data first, so it sits below the reader's allocations.
    gc.collect()
    modules_alloc = gc.mem_alloc()  # the firmware's and this script's code, imported
    with open(opt["taps"], "rb") as f:
        ids = f.read()
    ntaps = len(ids) // 8
    if ntaps < 1:
        fail("no taps")
    # Timings in microseconds, clamped to 65535 (counted when that happens).
    dur = array("H", bytes(2 * ntaps))
    tmp = array("H", bytes(2 * max(ntaps, brk_n)))
    res = bytearray(ntaps)
    gc.collect()
    heap_total = gc.mem_alloc() + gc.mem_free()
    bench_alloc = gc.mem_alloc() - modules_alloc
    out = {
        "ok": True,
        "implementation": "%s %s" % (sys.implementation.name, ".".join(str(x) for x in sys.implementation.version[:3])),
    }

    # ---- set-up: the reader's own commands ----
    make_images(fs_img, log_img, fs_size, log_size)
    board = Board(fs_img, log_img, fs_size, log_size, stdin=None, stdout=Sink())
    reader = Reader(board)
    t0 = time.ticks_ms()
    reader.boot()
    boot_empty_ms = time.ticks_diff(time.ticks_ms(), t0)
    must(reader.command("CONFIG " + opt["config"]), "CONFIG")
    fs0 = board.fs_dev.programmed
    t0 = time.ticks_ms()
    reply = must(reader.command("WL " + opt["wl"]), "WL")
    install_ms = time.ticks_diff(time.ticks_ms(), t0)
    install_programmed = board.fs_dev.programmed - fs0
    must(reader.command("TIME " + t_set), "TIME")
    out["whitelist"] = {
        "reply": reply,
        "cards": reader.wl.count,
        "install_ms": install_ms,
        "install_bytes_programmed": install_programmed,
    }
    gc.collect()
    after_setup = gc.mem_alloc()

    card = board.card
    TAP = codes.TAP_CREDENTIAL

    # ---- phase A: allocation probe (doubles as warm-up), GC off ----
    gc.collect()
    gc.disable()
    alloc_total = 0
    alloc_max = 0
    allocating_taps = 0
    for i in range(probe_n):
        put_card(card, ids, i)
        a = gc.mem_alloc()
        reader.tap(TAP, 0)
        b = gc.mem_alloc() - a
        alloc_total += b
        if b > alloc_max:
            alloc_max = b
        if b:
            allocating_taps += 1
    gc.enable()
    out["alloc_per_tap"] = {
        "taps": probe_n,
        "mean_bytes": alloc_total / probe_n if probe_n else 0,
        "max_bytes": alloc_max,
        "taps_that_allocated": allocating_taps,
        "note": "gc.mem_alloc() delta around reader.tap() with the GC disabled; includes the host board's clock (time.time() is a float on the unix port)",
    }

    # ---- phase A: the timed loop ----
    nor = board.nor
    fsd = board.fs_dev
    c0 = (nor.programmed, nor.erased, nor.writes, fsd.programmed, fsd.erased, fsd.writes)
    log_erases0 = reader.log.erases
    forced0 = reader.log.forced_erases
    fee_sum = 0
    debounced = free = capped = untracked = 0
    gc.collect()
    base = gc.mem_alloc()
    peak = base
    prev = base
    gc_runs = 0
    clamped = 0
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
    for i in range(ntaps):
        put_card(card, ids, i)
        t0 = ticks_us()
        r = reader.tap(TAP, 0)
        t1 = ticks_us()
        us = ticks_diff(t1, t0)
        if us > 65535:
            us = 65535
            clamped += 1
        dur[i] = us
        res[i] = r
        rec = reader.rec
        fee_sum += (rec[24] << 8) | rec[25]
        fl = rec[27]
        if fl & codes.F_DEBOUNCED:
            debounced += 1
        if fl & codes.F_FREE_CLASS:
            free += 1
        if fl & codes.F_CAPPED:
            capped += 1
        if fl & codes.F_CAP_UNTRACKED:
            untracked += 1
        m = gc.mem_alloc()
        if m > peak:
            peak = m
        if m < prev:
            gc_runs += 1
        prev = m
    free_end = gc.mem_free()
    gc.collect()
    live_end = gc.mem_alloc()
    c1 = (nor.programmed, nor.erased, nor.writes, fsd.programmed, fsd.erased, fsd.writes)

    hist = {}
    for i in range(ntaps):
        name = codes.RESULT_NAMES[res[i]]
        hist[name] = hist.get(name, 0) + 1
    out["taps"] = ntaps
    out["results"] = hist
    out["fees_fen_total"] = fee_sum
    out["flags"] = {"DEBOUNCED": debounced, "FREE_CLASS": free, "CAPPED": capped, "CAP_UNTRACKED": untracked}
    out["tap_us"] = stats(tmp, select(tmp, dur, res, -1, ntaps))
    out["tap_us"]["clamped_at_65535"] = clamped
    out["tap_us_granted"] = stats(tmp, select(tmp, dur, res, codes.GRANTED, ntaps))
    out["tap_us_unknown"] = stats(tmp, select(tmp, dur, res, codes.UNKNOWN_CARD, ntaps))
    rides = reader.log.last_seq  # every tap so far was logged (fresh log, never full)
    out["log"] = {
        "capacity": reader.log.capacity,
        "partition_bytes": log_size,
        "records": rides,
        "full": reader.log.full,
        "erases_in_loop": reader.log.erases - log_erases0,
        "forced_erases_in_loop": reader.log.forced_erases - forced0,
    }
    out["flash"] = {
        "rides": ntaps,
        "nor_bytes_programmed": c1[0] - c0[0],
        "nor_sectors_erased": c1[1] - c0[1],
        "nor_program_ops": (c1[2] - c0[2]) - (c1[1] - c0[1]),
        "fs_bytes_programmed": c1[3] - c0[3],
        "fs_sectors_erased": c1[4] - c0[4],
        "fs_program_ops": (c1[5] - c0[5]) - (c1[4] - c0[4]),
    }
    out["heap"] = {
        "limit": heap_total,
        "modules_bytes": modules_alloc,
        "bench_script_bytes": _SCRIPT_ALLOC,
        "firmware_modules_bytes": _MODULES_ALLOC - _SCRIPT_ALLOC,
        "bench_data_bytes": bench_alloc,
        "after_setup": after_setup,
        "loop_start": base,
        "peak_in_loop": peak,
        "free_at_end": free_end,
        "live_after_loop": live_end,
        "gc_runs_in_loop": gc_runs,
    }

    # ---- phase A: breakdown of the decision path ----
    wl = reader.wl
    fees = reader.fees
    log = reader.log
    # Each part on its own, k times, timings into the preallocated array.
    k = min(brk_n, ntaps)
    now = reader.clock.now()
    rec = reader.rec
    scratch = bytearray(32)
    brk = {}
    gc.collect()
    for part in ("lookup", "fee_decide", "log_append", "log_seal_crc"):
        for i in range(k):
            put_card(card, ids, i)
            if part == "fee_decide":
                found = wl.lookup(card)
                ms = board.ticks_ms()
                t0 = ticks_us()
                fees.decide(found, wl.rec, card, 0, now, ms)
            elif part == "lookup":
                t0 = ticks_us()
                wl.lookup(card)
            elif part == "log_append":
                t0 = ticks_us()
                log.append(rec)  # re-appends the last record under a new seq
            else:
                t0 = ticks_us()
                ridelog.seal(scratch, i)
            t1 = ticks_us()
            tmp[i] = min(ticks_diff(t1, t0), 65535)
        brk[part] = stats(tmp, k)
    out["breakdown_us"] = brk
    shutdown(reader)
    reader = board = wl = fees = log = nor = fsd = None
    gc.collect()

    # ---- phase B: counting devices, reboot on the same images ----
    board_host.BlockDev = CountingBlockDev
    board_host.NorFlash = CountingNor
    board = Board(fs_img, log_img, fs_size, log_size, stdin=None, stdout=Sink())
    reader = Reader(board)
    t0 = time.ticks_ms()
    reader.boot()
    boot_ms = time.ticks_diff(time.ticks_ms(), t0)
    boot_reads = board.fs_dev.reads
    must(reader.command("TIME " + t_set), "TIME")
    card = board.card
    fsd = board.fs_dev
    nor = board.nor
    c0 = (
        fsd.reads,
        fsd.read_bytes,
        fsd.programmed,
        fsd.erased,
        fsd.pages,
        nor.reads,
        nor.programmed,
        nor.erased,
        nor.pages,
        fsd.us,
        nor.us,
    )
    known = unknown = 0
    tap_total = 0
    for i in range(count_n):
        put_card(card, ids, i)
        t0 = time.ticks_us()
        reader.tap(TAP, 0)
        tap_total += time.ticks_diff(time.ticks_us(), t0)
    c1 = (
        fsd.reads,
        fsd.read_bytes,
        fsd.programmed,
        fsd.erased,
        fsd.pages,
        nor.reads,
        nor.programmed,
        nor.erased,
        nor.pages,
        fsd.us,
        nor.us,
    )
    # Lookups alone: reads per binary search (found and not found).
    r0 = fsd.reads
    steps_found = steps_missing = 0
    for i in range(count_n):
        put_card(card, ids, i)
        a = fsd.reads
        if reader.wl.lookup(card):
            known += 1
            steps_found += fsd.reads - a
        else:
            unknown += 1
            steps_missing += fsd.reads - a
    # What one emulated flash operation costs the host (Python emulator code,
    # file I/O): the stock methods, called as littlefs and the log call them.
    reads_avg = (c1[1] - c0[1]) // max(c1[0] - c0[0], 1) or 16
    rbuf = bytearray(reads_avg)
    nblk = fsd.nblocks
    t0 = time.ticks_us()
    for i in range(500):
        BlockDev.readblocks(fsd, (i * 37) % nblk, rbuf, (i * 48) % (4096 - reads_avg))
    read_op_us = time.ticks_diff(time.ticks_us(), t0) / 500
    scratch_img = d + "/scratch-nor.img"
    nf = NorFlash(scratch_img, 65536)
    rec = reader.rec
    t0 = time.ticks_us()
    for i in range(500):
        NorFlash.writeblocks(nf, i // 128, rec, (i % 128) * 32)
    write_op_us = time.ticks_diff(time.ticks_us(), t0) / 500
    nf.close()
    nf = rbuf = None
    try:
        os.remove(scratch_img)
    except OSError:
        pass
    fs_reads_per_tap = (c1[0] - c0[0]) / count_n
    nor_pages_per_tap = (c1[8] - c0[8]) / count_n
    out["counts"] = {
        "host_us_per_emulated_fs_read": read_op_us,
        "host_us_per_emulated_nor_program": write_op_us,
        "host_emulator_us_per_tap": fs_reads_per_tap * read_op_us + nor_pages_per_tap * write_op_us,
        "taps": count_n,
        "boot_ms_with_list": boot_ms,
        "boot_ms_empty": boot_empty_ms,
        "boot_fs_reads": boot_reads,
        "fs_reads_per_tap": (c1[0] - c0[0]) / count_n,
        "fs_read_bytes_per_tap": (c1[1] - c0[1]) / count_n,
        "fs_bytes_programmed_per_tap": (c1[2] - c0[2]) / count_n,
        "fs_sectors_erased_per_tap": (c1[3] - c0[3]) / count_n,
        "nor_reads_per_tap": (c1[5] - c0[5]) / count_n,
        "nor_bytes_programmed_per_tap": (c1[6] - c0[6]) / count_n,
        "nor_sectors_erased_per_tap": (c1[7] - c0[7]) / count_n,
        "nor_pages_programmed_per_tap": (c1[8] - c0[8]) / count_n,
        "lookup_fs_reads_found": steps_found / known if known else None,
        "lookup_fs_reads_missing": steps_missing / unknown if unknown else None,
        "lookups_reads_total": fsd.reads - r0,
        "host_tap_us_mean_counting": tap_total / count_n,
        "host_us_in_fs_device_per_tap": (c1[9] - c0[9]) / count_n,
        "host_us_in_nor_device_per_tap": (c1[10] - c0[10]) / count_n,
        "note": "host_us_in_*: time inside the Python flash emulators (file I/O, NOR bit checks), which on an ESP32 is C code plus the flash chip's own time",
    }
    shutdown(reader)
    reader = board = fsd = nor = None
    board_host.BlockDev = BlockDev
    board_host.NorFlash = NorFlash
    gc.collect()

    # ---- phase C: the ride ring wraps; erases must happen while idle ----
    if wrap_n > 0:
        wrap_img = d + "/reader-wraplog.img"
        create_image(wrap_img, wrap_log)
        board = SkewBoard(fs_img, wrap_img, fs_size, wrap_log, stdin=None, stdout=Sink())
        reader = Reader(board)
        reader.boot()
        must(reader.command("TIME " + t_set), "TIME")
        card = board.card
        nor = board.nor
        fsd = board.fs_dev
        tap_erases = tap_fs_erases = idle_erases = idle_fs_erases = 0
        unlogged0 = reader.unlogged
        max_tap_us = 0
        burst = 32
        for i in range(wrap_n):
            put_card(card, ids, i)
            e0 = nor.erased
            f0 = fsd.erased
            t0 = ticks_us()
            reader.tap(TAP, 0)
            t1 = ticks_us()
            tap_erases += nor.erased - e0
            tap_fs_erases += fsd.erased - f0
            if ticks_diff(t1, t0) > max_tap_us:
                max_tap_us = ticks_diff(t1, t0)
            if (i + 1) % burst == 0:
                # The gateway acks the burst; the car stands still for a while.
                must(reader.command("ACK %d" % reader.log.last_seq), "ACK")
                board.skew += 1000
                e0 = nor.erased
                f0 = fsd.erased
                for _ in range(4):
                    reader.idle()
                idle_erases += nor.erased - e0
                idle_fs_erases += fsd.erased - f0
        ring = reader.log.nsec * 128
        out["wrap"] = {
            "log_bytes": wrap_log,
            "ring_slots": ring,
            "taps": wrap_n,
            "laps": wrap_n / ring,
            "ack_every": burst,
            "nor_erases_on_tap_path": tap_erases,
            "fs_erases_on_tap_path": tap_fs_erases,
            "forced_erases": reader.log.forced_erases,
            "nor_erases_while_idle": idle_erases,
            "nor_erases_per_ride_amortized": idle_erases / wrap_n,
            "fs_erases_while_idle": idle_fs_erases,
            "unlogged_rides": reader.unlogged - unlogged0,
            "max_tap_us": max_tap_us,
        }
        shutdown(reader)
        reader = board = None
        gc.collect()

    out["heap"]["free_at_exit"] = gc.mem_free()
    print(json.dumps(out))


try:
    main()
except MemoryError as e:
    sys.print_exception(e, sys.stderr)
    fail("MemoryError: %s (heap free %d)" % (e, gc.mem_free()))
