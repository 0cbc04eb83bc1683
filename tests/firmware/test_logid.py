# The log's identity (docs/formats.md, "Log identity"): rides logged as one
# reader never go out as another's after a reconfigure, through CONFIG or
# through a config.json written while the reader was stopped; a power cut at
# any write of an identity change leaves the log owned by the config that
# boots, with no ride of the old identity under the new one.
import json

import rig
from rig import check, tap, card_id, record
from liftcard import logid
from board_host import Board
from hostflash import PowerLoss, Rail
from liftcard.reader import Reader

NEW = dict(rig.CONFIG, reader_id=10)
REFUSED = "ERR config: reader 1017 still holds 2 rides not acknowledged: harvest them first"


def _reader(prefix="r"):
    r = rig.configured_reader(prefix, cards=[record(card_id(1), 101, 0b1111111)], keep_output=False)
    tap(r, card_id(1), 3)
    tap(r, card_id(2), 3)
    check(r.log.last_seq == 2 and r.log.acked == 0, "two rides, none acknowledged")
    return r


def _status(r):
    return json.loads(r.status()[len("STATUS ") :])


def _flash_config():
    with open("config.json") as f:
        return json.load(f)


def test_config_of_another_reader_is_refused_while_rides_are_unacknowledged():
    r = _reader()
    new = rig.write_config(NEW, rig.path("new.json"))
    check(r.command("CONFIG " + new) == REFUSED, r.command("CONFIG " + new))
    check(_flash_config()["reader_id"] == 1017 and r.cfg["reader_id"] == 1017, "nothing changed")
    check(_status(r)["backlog"] == 2 and _status(r)["foreign_rides"] == 0)
    # Another building or another key is another identity too.
    for other in (dict(rig.CONFIG, building_id=13), dict(rig.CONFIG, key="11" * 32)):
        reply = r.command("CONFIG " + rig.write_config(other, rig.path("other.json")))
        check(reply == REFUSED, reply)
    # The same reader with another tariff is no change of identity.
    tariff = dict(rig.CONFIG, relay_ms=3000)
    check(r.command("CONFIG " + rig.write_config(tariff, rig.path("t.json"))).startswith("OK"))
    # Acknowledged, the log is free to change hands; the new identity starts after them.
    check(r.command("ACK 2") == "OK acked 2")
    check(r.command("CONFIG " + new) == "OK config reader 10 building 12")
    held = logid.read()
    check(logid.reader_of(held) == 10 and logid.from_seq(held) == 3, "identity recorded from seq 3")
    check(r.log_from == 3 and _status(r)["log_reader_id"] == 10)
    rig.shutdown(r)


def test_a_config_written_behind_the_readers_back_holds_the_rides():
    r = _reader()
    rig.shutdown(r)
    # configure over the raw REPL while the reader is stopped: config.json alone changes.
    r = rig.boot("r", keep_output=False)
    rig.copy_file(rig.write_config(NEW, rig.path("new.json")), "config.json")
    rig.shutdown(r)
    r = rig.boot("r", keep_output=False)
    st = _status(r)
    check(st["reader_id"] == 10 and st["foreign_rides"] == 2 and st["log_reader_id"] == 1017, st)
    check(st["error"] == "reader 1017 still holds 2 rides not acknowledged: harvest them first", st["error"])
    check(r.uplink is None)
    # Taps go on (the resident is not stranded) but nothing is logged under reader 10.
    tap(r, card_id(1), 0)
    check(r.log.last_seq == 2 and r.log.acked == 0, "no ride logged, none acknowledged")
    check(r.command("ACK 2").startswith("ERR ack: reader 1017 still holds 2 rides"))
    check(r.log.acked == 0)
    # A third identity is refused too; the rides' own is taken back.
    third = rig.write_config(dict(rig.CONFIG, reader_id=11), rig.path("third.json"))
    check(r.command("CONFIG " + third) == REFUSED)
    back = rig.write_config(rig.CONFIG, rig.path("back.json"))
    check(r.command("CONFIG " + back) == "OK config reader 1017 building 12")
    st = _status(r)
    check(st["foreign_rides"] == 0 and st["error"] is None and st["backlog"] == 2, st)
    rig.shutdown(r)


