"""The whitelist capacity rule (docs/partitions.md, "Capacities") lives once,
in liftcard_protocol.capacity: the technician's tool and the gateway's list
sender read the same figures, and a list larger than what a reader reported
is refused with a reason naming both numbers."""

from hypothesis import given
from hypothesis import strategies as st

from liftcard_protocol import capacity as C
from liftcard_provisioning import partitions as PT

MB = 1024 * 1024


def test_the_layouts_figures_come_from_the_shared_rule():
    # docs/partitions.md's table, from the vfs size of each layout.
    assert [C.max_cards(PT.capacity(f).vfs_size) for f in PT.FLASH_SIZES] == [25548, 79970, 210786]
    # One copy: the provisioning module re-exports the protocol's functions.
    assert PT.max_cards is C.max_cards and PT.file_blocks is C.file_blocks
    assert PT.whitelist_bytes is C.whitelist_bytes and PT.WL_COPIES == C.WL_COPIES
    # The host board's 2 MB littlefs image (the virtual readers' default).
    assert C.max_cards(2 * MB) == 36279


@given(st.integers(min_value=0, max_value=64 * MB))
def test_max_cards_is_the_largest_list_whose_copies_fit(vfs_size):
    n = C.max_cards(vfs_size)
    free = vfs_size // C.SECTOR - C.VFS_RESERVED_BLOCKS - C.OVERLAY_COPIES * C.file_blocks(C.OVERLAY_FILE)
    if n == 0:
        assert C.WL_COPIES * C.file_blocks(C.whitelist_bytes(1)) > free
    else:
        assert C.WL_COPIES * C.file_blocks(C.whitelist_bytes(n)) <= free
        assert C.WL_COPIES * C.file_blocks(C.whitelist_bytes(n + 1)) > free


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=2**32 - 1))
def test_too_big_refuses_only_a_list_over_a_known_capacity(cards, capacity):
    why = C.too_big(cards, capacity)
    if capacity == 0 or cards <= capacity:
        assert why is None
    else:
        assert why == (
            "whitelist of %d cards does not fit the reader (at most %d: 3 copies of the list can be on flash at once)"
            % (cards, capacity)
        )
