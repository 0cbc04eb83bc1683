# Test rig for firmware tests under MicroPython: flash images, a reader booted on
# the host board with its stdout captured, whitelist/delta builders, and the
# power-cut machinery.

import gc
import json
import os
import struct
import sys

import vfs

from board_host import Board
from hostflash import BlockDev, Rail, create_image
from liftcard.mac import Mac
from liftcard.reader import Reader

TMP = os.getenv("LIFTCARD_TMP") or "/tmp"
VECTORS = os.getenv("LIFTCARD_VECTORS")
MB2 = 2 * 1024 * 1024
HEAP = os.getenv("LIFTCARD_HEAP") or "192K"
HERE = __file__.rsplit("/", 1)[0]
KEY_HEX = "8f2a5c61d7e94b30a1c6f0e2d4b89a7355e1c03b9d7f26a48b10e6c2f5a7d931"
KEY = bytes(int(KEY_HEX[i : i + 2], 16) for i in range(0, 64, 2))
READER_ID = 1017
BUILDING_ID = 12

CONFIG = {
    "reader_id": READER_ID,
    "building_id": BUILDING_ID,
    "floors": 7,
    "ground_floor": 0,
    "key": KEY_HEX,
    "tariff": {
        "fee_fen": [0, 0, 10, 20, 30, 40, 50],
        "free_classes": ["exempt"],
        "monthly_cap_fen": 3000,
        "debounce_s": 30,
    },
    "legacy_uid": False,
    "relay_ms": 4000,
    "utc_offset_min": 480,
}


class Sink:
    # Captures what the board prints (relay, LED, ride reports, replies).
    def __init__(self, keep=True):
        self.keep = keep
        self.lines = []

    def write(self, b):
        # Keeps the latest few hundred writes: enough for any check, bounded
        # in a 192K heap however long a test taps.
        if self.keep:
            if len(self.lines) >= 256:
                self.lines.pop(0)
            self.lines.append(bytes(b))
        return len(b)

    def text(self):
        return b"".join(self.lines).decode()


def path(name):
    return TMP + "/" + name


