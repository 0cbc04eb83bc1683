# The NOR ride log: the full-log policy, erase-ahead while idle, the ack
# journal, torn-tail recovery and the NOR rules themselves. A small partition
# (2 journal + 4 ring sectors = 512 slots) makes the edges reachable.
import rig
from rig import check, tap, card_id, record
from liftcard import codes
from hostflash import NorFlash, SECTOR
from liftcard.ridelog import JOURNAL, SLOT, SLOTS, RideLog

RING = 4
LOG_SIZE = (JOURNAL + RING) * SECTOR


def _reader(prefix="r"):
    cards = [record(card_id(i), 100 + i, 0b100001) for i in range(1, 9)]
    return rig.configured_reader(prefix=prefix, cards=cards, keep_output=True, log_size=LOG_SIZE)


def _quiet(r):
    ms = r.board.ticks_ms()
    r._last_tap_ms = ms - 100000
    r._last_save_ms = ms - 1000000


def _idle(r, times=4):
    for _ in range(times):
        _quiet(r)
        r.idle()


def _check_seqs(r, first, last):
    # Streams the log: exactly the records first..last, in order.
    want = first
    for rec in r.log.records(1):
        check(rig.seq(rec) == want, "record %d where %d was expected" % (rig.seq(rec), want))
        want += 1
    check(want == last + 1, "log ends at %d, expected %d" % (want - 1, last))


def test_full_log_grants_free_and_never_overwrites_unacked():
    r = _reader()
    n = 0
    while not r.log.full:
        check(tap(r, card_id(1 + n % 8), 0) == codes.GRANTED)
        n += 1
        check(n <= RING * SLOTS + 1, "the log never filled")
        _idle(r, 1)  # idle cannot erase: nothing is acknowledged
    stored = r.log.last_seq
    check(stored == n - 1 and stored >= (RING - 1) * SLOTS, "stored %d of %d taps" % (stored, n))
    check(r.log.forced_erases == 0)
    # The tap that found the log full was granted, unrecorded and not charged.
    check(r.unlogged == 1)
    last = r.board._out.lines[-1].decode().strip()
    check(last.startswith("RIDE ") and last.endswith(" U"), "the unrecorded ride is reported: %s" % last)
    spent = r.fees.spent(101)
    for i in range(5):
        check(tap(r, card_id(1), 0) == codes.GRANTED, "a resident is never stranded")
    check(r.fees.spent(101) == spent, "unrecorded rides are free")
    check(tap(r, card_id(99), 0) == codes.UNKNOWN_CARD)
    check(r.unlogged == 6)
    check(r.log.last_seq == stored)
    check('"log_full": true' in r.status() and '"unlogged_rides": 6' in r.status())
    # Nothing unacknowledged was overwritten.
    _check_seqs(r, 1, stored)
    # An acknowledgement frees sectors; idle erases; logging resumes in order.
    check(r.command("ACK %d" % (SLOTS * 2)) == "OK acked %d" % (SLOTS * 2))
    _idle(r)
    check(not r.log.full, "acks should end full mode")
    tap(r, card_id(2), 0)
    check(r.log.last_seq == stored + 1)
    # Acked records are reclaimed from the oldest sector; the rest remain.
    first = rig.seq(next(r.log.records(1)))
    check(first <= SLOTS * 2 + 1)
    _check_seqs(r, first, stored + 1)
    rig.shutdown(r)


def test_erases_happen_while_idle_not_on_taps():
    r = _reader()
    for rnd in range(6):
        for i in range(SLOTS):
            tap(r, card_id(1 + i % 8), 0)
        check(r.command("ACK %d" % r.log.last_seq).startswith("OK"))
        _idle(r)
    check(r.log.last_seq == 6 * SLOTS)
    check(r.log.erases >= 3, "the ring wrapped: sectors were erased (%d)" % r.log.erases)
    check(r.log.forced_erases == 0, "no tap waited for an erase")
    # Each tap programmed exactly one record: 32 bytes.
    nor = r.board.nor
    before, erased = nor.programmed, nor.erased
    tap(r, card_id(3), 0)
    check(nor.programmed - before == SLOT and nor.erased == erased)
    rig.shutdown(r)


