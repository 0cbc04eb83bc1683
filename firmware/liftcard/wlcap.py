# How many cards this reader's whitelist can hold, reported in the heartbeat
# (docs/uplink.md, STATUS) so that the gateway sends no full list that would
# fail on this flash. The rule is liftcard_protocol/capacity.py's (docs/partitions.md,
# "Capacities"): three lists, two overlays and a reserve must fit in the
# littlefs partition the lists live on. Computed once per boot (a few loop
# turns) and kept.

import os

from micropython import const

_SECTOR = const(4096)
_LIST_FIXED = const(48)  # LCWL header 32 + MAC 16
_REC = const(16)
_OVERLAY_FILE = const(4392)  # LCWO: 24 + 17 * 256 + 16
_WL_COPIES = const(3)
_OVERLAY_COPIES = const(2)
_RESERVED_BLOCKS = const(80)

_cap = -1  # not computed yet


def file_blocks(nbytes):
    # littlefs blocks of a file: block i (i >= 1) starts with ctz(i) + 1
    # four-byte pointers (its CTZ skip list).
    blocks = 1
    room = _SECTOR
    while room < nbytes:
        i = blocks
        ptrs = 1
        while not i & 1:
            i >>= 1
            ptrs += 1
        room += _SECTOR - 4 * ptrs
        blocks += 1
    return blocks


def _room(blocks):
    # The bytes a file of `blocks` blocks holds: 4096 each, less the pointers
    # of blocks 1..n-1 (n = blocks - 1), sum(ctz(i) + 1) = 2n - popcount(n).
    # The same figure as growing file_blocks() to the limit, in a dozen steps
    # instead of a search over thousands of blocks.
    n = blocks - 1
    ones = 0
    m = n
    while m:
        ones += m & 1
        m >>= 1
    return _SECTOR * blocks - 4 * (2 * n - ones)


def max_cards(vfs_size):
    free = vfs_size // _SECTOR - _RESERVED_BLOCKS - _OVERLAY_COPIES * file_blocks(_OVERLAY_FILE)
    per_list = free // _WL_COPIES
    if per_list <= 0:
        return 0
    n = (_room(per_list) - _LIST_FIXED) // _REC
    return n if n > 0 else 0


def capacity():
    # Of the filesystem the reader runs in (its working directory: / on a
    # board, the littlefs image on the host board); 0 when it cannot be read.
    global _cap
    if _cap < 0:
        try:
            st = os.statvfs(".")
            _cap = max_cards(st[1] * st[2])  # f_frsize * f_blocks
        except (OSError, AttributeError):
            _cap = 0
    return _cap
