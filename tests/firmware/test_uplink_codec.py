# The link payloads (docs/uplink.md) against the shared vectors
# (tests/vectors/uplink.jsonl, written from the gateway's codec): the reader
# encodes RIDES and STATUS byte for byte as the gateway expects, and verifies,
# decrypts and decodes what the gateway sends down, refusing every forged,
# replayed, misdirected or malformed message with the gateway's reason.
import gc

from rig import check, hexs, unhex, vector_cases, vector_meta
from liftcard import uplinkcodec as uc
from liftcard.uplinkcodec import Codec, UplinkError

_NAME = "uplink.jsonl"
_U32 = 0xFFFFFFFF


def _codec():
    m = vector_meta(_NAME)
    return Codec(unhex(m["key"]), m["reader_id"], m["building_id"])


def _set_up_counter(c, counter):
    # The next encode uses (boot << 32) | (msgno + 1).
    c.boot = counter >> 32
    c.msgno = (counter & _U32) - 1


def _set_down_last(c, last):
    c.last_hi = last >> 32
    c.last_lo = last & _U32


def test_key_derivation():
    m = vector_meta(_NAME)
    enc, mac = uc.derive(unhex(m["key"]))
    check(hexs(enc) == m["enc_key"], "enc key")
    check(hexs(mac) == m["mac_key"], "mac key")
    check(hexs(uc.MAGIC) == m["magic"] and uc.MAX_RIDES == m["max_rides"])


def test_encode_up_vectors():
    c = _codec()
    n = 0
    for _, v in vector_cases(_NAME, "valid"):
        if v["direction"] != "up":
            continue
        _set_up_counter(c, v["counter"])
        f = v["fields"]
        if v["kind"] == "rides":
            got = c.rides(unhex(h) for h in f["records"])
        elif v["kind"] == "sunctr_up":
            got = c.sunctr((unhex(e[0]), e[1]) for e in f["entries"])
        else:
            check(v["kind"] == "status", v["kind"])
            if "wl_capacity" not in f:
                continue  # a 28- or 36-byte heartbeat of older firmware: the gateway still reads it
            got = c.status(
                f["uptime"],
                f["free_heap"],
                f["backlog"],
                f["wl_version"],
                f["unrecorded"],
                f["last_error"],
                f["flags"],
                f["boot"],
                f["time"],
                f["acked_seq"],
                f["oldest_seq"],
                f["rssi"],
                f["fw_version"][0],
                f["fw_version"][1],
                f["fw_version"][2],
                f["wl_capacity"],
            )
        check(bytes(got) == unhex(v["hex"]), "encoding of: " + v["why"])
        v = f = got = None
        gc.collect()
        n += 1
    check(n >= 9, "up vectors: %d" % n)


def test_up_counter_grows():
    c = _codec()
    c.boot = 5
    a = bytes(c.rides([]))
    b = bytes(c.rides([]))
    check(a[16:24] == bytes((0, 0, 0, 5, 0, 0, 0, 1)) and b[16:24] == bytes((0, 0, 0, 5, 0, 0, 0, 2)))
    check(a[24:] != b[24:], "a new counter gives a new MAC")
    c.msgno = _U32
    check(_reason(c.rides, []) == "field", "no counter past 2**32 messages in one boot")


def test_too_many_rides_refused():
    c = _codec()
    rec = bytes(32)
    check(_reason(c.rides, [rec] * 33) == "size")
    check(_reason(c.rides, [rec[:31]]) == "size")
    check(len(c.rides([rec] * 32)) == 24 + 32 * 32 + 16)


def test_sunctr_bad_sizes_refused():
    c = _codec()
    card = bytes(range(8))
    check(_reason(c.sunctr, []) == "size", "no entry")
    check(_reason(c.sunctr, [(card, 1)] * 65) == "size", "65 entries")
    check(_reason(c.sunctr, [(card, 0x1000000)]) == "field", "counter above u24")
    check(_reason(c.sunctr, [(card[:7], 1)]) == "field", "card id of 7 bytes")
    check(len(c.sunctr([(card, 0xFFFFFF)] * 64)) == 24 + 64 * 11 + 16)