def test_forced_erase_when_idle_fell_behind():
    # Acks arrive but the reader is never idle: the tap itself erases the next
    # (fully acknowledged) sector rather than refusing to log.
    r = _reader()
    for i in range(RING * SLOTS + 10):
        tap(r, card_id(1 + i % 8), 0)
        if i % 64 == 63:
            r.command("ACK %d" % r.log.last_seq)
            r.fees.save(r.log.last_seq)
            r.log.reclaim_limit = r.log.last_seq
    check(not r.log.full and r.log.forced_erases >= 1)
    check(r.log.last_seq == RING * SLOTS + 10)
    rig.shutdown(r)


def test_ack_journal_survives_reboot_and_switches_sectors():
    r = _reader()
    for i in range(600):
        tap(r, card_id(1 + i % 8), 0)
        check(r.command("ACK %d" % r.log.last_seq).startswith("OK"))
        if i % 100 == 0:
            _idle(r)
    check(r.log._jsec == 1, "600 acks fill journal sector 0 and move to 1")
    acked = r.log.acked
    rig.shutdown(r)
    r = None  # one reader in the heap at a time, as on the board
    r = rig.boot("r")
    check(r.log.acked == acked and r.log.last_seq == 600)
    # Acks never go backwards; an ack beyond the log is refused, not fatal.
    check(r.command("ACK 5") == "OK acked %d" % acked)
    reply = r.command("ACK 999999")
    check(reply.startswith("ERR ack 999999 is beyond"), reply)
    check(r.command("ACK -3").startswith("ERR usage"))
    check(r.command("ACK x").startswith("ERR usage: ACK"))
    check(r.log.acked == acked)
    rig.shutdown(r)


def test_torn_tail_is_skipped_at_boot():
    r = _reader()
    for i in range(10):
        tap(r, card_id(1 + i % 8), 0)
    head, slot = r.log.head, r.log.slot
    rig.shutdown(r)
    r = None
    # A record half-programmed when power failed: its first 16 bytes only.
    nor = NorFlash(rig.path("r-log.img"))
    torn = bytearray(32)
    for i in range(32):
        torn[i] = 0xFF
    torn[0:4] = b"\x00\x00\x00\x0b"
    torn[4:16] = b"\x05\x60\x5e\x00\x00\x00\x00\x0c\x12\x34\x56\x78"
    nor.writeblocks(head + JOURNAL, torn, slot * SLOT)
    nor.close()
    r = rig.boot("r")
    check(r.log.last_seq == 10, "the torn record is not a ride")
    tap(r, card_id(1), 0)
    _check_seqs(r, 1, 11)
    # The new record went to a clean slot, not over the torn one.
    check(r.log.slot == slot + 2)
    rig.shutdown(r)


def test_nor_rules_are_enforced_by_the_emulator():
    rig.make_images("n", log_size=LOG_SIZE)
    nor = NorFlash(rig.path("n-log.img"))
    nor.writeblocks(3, b"\x0f" * 32, 64)
    nor.writeblocks(3, b"\x05" * 32, 64)  # 1 -> 0 only: allowed
    msg = rig.expect_error(nor.writeblocks, 3, b"\xf0" * 32, 64)
    check("set bits" in msg, msg)
    nor.ioctl(6, 3)  # a whole-sector erase
    nor.writeblocks(3, b"\xf0" * 32, 64)
    check(nor.erased == 1 and nor.programmed == 96)
    nor.close()


def test_log_too_small_is_refused():
    rig.make_images("s", log_size=(JOURNAL + 3) * SECTOR)
    nor = NorFlash(rig.path("s-log.img"))
    check("too small" in rig.expect_error(RideLog, nor))
    nor.close()
