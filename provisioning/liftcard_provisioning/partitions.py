"""The reader's partition table: ESP-IDF binary format, one layout per flash size.

A reader runs MicroPython's ESP32 port with MicroPython's own partitions for the
application (nvs, phy_init, factory app at 0x10000) and its littlefs filesystem
(``vfs``: type data, subtype fat, which is what the port's ``_boot.py`` mounts),
plus one partition of ours: ``ridelog``, the raw NOR ride log
(firmware/liftcard/ridelog.py), found by ``board_esp32`` by label. docs/partitions.md
describes every byte and the capacities.

- ``build(entries) -> bytes``: the 0xC00-byte table (entries, the MD5 entry,
  0xFF padding), written at flash offset 0x8000.
- ``parse(blob) -> [Entry]``: the inverse; refuses a table whose MD5 does not match.
- ``layout(flash_size) -> [Entry]``, ``table(flash_size) -> bytes``: the reader layouts.
- ``capacity(flash_size) -> Capacity``: how many cards a whitelist may hold and how
  many rides the log buffers; ``check_whitelist(flash_size, cards)`` is the check a
  list sender makes (a list that cannot fit is refused with the reason).

The whitelist capacity rule (max_cards and what it needs) lives in
liftcard_protocol.capacity, shared with the gateway's list sender and
re-exported here.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from liftcard_protocol.capacity import (  # noqa: F401 (re-exported: the layout's capacities in one module)
    OVERLAY_COPIES,
    OVERLAY_FILE,
    OVERLAY_MAX,
    VFS_RESERVED_BLOCKS,
    WL_COPIES,
    WL_HEADER,
    WL_MAC,
    WL_RECORD,
    file_blocks,
    max_cards,
    whitelist_bytes,
)

TABLE_OFFSET = 0x8000
TABLE_LEN = 0xC00  # ESP-IDF's MAX_PARTITION_LENGTH; the rest of the 4 KB sector is for a signature
ENTRY_LEN = 32
MAGIC = b"\xaa\x50"  # 0x50AA little-endian
MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
_ENTRY = struct.Struct("<2sBBII16sI")
MAX_ENTRIES = (TABLE_LEN - ENTRY_LEN) // ENTRY_LEN  # room for the MD5 entry

TYPE_APP = 0x00
TYPE_DATA = 0x01
SUBTYPE_FACTORY = 0x00
SUBTYPE_PHY = 0x01
SUBTYPE_NVS = 0x02
SUBTYPE_FAT = 0x81
SUBTYPE_RIDELOG = 0x40  # ours: no ESP-IDF data subtype uses 0x40 (they use 0x00-0x06, 0x80-0x83)
FLAG_ENCRYPTED = 0x1
FLAG_READONLY = 0x2

SECTOR = 4096
APP_ALIGN = 0x10000
MB = 1024 * 1024
FLASH_SIZES = (4 * MB, 8 * MB, 16 * MB)

# The ride log (firmware/liftcard/ridelog.py, docs/formats.md "Ride log partition").
RIDE_SLOT = 32
RIDE_SLOTS_PER_SECTOR = SECTOR // RIDE_SLOT  # 128
RIDE_JOURNAL_SECTORS = 2
RIDE_ERASE_AHEAD = 1  # the sector ahead of the head is kept erased: its slots never hold rides
RIDE_MIN_SECTORS = RIDE_JOURNAL_SECTORS + 2

# The whitelist's constants and capacity rule (WL_*, OVERLAY_*,
# VFS_RESERVED_BLOCKS, file_blocks, whitelist_bytes, max_cards) are imported
# above from liftcard_protocol.capacity: the gateway's list sender uses them too.


class PartitionError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    def pack(self) -> bytes:
        name = self.label.encode("ascii")
        if not 0 < len(name) <= 16:
            raise PartitionError("label %r must be 1..16 ASCII characters" % self.label)
        for field, v in (("type", self.type), ("subtype", self.subtype)):
            if not 0 <= v <= 0xFE:
                raise PartitionError("%s: %s %d is not 0..254" % (self.label, field, v))
        for field, v in (("offset", self.offset), ("size", self.size), ("flags", self.flags)):
            if not 0 <= v <= 0xFFFFFFFF:
                raise PartitionError("%s: %s %d does not fit 32 bits" % (self.label, field, v))
        return _ENTRY.pack(MAGIC, self.type, self.subtype, self.offset, self.size, name.ljust(16, b"\0"), self.flags)


def build(entries) -> bytes:
    """The table as ESP-IDF's gen_esp32part.py writes it (with its MD5 entry)."""
    entries = list(entries)
    if len(entries) > MAX_ENTRIES:
        raise PartitionError("%d partitions: at most %d fit" % (len(entries), MAX_ENTRIES))
    body = b"".join(e.pack() for e in entries)
    body += MD5_MAGIC + hashlib.md5(body).digest()
    return body + b"\xff" * (TABLE_LEN - len(body))


