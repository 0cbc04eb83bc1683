"""How many cards a reader's whitelist may hold (docs/partitions.md, "Capacities").

The rule depends only on the size of the reader's littlefs partition (vfs),
not on the partition layout around it, so the three programs that need it
share this one copy: the technician's tool (liftcard_provisioning.partitions,
which knows the layouts), the gateway's list sender (cardservice.py, which
refuses a full list larger than what the reader reported), and the reader
itself, whose firmware (firmware/liftcard/wlcap.py) computes the same figure
from its own vfs size and reports it in its heartbeat (docs/uplink.md, STATUS).

- ``max_cards(vfs_size)``: the largest list for which every copy that can be
  on flash at once fits.
- ``file_blocks(nbytes)``, ``whitelist_bytes(cards)``: the littlefs blocks of a
  file and the bytes of an LCWL of that many cards.
- ``too_big(cards, capacity)``: None when a list fits a reader that reported
  `capacity` (0: unknown, so anything goes), else the reason.
"""

from __future__ import annotations

from .whitelist import WL_HEADER_LEN

SECTOR = 4096  # a littlefs block on the reader (one flash sector)

# The whitelist (firmware/liftcard/whitelist.py, wlrecv.py; docs/formats.md LCWL/LCWO).
WL_HEADER = WL_HEADER_LEN
WL_RECORD = 16
WL_MAC = 16
OVERLAY_MAX = 256
OVERLAY_FILE = 24 + 17 * OVERLAY_MAX + 16  # LCWO: header, 17-byte entries, MAC
# At most three lists at once: the base list, a new list being received
# (wl/recv.new) and, if a delta compacts the overlay meanwhile, the new base
# (wl/base.new); plus the overlay and its replacement.
WL_COPIES = 3
OVERLAY_COPIES = 2
# Blocks of vfs kept for everything else: littlefs's superblock and directory
# pairs, the firmware and micropython-lib .mpy files (~150 KB, one block or more
# each), config.json, the spend checkpoint, the replay state, and spare.
VFS_RESERVED_BLOCKS = 80


def whitelist_bytes(cards: int) -> int:
    return WL_HEADER + WL_RECORD * cards + WL_MAC


def file_blocks(nbytes: int) -> int:
    """littlefs blocks for a file of nbytes: a CTZ skip list, where block i
    (i >= 1) starts with ctz(i) + 1 four-byte pointers."""
    blocks, room = 1, SECTOR
    while room < nbytes:
        i = blocks
        room += SECTOR - 4 * (((i & -i).bit_length() - 1) + 1)
        blocks += 1
    return blocks


def max_cards(vfs_size: int) -> int:
    """The largest list for which every copy that can be on flash at once fits."""
    free = vfs_size // SECTOR - VFS_RESERVED_BLOCKS - OVERLAY_COPIES * file_blocks(OVERLAY_FILE)
    per_list = free // WL_COPIES
    if per_list <= 0:
        return 0
    lo, hi = 0, per_list * SECTOR // WL_RECORD
    while lo < hi:  # largest n with file_blocks(list(n)) <= per_list
        mid = (lo + hi + 1) // 2
        if file_blocks(whitelist_bytes(mid)) <= per_list:
            lo = mid
        else:
            hi = mid - 1
    return lo


def too_big(cards: int, capacity: int) -> str | None:
    """None if a list of `cards` cards fits a reader that holds at most
    `capacity` (0: the reader did not say: not refused), else the reason."""
    if not capacity or cards <= capacity:
        return None
    return (
        "whitelist of %d cards does not fit the reader (at most %d: %d copies of the list can be on flash at once)"
        % (
            cards,
            capacity,
            WL_COPIES,
        )
    )