def test_card_ids_not_in_clear():
    c = _codec()
    for _, v in vector_cases(_NAME, "valid"):
        if v["kind"] != "rides":
            continue
        _set_up_counter(c, v["counter"])
        msg = bytes(c.rides(unhex(h) for h in v["fields"]["records"]))
        for h in v["fields"]["records"]:
            cid = unhex(h)[12:20]
            if cid != bytes(8) and cid != b"\xff" * 8:
                check(msg.find(cid) < 0, "card id in clear: " + v["why"])


def test_decode_down_vectors():
    c = _codec()
    n = 0
    for _, v in vector_cases(_NAME, "valid"):
        if v["direction"] != "down":
            continue
        _set_down_last(c, v["last_counter"])
        kind = c.open(unhex(v["hex"]))
        f = v["fields"]
        check(
            kind
            == {
                "ack": uc.ACK,
                "time": uc.TIME,
                "delta": uc.DELTA,
                "whitelist": uc.WHITELIST,
                "sunctr_down": uc.SUNCTR_DOWN,
                "resend": uc.RESEND,
            }[v["kind"]],
            "kind of: " + v["why"],
        )
        if kind == uc.ACK:
            check(c.seq == f["seq"], v["why"])
        elif kind == uc.TIME:
            check(c.epoch_s == f["epoch_s"], v["why"])
        elif kind == uc.RESEND:
            check(c.from_seq == f["from_seq"], v["why"])
        elif kind == uc.DELTA:
            check(bytes(c.blob) == unhex(f["blob"]), v["why"])
        elif kind == uc.SUNCTR_DOWN:
            want = b""
            for e in f["entries"]:
                want += unhex(e[0]) + bytes(((e[1] >> 16) & 0xFF, (e[1] >> 8) & 0xFF, e[1] & 0xFF))
            check(bytes(c.blob) == want, v["why"])
        else:
            check((c.version, c.total, c.offset) == (f["version"], f["total"], f["offset"]), v["why"])
            check(bytes(c.blob) == unhex(f["data"]), v["why"])
        check((c.last_hi << 32) | c.last_lo == v["counter"], "counter accepted: " + v["why"])
        # The same message again is a replay.
        check(_reason(c.open, unhex(v["hex"])) == "replay", "replay of: " + v["why"])
        v = f = None
        gc.collect()
        n += 1
    check(n >= 6, "down vectors: %d" % n)


def _reason(fn, *args):
    try:
        fn(*args)
    except UplinkError as e:
        check(str(e) == e.reason, "the message is the reason alone")
        return e.reason
    raise AssertionError("not refused")


def test_refuse_invalid_down_vectors():
    c = _codec()
    n = 0
    for _, v in vector_cases(_NAME, "invalid"):
        if v["direction"] != "down":
            continue
        last = v["last_counter"]
        _set_down_last(c, last)
        c.seq = c.epoch_s = 12345
        got = _reason(c.open, unhex(v["hex"]))
        check(got == v["reason"], "%s: got %s, want %s" % (v["why"], got, v["reason"]))
        # Refused: nothing changed.
        check((c.last_hi << 32) | c.last_lo == last and c.seq == 12345 and c.epoch_s == 12345, v["why"])
        v = None
        gc.collect()
        n += 1
    check(n >= 20, "invalid down vectors: %d" % n)


def test_oversized_down_refused():
    # Longer than any message (4148 bytes): refused before any MAC work.
    c = _codec()
    check(_reason(c.open, bytes(uc.MAX_MSG + 1)) == "size")
    check(_reason(c.open, uc.MAGIC + b"\x01" + bytes(uc.MAX_MSG - 5)) == "mac")
