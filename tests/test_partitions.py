"""The reader partition table (docs/partitions.md): ESP-IDF's binary format,
the layouts per flash size, and the capacities the whitelist sender checks."""

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_provisioning import partitions as PT

ROOT = Path(__file__).resolve().parent.parent
MB = PT.MB

# ESP-IDF's "single factory app, no OTA" table as read back from a board's flash
# at 0x8000 (first 0x80 bytes; the rest of the 0xC00 is 0xFF): what
# gen_esp32part.py wrote, with its MD5 entry.
ROWS = """
aa 50 01 02 00 90 00 00 00 60 00 00 6e 76 73 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
aa 50 01 01 00 f0 00 00 00 10 00 00 70 68 79 5f
69 6e 69 74 00 00 00 00 00 00 00 00 00 00 00 00
aa 50 00 00 00 00 01 00 00 00 10 00 66 61 63 74
6f 72 79 00 00 00 00 00 00 00 00 00 00 00 00 00
eb eb ff ff ff ff ff ff ff ff ff ff ff ff ff ff
f4 ad 4f 45 38 56 4b 5d 74 35 b6 2c 75 b6 95 24
"""
IDF_SINGLEAPP = bytes.fromhex(ROWS.replace(" ", "").replace("\n", "")) + b"\xff" * (0xC00 - 0x80)
SINGLEAPP = [
    PT.Entry("nvs", PT.TYPE_DATA, PT.SUBTYPE_NVS, 0x9000, 0x6000),
    PT.Entry("phy_init", PT.TYPE_DATA, PT.SUBTYPE_PHY, 0xF000, 0x1000),
    PT.Entry("factory", PT.TYPE_APP, PT.SUBTYPE_FACTORY, 0x10000, 0x100000),
]


def test_matches_a_table_esp_idf_wrote():
    assert PT.build(SINGLEAPP) == IDF_SINGLEAPP
    assert PT.parse(IDF_SINGLEAPP) == SINGLEAPP


def test_md5_entry_is_checked():
    t = bytearray(PT.table(4 * MB))
    n = len(PT.layout(4 * MB))
    assert t[n * 32 : n * 32 + 16] == PT.MD5_MAGIC
    assert t[n * 32 + 16 : n * 32 + 32] == hashlib.md5(t[: n * 32]).digest()
    assert len(t) == 0xC00 and set(t[(n + 1) * 32 :]) == {0xFF}
    t[0x24] ^= 1  # a bit of the second entry's label
    with pytest.raises(PT.PartitionError, match="MD5 mismatch at 0xA0"):
        PT.parse(bytes(t))
    t = bytearray(PT.table(4 * MB))
    t[0x20] = 0
    with pytest.raises(PT.PartitionError, match="magic 0050"):
        PT.parse(bytes(t))


def test_table_without_md5_parses_to_the_first_erased_entry():
    body = b"".join(e.pack() for e in SINGLEAPP)
    assert PT.parse(body + b"\xff" * (0xC00 - len(body))) == SINGLEAPP


LAYOUTS = {
    # flash: (vfs offset, size), (ridelog offset, size), max cards, max rides
    4 * MB: ((0x200000, 0x180000), (0x380000, 0x080000), 25548, 16000),
    8 * MB: ((0x200000, 0x400000), (0x600000, 0x200000), 79970, 65152),
    16 * MB: ((0x200000, 0xA00000), (0xC00000, 0x400000), 210786, 130688),
}


