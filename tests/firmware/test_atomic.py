# The firmware's two small helpers: atomic.py (a file replaced so that a power
# cut leaves the old content or the new, never a mix) on littlefs over the
# file-backed flash, with a cut at every flash write of a replace; and u32.py
# (big-endian u32 fields in place, allocating nothing).
import gc

import vfs

import rig
from rig import check
from hostflash import BlockDev, PowerLoss, Rail, create_image
from liftcard import atomic, u32

_MNT = "/atomic"
_OLD = b"old " * 300  # bigger than a littlefs inline file: blocks of its own
_NEW = b"new content " * 150


def _image():
    img = rig.path("atomic-fs.img")
    create_image(img, 256 * 1024)
    dev = BlockDev(img)
    vfs.VfsLfs2.mkfs(dev)
    dev.close()
    return img


def _mount(img, rail=None):
    dev = BlockDev(img, None, rail)
    vfs.mount(vfs.VfsLfs2(dev), _MNT)
    return dev


def _unmount(dev):
    gc.collect()  # files a cut left open are finalized while still mounted
    try:
        vfs.umount(_MNT)
    except OSError:
        pass
    dev.close()


def _read(name):
    try:
        with open(_MNT + "/" + name, "rb") as f:
            return f.read()
    except OSError:
        return None


def test_write_and_replace():
    img = _image()
    dev = _mount(img)
    f, new = _MNT + "/f", _MNT + "/f.new"
    atomic.write(f, new, b"one")
    check(_read("f") == b"one" and _read("f.new") is None)
    atomic.write(f, new, b"tw", "o")  # several parts, str or bytes
    check(_read("f") == b"two")
    try:
        with atomic.Replace(f, new) as out:
            out.write(b"half of it")
            raise ValueError("the writer failed")
    except ValueError:
        pass
    check(_read("f") == b"two", "a failed replace must leave the old file")
    check(_read("f.new") is None, "a failed replace must remove its new file")
    with atomic.Replace(f, new) as out:
        out.write(b"thr")
        out.write(b"ee")
    check(_read("f") == b"three" and _read("f.new") is None)
    atomic.write(new, _MNT + "/g.new", b"received")
    atomic.commit(new, f)
    check(_read("f") == b"received" and _read("f.new") is None)
    _unmount(dev)


def test_power_cut_leaves_old_or_new():
    # A cut at flash write 1, 2, 3, ... of one replace, each on a fresh image
    # holding the old file: remounted afterwards, the file is wholly the old
    # content or wholly the new.
    cut = 0
    saw_old = saw_new = False
    while True:
        img = _image()
        dev = _mount(img)
        atomic.write(_MNT + "/f", _MNT + "/f.new", _OLD)
        dev.rail = Rail(cut)
        finished = True
        try:
            atomic.write(_MNT + "/f", _MNT + "/f.new", _NEW)
        except PowerLoss:
            finished = False
            dev.rail.dead = True
        _unmount(dev)
        dev = _mount(img)
        got = _read("f")
        _unmount(dev)
        check(got == _OLD or got == _NEW, "cut at write %d: the file is neither old nor new" % (cut + 1))
        saw_old |= got == _OLD
        saw_new |= got == _NEW
        if finished:
            check(got == _NEW)
            break
        cut += 1
    check(cut > 2 and saw_old and saw_new, "cuts %d, old seen %s, new seen %s" % (cut, saw_old, saw_new))


def test_u32_in_place_without_allocating():
    buf = bytearray(12)
    for off, v in ((0, 0), (4, 0x01020304), (8, 0xFFFFFFFF)):
        u32.put(buf, off, v)
    check(bytes(buf) == b"\0\0\0\0\x01\x02\x03\x04\xff\xff\xff\xff", repr(bytes(buf)))
    check(u32.get(buf) == 0 and u32.get(buf, 4) == 0x01020304 and u32.get(buf, 8) == 0xFFFFFFFF)
    check(u32.get(b"\x80\0\0\x01") == 0x80000001)
    u32.put(buf, 2, 0x3FFFFFFF)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(100):
            u32.put(buf, 2, 0x3FFFFFFF)
            v = u32.get(buf, 2)
        after = gc.mem_alloc()
    finally:
        gc.enable()
    check(v == 0x3FFFFFFF and after == before, "u32 allocated %d bytes" % (after - before))
