# The reader end to end on the host board: decisions, fees, the log.
import rig
from rig import check, tap, card_id, record
from liftcard import codes

HOME5 = 0b0100001  # ground + floor 5


def _cards():
    return [
        record(card_id(1), 101, HOME5),  # resident, floor 5
        record(card_id(2), 102, 0b0001001),  # resident, floor 3
        record(card_id(3), 103, HOME5, status=1),  # suspended
        record(card_id(4), 104, HOME5, status=2),  # lost
        record(card_id(5), 105, HOME5, status=3),  # expired status
        record(card_id(6), 106, HOME5, klass=1),  # exempt
        record(card_id(7), 107, HOME5, until=10),  # valid_until long past
        record(card_id(8), 101, HOME5, klass=3),  # visitor of household 101
        record(card_id(9), 109, 0b0100000),  # floor 5 only, no ground
    ]


def test_decisions_and_fees():
    r = rig.configured_reader(cards=_cards())
    check(r.wl.count == 9 and r.wl.loaded)
    check(tap(r, card_id(1), 0) == codes.GRANTED)
    check(tap(r, card_id(2), 0) == codes.GRANTED)
    check(tap(r, card_id(3), 0) == codes.SUSPENDED)
    check(tap(r, card_id(4), 0) == codes.LOST)
    check(tap(r, card_id(5), 0) == codes.EXPIRED)
    check(tap(r, card_id(6), 0) == codes.GRANTED)
    check(tap(r, card_id(7), 0) == codes.EXPIRED)
    check(tap(r, card_id(99), 0) == codes.UNKNOWN_CARD)
    check(tap(r, card_id(9), 3) == codes.NO_FLOOR)  # boarding at 3: ground not allowed
    check(tap(r, card_id(1), 0) == codes.GRANTED)  # debounced re-tap
    check(tap(r, card_id(8), 5) == codes.GRANTED)  # visitor riding down from 5
    recs = rig.all_records(r)
    check(len(recs) == 11, "every tap is logged: %d" % len(recs))
    seqs = [rig.seq(x) for x in recs]
    check(seqs == list(range(1, 12)), seqs)
    fees = [rig.fee(x) for x in recs]
    # floor 5 = 40 fen, floor 3 = 20, exempt free, re-tap free, down to ground free
    check(fees == [40, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0], fees)
    check(recs[9][27] & codes.F_DEBOUNCED)
    check(recs[5][27] & codes.F_FREE_CLASS)
    check(recs[0][23] == 5 and recs[1][23] == 3 and recs[10][23] == 0)
    check(r.fees.spent(101) == 40)
    out = r.board._out.text()
    check("RELAY ON" in out and "LED RED" in out)


def test_monthly_cap_and_restart_keeps_spend():
    cfg = dict(rig.CONFIG)
    cfg["tariff"] = dict(cfg["tariff"], monthly_cap_fen=100, debounce_s=0)
    r = rig.configured_reader(cards=_cards(), cfg=cfg)
    for _ in range(4):
        tap(r, card_id(1), 0)
    recs = rig.all_records(r)
    charged = [rig.fee(x) for x in recs]
    check(charged == [40, 40, 20, 0], charged)
    check(recs[2][27] & codes.F_CAPPED and recs[3][27] & codes.F_CAPPED)
    # The visitor card bills the same household: already capped.
    tap(r, card_id(8), 0)
    check(rig.fee(rig.all_records(r)[-1]) == 0)
    # Power-ons, each in a fresh process as on the board.
    rig.shutdown(r)
    rig.child("test_reader", "cap_rebuilt_from_log_then_checkpoint")
    rig.child("test_reader", "cap_from_checkpoint_and_later_rides")


def cap_rebuilt_from_log_then_checkpoint():
    # Reboot without a checkpoint: the spend is rebuilt from the log.
    r = rig.boot()
    check(r.fees.spent(101) == 100, r.fees.spent(101))
    r.fees.save(r.log.last_seq)
    tap(r, card_id(2), 0)
    rig.shutdown(r)


def cap_from_checkpoint_and_later_rides():
    # With a checkpoint and later rides, both are combined.
    r = rig.boot()
    check(r.fees.spent(101) == 100 and r.fees.spent(102) == 20)
    rig.shutdown(r)


def test_sequence_survives_reboots():
    r = rig.configured_reader(cards=_cards())
    for _ in range(5):
        tap(r, card_id(2), 0)
    rig.shutdown(r)
    r = None  # one reader in the heap at a time, as on the board
    r = rig.boot()
    check(r.log.next_seq == 6)
    tap(r, card_id(2), 0)
    seqs = [rig.seq(x) for x in rig.all_records(r)]
    check(seqs == [1, 2, 3, 4, 5, 6], seqs)
    check(r.boot_count == 2)


