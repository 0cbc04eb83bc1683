# The reader's heartbeat (STATUS, docs/uplink.md): the 44-byte body with the
# Wi-Fi signal, the firmware version and the whitelist capacity (its vectors
# are encoded in test_uplink_codec.py); and the capacity rule (wlcap.py) giving the gateway's
# figures (liftcard_protocol/capacity.py, pinned by tests/test_heartbeat_capacity.py).
import rig
from rig import check
from liftcard import wlcap
from liftcard.uplinkcodec import STATUS_LEN, Codec


def test_heartbeat_is_44_bytes():
    # Every 44-byte status vector is encoded byte for byte by
    # test_uplink_codec.py's test_encode_up_vectors.
    check(STATUS_LEN == 44, "STATUS_LEN")


def test_signal_out_of_range_is_clamped_to_an_i8():
    c = Codec(bytes(32), 1, 2)
    lo = bytes(c.status(1, 2, 3, 4, rssi=-300))
    c.msgno = 0
    at = bytes(c.status(1, 2, 3, 4, rssi=-128))
    check(lo == at, "below -128 dBm reads as -128")


def test_capacity_rule_gives_the_gateways_figures():
    # docs/partitions.md: the vfs of the 4, 8 and 16 MB layouts, and the host
    # board's 2 MB image.
    got = [wlcap.max_cards(s) for s in (0x180000, 0x400000, 0xA00000, 2 * 1024 * 1024)]
    check(got == [25548, 79970, 210786, 36279], "max_cards: %r" % (got,))
    check(wlcap.max_cards(0) == 0 and wlcap.max_cards(80 * 4096) == 0, "too small a filesystem holds no list")
    check(wlcap.file_blocks(4096) == 1 and wlcap.file_blocks(4097) == 2, "file_blocks")
    check(wlcap.file_blocks(2 * 4096 - 4) == 2 and wlcap.file_blocks(2 * 4096 - 3) == 3, "block 1 holds one pointer")


def test_capacity_is_the_largest_list_whose_copies_fit():
    # wlcap computes the figure in closed form; the rule is a search for the
    # largest list whose three copies fit beside two overlays and the reserve.
    over = 2 * wlcap.file_blocks(24 + 17 * 256 + 16)
    size = 0
    while size < 24 * 1024 * 1024:
        n = wlcap.max_cards(size)
        free = size // 4096 - 80 - over
        fits = 3 * wlcap.file_blocks(48 + 16 * n) <= free
        check(fits if n else 3 * wlcap.file_blocks(64) > free, "size %d: %d cards do not fit" % (size, n))
        check(3 * wlcap.file_blocks(48 + 16 * (n + 1)) > free, "size %d: %d cards fit too" % (size, n + 1))
        size += 4096 * 97 + 1234


def test_capacity_of_the_filesystem_the_reader_runs_in():
    rig.make_images("hb")
    r = rig.boot("hb")
    try:
        check(wlcap.capacity() == 36279, "capacity %d" % wlcap.capacity())  # a 2 MB littlefs image
    finally:
        rig.shutdown(r)