def test_power_cut_at_every_write_of_an_identity_change():
    r = _reader("base")
    check(r.command("ACK 2") == "OK acked 2")
    rig.write_config(NEW, rig.path("new.json"))
    rig.shutdown(r)
    # How many writes the change takes, then a cut at each of them.
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rail = rig.arm(r)
    check(r.command("CONFIG " + rig.path("new.json")).startswith("OK"))
    total = rail.writes
    rig.shutdown(r)
    check(total >= 2, "config and identity: %d writes" % total)
    seen = set()
    for cut in range(total + 1):
        rig.child("test_logid", "cut_change", cut)
        rig.child("test_logid", "verify_change")
        seen.add(rig.load_json("owner.json"))
    check(seen == {1017, 10}, "both sides of the change were cut: %r" % seen)
    print("cut at each of", total, "writes")


def cut_change(cut):
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rig.arm(r, int(cut))
    try:
        r.command("CONFIG " + rig.path("new.json"))
    except PowerLoss:
        pass
    rig.shutdown(r)


def verify_change():
    r = rig.boot("run", keep_output=False)
    rid = r.cfg["reader_id"]
    held = logid.read()
    check(held is not None and logid.reader_of(held) == rid, "the log belongs to the config that booted")
    check(r.foreign == 0 and r.log.backlog == 0)
    check(logid.from_seq(held) == (3 if rid == 10 else 1), "from seq %d" % logid.from_seq(held))
    check(r.log_from == logid.from_seq(held))
    rig.save_json("owner.json", rid)
    rig.shutdown(r)


def test_power_cut_at_every_write_of_a_boot_that_takes_the_new_identity():
    # config.json of reader 10 written behind the reader's back over an
    # acknowledged log: the boot records the new identity; cut at each write.
    r = _reader("base")
    check(r.command("ACK 2") == "OK acked 2")
    rig.copy_file(rig.write_config(NEW, rig.path("new.json")), "config.json")
    rig.shutdown(r)
    seen = set()
    cut = 0
    while True:
        rig.child("test_logid", "cut_boot", cut)
        came = rig.load_json("came.json")
        rig.child("test_logid", "verify_change")
        seen.add(rig.load_json("owner.json"))
        if not came:
            break
        cut += 1
    check(cut >= 3, "boot count and identity: only %d writes" % cut)
    check(seen == {10}, "the config that boots owns the log: %r" % seen)
    print("cut at each of", cut, "writes")


def cut_boot(cut):
    rig.snapshot("base", "run")
    rail = Rail(int(cut))
    r = Reader(Board(rig.path("run-fs.img"), rig.path("run-log.img"), stdin=None, stdout=rig.Sink(False), rail=rail))
    came = False
    try:
        r.boot()
    except PowerLoss:
        came = True
    rig.shutdown(r)
    rig.save_json("came.json", came)


def test_power_cut_at_the_clearing_ack_keeps_the_rides_held_or_frees_them_whole():
    # harvest --clear writes one ack journal entry with the reader stopped
    # (the firmware's own RideLog.ack). Cut at it: the rides stay held for
    # another harvest; past it: the reader is reader 10 from seq 3.
    r = _reader("base")
    rig.copy_file(rig.write_config(NEW, rig.path("new.json")), "config.json")
    rig.shutdown(r)
    for cut, held in ((0, 2), (1, 0)):
        rig.child("test_logid", "cut_clear", cut)
        rig.child("test_logid", "verify_clear", held)


def cut_clear(cut):
    from liftcard.ridelog import RideLog

    rig.snapshot("base", "run")
    rail = Rail(int(cut))
    b = Board(rig.path("run-fs.img"), rig.path("run-log.img"), stdin=None, stdout=rig.Sink(False), rail=rail)
    b.mount()
    log = RideLog(b.log_device())
    log.mount()
    check(log.last_seq == 2 and log.acked == 0)
    try:
        log.ack(log.last_seq)
    except PowerLoss:
        pass
    b.nor.rail.dead = True


def verify_clear(held):
    r = rig.boot("run", keep_output=False)
    st = _status(r)
    check(st["foreign_rides"] == int(held), st)
    if int(held):
        check(st["reader_id"] == 10 and st["log_reader_id"] == 1017 and r.log.acked == 0, st)
    else:
        check(st["log_reader_id"] == 10 and r.log_from == 3 and r.log.acked == 2, st)
        tap(r, card_id(1), 0)
        check(r.log.last_seq == 3, "reader 10 logs from seq 3")
    rig.shutdown(r)