def test_unsynced_clock_is_flagged():
    rig.make_images()
    r = rig.boot()
    r.command("CONFIG " + rig.write_config())
    r.command("WL " + rig.write_whitelist(rig.path("wl.bin"), _cards(), 1))
    tap(r, card_id(1), 0)
    r.command("TIME 91000000")
    tap(r, card_id(2), 0)
    recs = rig.all_records(r)
    check(recs[0][27] & codes.F_CLOCK_UNSYNCED)
    check(not recs[1][27] & codes.F_CLOCK_UNSYNCED)


def test_legacy_uid_only_when_enabled():
    r = rig.configured_reader(cards=_cards() + [record(bytes(4) + b"\x04\xa2\x1b\x9c", 120, HOME5)])
    b = r.board
    b.card[:] = bytes(4) + b"\x04\xa2\x1b\x9c"
    check(r.tap(codes.TAP_LEGACY_UID, 0) == codes.LEGACY_DISABLED)
    cfg = dict(rig.CONFIG, legacy_uid=True)
    check(r.command("CONFIG " + rig.write_config(cfg)).startswith("OK"))
    b.card[:] = bytes(4) + b"\x04\xa2\x1b\x9c"
    check(r.tap(codes.TAP_LEGACY_UID, 0) == codes.GRANTED)
    recs = rig.all_records(r)
    check(recs[0][27] & codes.F_LEGACY_UID and recs[1][27] & codes.F_LEGACY_UID)


def test_failed_credential_logged_with_reason():
    r = rig.configured_reader(cards=_cards())
    check(r.tap(codes.TAP_FAILED, 0, codes.AUTH_FAILED) == codes.AUTH_FAILED)
    rec = rig.all_records(r)[0]
    check(rec[26] == codes.AUTH_FAILED and rig.fee(rec) == 0)


def test_status_reports_without_secrets():
    r = rig.configured_reader(cards=_cards())
    s = r.status()
    check('"whitelist_version": 1' in s and '"cards": 9' in s, s)
    check(rig.KEY_HEX not in s and rig.KEY_HEX.upper() not in s)


def test_host_line_protocol_taps_and_commands():
    r = rig.configured_reader(cards=_cards())
    b = r.board
    for line in (b"TAP %s 0\n" % "".join("%02x" % x for x in card_id(1)).encode(), b"STATUS\n"):
        b._line[: len(line)] = line
        b._n = len(line)
        ev = b._take_line()
        if ev == 1:
            r.tap(b.tap_kind, b.tap_floor, b.tap_failure)
        else:
            b.reply(r.command(b.cmd))
    out = b._out.text()
    check("RIDE 00000001" in out and "STATUS {" in out, out)


def _local_epoch(day, hour):
    # Liftcard epoch seconds at `hour` local time (UTC+8) on day `day` since 2024-01-01.
    return day * 86400 + (hour - 8) * 3600


def test_time_sync_into_another_month_rebuilds_that_months_spend():
    # Capped in March; the reader reboots with its clock guessing November
    # (unsynced: the March rides do not count there); the gateway then sets
    # March again: the cap must still hold, not start from zero.
    cfg = dict(rig.CONFIG)
    cfg["tariff"] = dict(cfg["tariff"], monthly_cap_fen=120)
    cid = card_id(1)
    cards = [record(cid, 777, HOME5)]
    march2 = _local_epoch(791, 10)  # 2026-03-02 10:00 local
    r = rig.configured_reader(cfg=cfg, cards=cards, board_cls=rig.ManualClockBoard, keep_output=False)
    b = r.board
    b.now_s = march2
    check(r.command("TIME %d" % march2).startswith("OK"))
    for i in range(3):
        b.now_s = march2 + 60 * i
        b.now_ms += 60000
        check(tap(r, cid, 0) == codes.GRANTED and rig.fee(r.rec) == 40)
    check(r.fees.spent(777) == 120)
    rig.shutdown(r)
    r = None
    r = rig.boot("r", keep_output=False, board_cls=rig.ManualClockBoard)
    b = r.board
    check(not r.clock.synced and r.fees.spent(777) == 0, "November: no March spend")
    b.now_s = march2 + 86400
    check(r.command("TIME %d" % b.now_s).startswith("OK"))
    check(r.fees.spent(777) == 120, "March spend rebuilt from the log: %d" % r.fees.spent(777))
    b.now_ms += 60000
    check(tap(r, cid, 0) == codes.GRANTED)
    check(rig.fee(r.rec) == 0 and r.rec[27] & codes.F_CAPPED, "capped, not charged again")
    rig.shutdown(r)


def test_unconfigured_reader_logs_its_denials():
    rig.make_images("u")
    r = rig.boot("u")
    check(r.cfg is None)
    check(tap(r, card_id(1), 0) == codes.NO_WHITELIST)
    recs = rig.all_records(r)
    check(len(recs) == 1 and recs[0][26] == codes.NO_WHITELIST and rig.fee(recs[0]) == 0)
    out = r.board._out.text()
    check("RIDE 00000001" in out and "LED RED" in out and "RELAY ON" not in out, out)
    rig.shutdown(r)