@pytest.mark.parametrize("flash", sorted(LAYOUTS))
def test_reader_layouts(flash):
    (vfs_at, vfs_size), (log_at, log_size), cards, rides = LAYOUTS[flash]
    entries = PT.parse(PT.table(flash))
    assert entries == PT.layout(flash)
    # MicroPython's own partitions for the app, unchanged (ports/esp32/partitions-4MiB.csv)
    assert entries[:3] == SINGLEAPP[:2] + [PT.Entry("factory", PT.TYPE_APP, PT.SUBTYPE_FACTORY, 0x10000, 0x1F0000)]
    assert entries[3] == PT.Entry("vfs", PT.TYPE_DATA, 0x81, vfs_at, vfs_size)  # data/fat: the port mounts it
    assert entries[4] == PT.Entry("ridelog", PT.TYPE_DATA, PT.SUBTYPE_RIDELOG, log_at, log_size)
    assert log_at + log_size == flash  # the whole flash is used
    cap = PT.capacity(flash)
    assert (cap.max_cards, cap.max_rides) == (cards, rides)
    assert PT.check_whitelist(flash, cards) is None
    why = PT.check_whitelist(flash, cards + 1)
    assert why.startswith(
        "whitelist of %d cards does not fit a %dMB reader (at most %d" % (cards + 1, flash // MB, cards)
    )


def test_capacity_rules():
    # docs/formats.md: a 2 MB ride log holds 65,152 unacknowledged rides
    assert PT.ride_slots(2 * MB) == 65152
    assert PT.ride_slots(3 * 4096) == 0
    # the largest list: all its copies fit in what vfs leaves, one more card does not
    for flash in LAYOUTS:
        cap = PT.capacity(flash)
        free = cap.vfs_size // 4096 - PT.VFS_RESERVED_BLOCKS - PT.OVERLAY_COPIES * PT.file_blocks(PT.OVERLAY_FILE)
        assert PT.WL_COPIES * PT.file_blocks(PT.whitelist_bytes(cap.max_cards)) <= free
        assert PT.WL_COPIES * PT.file_blocks(PT.whitelist_bytes(cap.max_cards + 1)) > free
    assert PT.file_blocks(1) == 1 and PT.file_blocks(4096) == 1 and PT.file_blocks(4097) == 2
    assert PT.file_blocks(2 * 4096 - 4) == 2 and PT.file_blocks(2 * 4096 - 3) == 3  # block 1 holds one pointer


def const(path, name):
    m = re.search(r"^%s = const\((\d+)\)" % name, (ROOT / path).read_text(), re.M)
    assert m, (path, name)
    return int(m.group(1))


def test_rules_match_the_firmware():
    assert const("firmware/liftcard/ridelog.py", "SECTOR") == PT.SECTOR
    assert const("firmware/liftcard/ridelog.py", "SLOT") == PT.RIDE_SLOT
    assert const("firmware/liftcard/ridelog.py", "SLOTS") == PT.RIDE_SLOTS_PER_SECTOR
    assert const("firmware/liftcard/ridelog.py", "JOURNAL") == PT.RIDE_JOURNAL_SECTORS
    assert const("firmware/liftcard/whitelist.py", "REC") == PT.WL_RECORD
    assert const("firmware/liftcard/whitelist.py", "HDR") == PT.WL_HEADER
    assert const("firmware/liftcard/whitelist.py", "OVERLAY_MAX") == PT.OVERLAY_MAX
    assert const("firmware/liftcard/whitelist.py", "OP") == 17
    assert const("firmware/liftcard/whitelist.py", "DHDR") == 24
    board = (ROOT / "firmware/liftcard/board_esp32.py").read_text()
    assert '_LOG_PARTITION = "ridelog"' in board and "TYPE_DATA" in board


def test_bad_layouts_are_refused():
    with pytest.raises(PT.PartitionError, match="no reader layout for 2MB flash"):
        PT.layout(2 * MB)
    with pytest.raises(PT.PartitionError, match="overlaps"):
        PT.check([PT.Entry("a", 1, 2, 0x9000, 0x2000), PT.Entry("b", 1, 2, 0xA000, 0x1000)], 4 * MB)
    with pytest.raises(PT.PartitionError, match="not aligned to 0x10000"):
        PT.check([PT.Entry("app", 0, 0, 0x11000, 0x10000)], 4 * MB)
    with pytest.raises(PT.PartitionError, match="past the 4MB flash"):
        PT.check([PT.Entry("big", 1, 2, 0x9000, 4 * MB)], 4 * MB)
    with pytest.raises(PT.PartitionError, match="1..16 ASCII"):
        PT.build([PT.Entry("a-label-longer-than-16", 1, 2, 0x9000, 0x1000)])
    with pytest.raises(PT.PartitionError, match="at most 95"):
        PT.build([PT.Entry("p%d" % i, 1, 2, 0x9000, 0x1000) for i in range(96)])
    assert PT.parse_size("16MB") == 16 * MB
    with pytest.raises(PT.PartitionError):
        PT.parse_size("lots")


labels = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16)
entries = st.builds(
    PT.Entry,
    label=labels,
    type=st.integers(0, 0xFE),
    subtype=st.integers(0, 0xFE),
    offset=st.integers(0, 0xFFFFFFFF),
    size=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0xFFFFFFFF),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(entries, max_size=PT.MAX_ENTRIES))
def test_parse_build_round_trip(xs):
    blob = PT.build(xs)
    assert len(blob) == PT.TABLE_LEN
    assert PT.parse(blob) == xs
