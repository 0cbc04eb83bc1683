# The shared vectors (tests/vectors/*.jsonl, written from the CPython codecs)
# checked against the firmware: CRC, MAC, card and ride records, config rules,
# whitelists, deltas and the fee rules. What the gateway builds, the reader
# reads the same way, and the reverse.
import gc

import rig
from rig import check, unhex, vector_cases, vector_meta
from liftcard import ridelog
from liftcard import config as configmod
from liftcard.crc import crc16
from liftcard.mac import Mac
from liftcard.whitelist import _check_record


def test_crc16_vectors():
    n = 0
    for _, v in vector_cases("crc16.jsonl"):
        data = unhex(v["data"])
        check(crc16(data, 0, len(data)) == v["crc"], "crc of %s" % v["data"])
        n += 1
    check(n >= 5)


def test_mac16_vectors():
    n = 0
    for _, v in vector_cases("mac16.jsonl"):
        got = Mac(unhex(v["key"])).of(unhex(v["msg"]))
        check(rig.hexs(got) == v["mac"], "mac of %s" % v["msg"])
        n += 1
    check(n >= 5)


def _card_bytes(c):
    return rig.record(unhex(c["card_id"]), c["household"], c["floors"], c["status"], c["klass"], c["valid_until"])


def test_card_record_vectors():
    for group, v in vector_cases("card_record.jsonl"):
        b = unhex(v["hex"])
        if group == "valid":
            check(_card_bytes(v["fields"]) == b, "encoding of %s" % v["hex"])
            _check_record(b, 0)
        elif v["reason"] == "field":
            check("invalid" in rig.expect_error(_check_record, b, 0), v["why"])
        # "size" cases: the firmware never sees a lone record; a list or delta
        # of the wrong size is refused whole (whitelist and delta vectors).


def test_ride_record_vectors():
    rec = bytearray(32)
    empty = unhex(vector_meta("ride_record.jsonl")["empty"])
    check(not ridelog.valid(empty), "an erased slot is not a record")
    for group, v in vector_cases("ride_record.jsonl"):
        b = unhex(v["hex"])
        if group == "valid":
            f = v["fields"]
            ridelog.pack(
                rec,
                f["time"],
                f["uptime"],
                unhex(f["card_id"]),
                f["household"],
                f["floor"],
                f["fee"],
                f["result"],
                f["flags"],
                f["boot"],
            )
            ridelog.seal(rec, f["seq"])
            check(bytes(rec) == b, "record %s encodes as %s" % (v["hex"], rig.hexs(rec)))
            check(ridelog.valid(b) and ridelog.seq_of(b) == f["seq"])
        elif len(b) == 32:
            check(not ridelog.valid(b), v["why"])
        # Other sizes: the log only ever reads whole 32-byte slots.


def test_config_vectors():
    n = 0
    for group, v in vector_cases("config.jsonl"):
        if group == "valid":
            cfg = configmod.validate(v)
            check(rig.hexs(cfg["key"]) == v["key"].lower())
            check(cfg["tariff"]["fee_fen"] == v["tariff"]["fee_fen"])
        else:
            msg = rig.expect_error(configmod.validate, v["config"])
            check(v["key"] in msg, "refusal %r should name %s" % (msg, v["key"]))
            key = v["config"].get("key") if type(v["config"]) is dict else None
            if type(key) is str and len(key) > 8:
                check(key not in msg, "the key leaked into %r" % msg)
            up = v["config"].get("uplink") if type(v["config"]) is dict else None
            pw = up.get("password") if type(up) is dict else None
            if type(pw) is str and len(pw) > 3:
                check(pw not in msg, "the uplink password leaked into %r" % msg)
            w = v["config"].get("wifi") if type(v["config"]) is dict else None
            pw = w.get("password") if type(w) is dict else None
            if type(pw) is str and len(pw) > 3:
                check(pw not in msg, "the Wi-Fi password leaked into %r" % msg)
        n += 1
    check(n > 50)


def _vector_config():
    # A reader configured as the vectors' reader (its id, building and key).
    meta = vector_meta("whitelist.jsonl")
    cfg = dict(rig.CONFIG)
    cfg["reader_id"] = meta["reader_id"]
    cfg["building_id"] = meta["building_id"]
    cfg["key"] = meta["key"]
    return cfg, unhex(meta["key"])


def _write(name, hexdata):
    fname = rig.path(name)
    with open(fname, "wb") as f:
        f.write(unhex(hexdata))
    return fname