def parse(blob: bytes) -> list[Entry]:
    """Entries up to the MD5 entry (checked) or the first erased entry."""
    if len(blob) < ENTRY_LEN:
        raise PartitionError("partition table too short (%d bytes)" % len(blob))
    out = []
    for off in range(0, min(len(blob), TABLE_LEN), ENTRY_LEN):
        raw = blob[off : off + ENTRY_LEN]
        if len(raw) < ENTRY_LEN or raw == b"\xff" * ENTRY_LEN:
            break  # no MD5 entry (tables written with --disable-md5sum)
        if raw[:16] == MD5_MAGIC:
            if raw[16:] != hashlib.md5(blob[:off]).digest():
                raise PartitionError("partition table MD5 mismatch at 0x%X: corrupted table" % off)
            return out
        magic, ptype, sub, offset, size, name, flags = _ENTRY.unpack(raw)
        if magic != MAGIC:
            raise PartitionError("entry at 0x%X has magic %s, not AA50" % (off, magic.hex().upper()))
        try:
            label = name.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise PartitionError("entry at 0x%X has a non-ASCII label" % off) from None
        out.append(Entry(label, ptype, sub, offset, size, flags))
    return out


def check(entries, flash_size: int) -> None:
    """Alignment, overlap and fit rules (gen_esp32part.py's): raise PartitionError."""
    end = TABLE_OFFSET + SECTOR
    seen = set()
    for e in sorted(entries, key=lambda e: e.offset):
        align = APP_ALIGN if e.type == TYPE_APP else SECTOR
        if e.label in seen:
            raise PartitionError("duplicate label %r" % e.label)
        seen.add(e.label)
        if e.offset % align or e.size % SECTOR or not e.size:
            raise PartitionError("%s at 0x%X size 0x%X is not aligned to 0x%X" % (e.label, e.offset, e.size, align))
        if e.offset < end:
            raise PartitionError("%s at 0x%X overlaps what comes before (ends at 0x%X)" % (e.label, e.offset, end))
        end = e.offset + e.size
    if end > flash_size:
        raise PartitionError("partitions end at 0x%X, past the %s flash" % (end, size_name(flash_size)))


# --- the reader layouts -----------------------------------------------------

# flash size -> (vfs size, ridelog size); the app keeps MicroPython's 0x1F0000.
_SPLIT = {
    4 * MB: (0x180000, 0x080000),
    8 * MB: (0x400000, 0x200000),
    16 * MB: (0xA00000, 0x400000),
}


def size_name(flash_size: int) -> str:
    return "%dMB" % (flash_size // MB) if flash_size % MB == 0 else "0x%X bytes" % flash_size


def parse_size(s: str) -> int:
    """esptool's flash size names ('4MB') -> bytes."""
    s = s.strip().upper()
    if s.endswith("MB") and s[:-2].isdigit():
        return int(s[:-2]) * MB
    if s.endswith("KB") and s[:-2].isdigit():
        return int(s[:-2]) * 1024
    raise PartitionError("flash size %r is not like 4MB" % s)


def layout(flash_size: int) -> list[Entry]:
    if flash_size not in _SPLIT:
        raise PartitionError(
            "no reader layout for %s flash (supported: %s)"
            % (size_name(flash_size), ", ".join(size_name(s) for s in FLASH_SIZES))
        )
    vfs, log = _SPLIT[flash_size]
    entries = [
        Entry("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
        Entry("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
        Entry("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000),
        Entry("vfs", TYPE_DATA, SUBTYPE_FAT, 0x200000, vfs),
        Entry("ridelog", TYPE_DATA, SUBTYPE_RIDELOG, 0x200000 + vfs, log),
    ]
    check(entries, flash_size)
    return entries


def table(flash_size: int) -> bytes:
    return build(layout(flash_size))


def find(entries, label: str) -> Entry:
    for e in entries:
        if e.label == label:
            return e
    raise PartitionError("no %r partition" % label)


# --- capacities -------------------------------------------------------------


def ride_slots(partition_size: int) -> int:
    """Rides the log holds unacknowledged before it is full (docs/formats.md)."""
    sectors = partition_size // SECTOR
    if sectors < RIDE_MIN_SECTORS:
        return 0
    return (sectors - RIDE_JOURNAL_SECTORS - RIDE_ERASE_AHEAD) * RIDE_SLOTS_PER_SECTOR


@dataclass(frozen=True)
class Capacity:
    flash_size: int
    vfs_size: int
    ridelog_size: int
    max_cards: int
    max_rides: int


def capacity(flash_size: int) -> Capacity:
    entries = layout(flash_size)
    vfs, log = find(entries, "vfs"), find(entries, "ridelog")
    return Capacity(flash_size, vfs.size, log.size, max_cards(vfs.size), ride_slots(log.size))


def check_whitelist(flash_size: int, cards: int) -> str | None:
    """None if a list of `cards` cards fits a reader with this flash, else the reason."""
    cap = capacity(flash_size)
    if cards <= cap.max_cards:
        return None
    return (
        "whitelist of %d cards does not fit a %s reader (at most %d: %d copies of the list can be on flash at once)"
        % (
            cards,
            size_name(flash_size),
            cap.max_cards,
            WL_COPIES,
        )
    )


def describe(entries) -> list[str]:
    lines = []
    for e in entries:
        lines.append(
            "%-9s type 0x%02X subtype 0x%02X offset 0x%06X size 0x%06X (%d KB)"
            % (e.label, e.type, e.subtype, e.offset, e.size, e.size // 1024)
        )
    return lines