def card_id(i):
    # Spread over the whole u64 range, including ids >= 2**63.
    v = (i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return v.to_bytes(8, "big")


def record(cid, household, floors=0b1000001, status=0, klass=0, until=0xFFFF):
    return cid + bytes(
        (
            household >> 16,
            (household >> 8) & 255,
            household & 255,
            floors >> 8,
            floors & 255,
            (status << 4) | klass,
            until >> 8,
            until & 255,
        )
    )


def write_whitelist(fname, records, version, reader_id=READER_ID, building_id=BUILDING_ID, key=KEY):
    # records: iterable of 16-byte card records, sorted by card id.
    recs = sorted(records)
    hdr = struct.pack(">4sBBHIIIIII", b"LCWL", 1, 16, 0, reader_id, building_id, version, len(recs), 0, 0)
    mac = Mac(key).start()
    mac.update(hdr)
    with open(fname, "wb") as f:
        f.write(hdr)
        for r in recs:
            mac.update(r)
            f.write(r)
        f.write(mac.digest())
    return fname


def build_delta(ops, base, new, reader_id=READER_ID, building_id=BUILDING_ID, key=KEY, magic=b"LCWD"):
    # ops: list of (op, 16-byte record); sorted by card id here.
    ops = sorted(ops, key=lambda o: o[1][:8])
    body = b"".join(bytes((op,)) + (rec if op == 1 else rec[:8] + bytes(8)) for op, rec in ops)
    hdr = struct.pack(">4sBBHIIII", magic, 1, 16, len(ops), reader_id, building_id, base, new)
    return hdr + body + Mac(key).of(hdr + body)


def make_images(prefix="r", fs_size=MB2, log_size=MB2):
    fs = path(prefix + "-fs.img")
    log = path(prefix + "-log.img")
    create_image(fs, fs_size)
    create_image(log, log_size)
    dev = BlockDev(fs)
    vfs.VfsLfs2.mkfs(dev)
    dev.close()
    return fs, log


def write_config(cfg=None, fname=None):
    fname = fname or path("config.json")
    with open(fname, "w") as f:
        json.dump(cfg or CONFIG, f)
    return fname


class ManualClockBoard(Board):
    # The host board with a clock the test sets: `now_s` (liftcard epoch) and
    # `now_ms` (monotonic), as the fee vectors give them.
    now_s = 90201600
    now_ms = 1000

    def ticks_ms(self):
        return self.now_ms

    def epoch(self):
        return self.now_s

    def set_epoch(self, s):
        pass


def boot(prefix="r", keep_output=True, board_cls=Board):
    # Boots a reader on existing images (a power-on: nothing carried over).
    board = board_cls(path(prefix + "-fs.img"), path(prefix + "-log.img"), stdin=None, stdout=Sink(keep_output))
    r = Reader(board)
    r.boot()
    return r


def arm(reader, cut_after=-1):
    # Counts the board's flash writes from now on (both chips); power fails on
    # write number cut_after + 1 (-1: never). Returns the rail.
    b = reader.board
    rail = Rail(cut_after)
    b.fs_dev.rail = rail
    b.nor.rail = rail
    return rail


def shutdown(reader):
    # Power off: nothing is closed cleanly. The rail goes dead so whatever the
    # old objects still do (file finalizers) cannot reach the images; they are
    # left to the garbage collector.
    b = reader.board
    for dev in (b.fs_dev, b.nor):
        if dev:
            dev.rail.dead = True
    # Files the cut left open are finalized now, while their filesystem is
    # still mounted; their writes go nowhere (the rail is dead).
    try:
        reader.wl.close()
    except Exception:
        pass
    gc.collect()
    try:
        vfs.umount("/flash")
    except OSError:
        pass
    os.chdir(TMP)


def child(module, function, *args, heap=None):
    # Runs module.function(*args) in a fresh MicroPython with the reader's heap
    # limit: a power-on after a cut starts from nothing but the flash images.
    # Only test-data builders, which never run a reader, may ask for more heap.
    log = path("child.log")
    cmd = "%s -X heapsize=%s %s/mprun.py %s %s %s > %s 2>&1" % (
        sys.executable,
        heap or HEAP,
        HERE,
        module,
        function,
        " ".join(str(a) for a in args),
        log,
    )
    status = os.system(cmd)
    if status != 0:
        with open(log) as f:
            print(f.read())
        raise AssertionError("%s.%s%r failed (status %d)" % (module, function, args, status))


def copy_file(src, dst):
    buf = bytearray(4096)
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(buf)
            if not n:
                break
            b.write(memoryview(buf)[:n])


def snapshot(prefix, to):
    copy_file(path(prefix + "-fs.img"), path(to + "-fs.img"))
    copy_file(path(prefix + "-log.img"), path(to + "-log.img"))


def configured_reader(
    prefix="r", cards=None, version=1, cfg=None, keep_output=True, board_cls=Board, key=KEY, log_size=MB2
):
    # Fresh images, config and whitelist installed through the reader's commands.
    # cards: a list of records, or the name of a whitelist file already written.
    # Test data is written out and dropped before the reader boots: 192K is
    # tight, and hundreds of live test records would fragment the heap the
    # reader allocates its tables from.
    wl = None
    if isinstance(cards, str):
        wl = cards
    elif cards is not None:
        c = cfg or CONFIG
        wl = write_whitelist(path("wl-v%d.bin" % version), cards, version, c["reader_id"], c["building_id"], key)
    cards = None
    gc.collect()
    make_images(prefix, log_size=log_size)
    r = boot(prefix, keep_output, board_cls)
    assert r.command("CONFIG " + write_config(cfg)).startswith("OK"), r.error
    if wl:
        reply = r.command("WL " + wl)
        assert reply.startswith("OK"), reply
    r.command("TIME 91000000")
    return r


def tap(reader, cid, floor=0):
    b = reader.board
    for i in range(8):
        b.card[i] = cid[i]
    from liftcard import codes

    return reader.tap(codes.TAP_CREDENTIAL, floor)


def all_records(reader):
    out = []
    for rec in reader.log.records(1):
        out.append(bytes(rec))
    return out


def seq(rec):
    return struct.unpack_from(">I", rec, 0)[0]


def fee(rec):
    return (rec[24] << 8) | rec[25]


def vector_meta(name):
    # The {"meta": ...} first line of a shared vector file (tests/vectors).
    with open(VECTORS + "/" + name) as f:
        return json.loads(f.readline())["meta"]


def vector_cases(name, group=None):
    # The cases of a shared vector file, one line at a time (a whole file
    # would not fit beside a reader in 192K). Yields (group, case); for a
    # file that is a plain list, group is None.
    with open(VECTORS + "/" + name) as f:
        while True:
            line = f.readline()
            if not line:
                return
            obj = json.loads(line)
            if "meta" in obj:
                continue
            if "group" in obj:
                if group is None or obj["group"] == group:
                    yield obj["group"], obj["case"]
            else:
                yield None, obj


def unhex(s):
    return bytes(int(s[i : i + 2], 16) for i in range(0, len(s), 2))


def hexs(b):
    return "".join("%02x" % x for x in b)


def save_json(name, obj):
    with open(path(name), "w") as f:
        json.dump(obj, f)


def load_json(name):
    with open(path(name)) as f:
        return json.load(f)


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def expect_error(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return str(e)
    raise AssertionError("expected an error from %s" % fn)