def _cards_match(r, cards):
    for c in cards:
        cid = unhex(c["card_id"])
        check(r.wl.lookup(cid), "card %s missing" % c["card_id"])
        check(bytes(r.wl.rec) == _card_bytes(c), "card %s differs" % c["card_id"])


def _fresh_reader(cfg, key, held_version):
    # A reader holding a valid list of the given version (or none).
    r = rig.configured_reader(cfg=cfg, keep_output=False)
    if held_version is not None:
        held = rig.write_whitelist(
            rig.path("held.bin"),
            [rig.record(rig.card_id(1), 7)],
            held_version,
            cfg["reader_id"],
            cfg["building_id"],
            key,
        )
        check(r.command("WL " + held).startswith("OK"))
    return r


def _state(r):
    return (r.wl.loaded, r.wl.version, r.wl.count, r.wl.lookup(rig.card_id(1)))


def test_whitelist_vectors():
    cfg, key = _vector_config()
    r = rig.configured_reader(cfg=cfg, keep_output=False)
    n = 0
    for _, v in vector_cases("whitelist.jsonl", "valid"):
        reply = r.command("WL " + _write("wl.bin", v["hex"]))
        check(reply == "OK whitelist v%d %d cards" % (v["version"], len(v["cards"])), reply)
        _cards_match(r, v["cards"])
        n += 1
    check(n >= 2)
    rig.shutdown(r)
    r = None
    gc.collect()
    for _, v in vector_cases("whitelist.jsonl", "invalid"):
        r = _fresh_reader(cfg, key, v["held_version"])
        before = _state(r)
        reply = r.command("WL " + _write("bad.bin", v["hex"]))
        check(reply.startswith("ERR ") and "\n" not in reply, "%s: %s" % (v["why"], reply))
        check(_state(r) == before, "%s: state changed" % v["why"])
        rig.shutdown(r)
        r = None
        gc.collect()


def test_delta_vectors():
    cfg, key = _vector_config()
    meta = vector_meta("delta.jsonl")
    base = _write("base.bin", meta["base"]["hex"])
    valid = [v for _, v in vector_cases("delta.jsonl", "valid")]
    r = rig.configured_reader(cfg=cfg, keep_output=False, cards=base)
    check(r.wl.version == meta["base"]["version"])
    for v in valid:
        check(r.wl.version == v["held_version"])
        reply = r.command("DELTA " + _write("d.bin", v["hex"]))
        check(reply == "OK whitelist v%d" % v["new_version"], reply)
        _cards_match(r, v["cards_after"])
    rig.shutdown(r)
    r = None
    gc.collect()
    for _, v in vector_cases("delta.jsonl", "invalid"):
        r = rig.configured_reader(cfg=cfg, keep_output=False, cards=base)
        for d in valid:
            if r.wl.version < v["held_version"] and d["held_version"] == r.wl.version:
                check(r.command("DELTA " + _write("d.bin", d["hex"])).startswith("OK"))
        check(r.wl.version == v["held_version"])
        before = _state(r)
        reply = r.command("DELTA " + _write("bad.bin", v["hex"]))
        check(reply.startswith("ERR"), "%s: %s" % (v["why"], reply))
        check(_state(r) == before, "%s: state changed" % v["why"])
        rig.shutdown(r)
        r = None
        gc.collect()


def test_fee_vectors():
    # Each scenario: a reader with the scenario's config and cards, its clock
    # set tap by tap; every record must carry the expected decision.
    n = 0
    for _, s in vector_cases("fees.jsonl"):
        cfg = s["config"]
        key = unhex(cfg["key"])
        cards = [_card_bytes(c) for c in s["cards"]]
        taps = s["taps"]
        name = s["name"]
        s = None
        r = rig.configured_reader(cfg=cfg, cards=cards, keep_output=False, board_cls=rig.ManualClockBoard, key=key)
        cards = None
        check(r.command("TIME 0").startswith("OK"))
        b = r.board
        for i, t in enumerate(taps):
            b.now_s = t["epoch_s"]
            b.now_ms = t["mono_ms"]
            rig.tap(r, unhex(t["card_id"]), t["at"])
            rec = r.rec
            e = t["expect"]
            got = {
                "result": rec[26],
                "fee": rig.fee(rec),
                "flags": rec[27],
                "floor": rec[23],
                "household": (rec[20] << 16) | (rec[21] << 8) | rec[22],
            }
            check(got == e, "%s tap %d (%s): expected %r, got %r" % (name, i, t["note"], e, got))
            check(rig.seq(rec) == r.log.last_seq, "every tap is logged")
        rig.shutdown(r)
        r = taps = None
        gc.collect()
        n += 1
    check(n >= 10)
