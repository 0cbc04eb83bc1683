"""Vectors for the reader <-> gateway link messages (docs/uplink.md)."""

from __future__ import annotations


from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Flag, Result, Status
from liftcard_protocol.delta import build_delta
from liftcard_protocol.fields import NO_FLOOR
from liftcard_protocol.ride import EMPTY_SLOT, RideRecord
from liftcard_protocol.whitelist import build_whitelist
from .common import (
    BUILDING_ID,
    Det,
    HOME5,
    ID_BELOW_HIGH,
    ID_HIGH,
    ID_MAX,
    ID_ZERO,
    KEY,
    OTHER_KEY,
    READER_ID,
    flip,
    local_epoch,
)
from .whitelist import small_list


def gen_uplink():
    import struct

    from liftcard_protocol import link as ul

    keys = ul.LinkKeys(KEY)
    rid, bid = READER_ID, BUILDING_ID
    t = local_epoch(2026, 11, 10, 8, 0, 0)
    up = lambda boot, n: ul.counter_of(boot, n)  # noqa: E731  reader: boot count, message number
    down = lambda n: ul.counter_of(40, n)  # noqa: E731  gateway: its own boot count 40

    r = Det("uplink rides")
    batch32 = [
        RideRecord(
            1000 + i,
            t + 37 * i,
            500 + 37 * i,
            r.bits(64),
            r.bits(24),
            r.below(7),
            r.bits(16),
            r.below(13),
            r.bits(6),
            3,
        )
        for i in range(32)
    ]
    batches = [
        ("one granted ride", up(3, 1), 0, [RideRecord(1, t, 12, ID_MAX, 101, 5, 40, Result.GRANTED, 0, 3)]),
        (
            "three rides: unsynced clock, denied, debounced",
            up(3, 2),
            up(3, 1),
            [
                RideRecord(2, 17, 17, ID_BELOW_HIGH, 0, NO_FLOOR, 0, Result.UNKNOWN_CARD, Flag.CLOCK_UNSYNCED, 3),
                RideRecord(
                    3,
                    t + 60,
                    80,
                    0x0000000004A21B9C,
                    0xFFFFFF,
                    3,
                    7,
                    Result.GRANTED,
                    Flag.CLOCK_UNSYNCED | Flag.LEGACY_UID | Flag.CAPPED,
                    3,
                ),
                RideRecord(4, t + 61, 81, ID_HIGH, 102, 0, 0, Result.GRANTED, Flag.DEBOUNCED, 3),
            ],
        ),
        ("empty batch", up(3, 3), up(3, 2), []),
        ("32 rides, the most a message carries", up(4, 1), up(3, 3), batch32),
        (
            "largest counter",
            ul.U64,
            ul.U64 - 1,
            [RideRecord(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, ID_ZERO, 0, 0, 0, 0, 0, 0xFFFF)],
        ),
    ]
    valid = []
    for why, ctr, last, recs in batches:
        msg = ul.build_rides(keys, rid, bid, ctr, recs)
        assert ul.parse(keys, msg, rid, bid, ul.UP, last).rides == tuple(recs)
        valid.append(
            {
                "kind": "rides",
                "direction": "up",
                "counter": ctr,
                "last_counter": last,
                "why": why,
                "hex": msg.hex(),
                "fields": {"records": [x.pack().hex() for x in recs]},
            }
        )
    statuses = [
        ("heartbeat", up(4, 2), up(4, 1), ul.ReaderStatus(3600, 61234, 5, 7, 0, 0, ul.ST_CLOCK_SYNCED, 4, t + 3)),
        (
            "log full, unsynced, an error, large values",
            up(4, 3),
            up(4, 2),
            ul.ReaderStatus(0xFFFFFFFF, 0x80000000, 65152, 0xFFFFFFFF, 1234, 255, ul.ST_LOG_FULL, 0xFFFF, 0xFFFFFFFF),
        ),
        (
            "heartbeat with the ack mark and the oldest seq held (36 bytes)",
            up(4, 4),
            up(4, 3),
            ul.ReaderStatus(3700, 61000, 3, 7, 0, 0, ul.ST_CLOCK_SYNCED, 4, t + 103, 150, 23),
        ),
        (
            "heartbeat of a reader holding no record, seqs at their largest",
            up(4, 5),
            up(4, 4),
            ul.ReaderStatus(1, 2, 0, 7, 0, 0, 0, 4, t, 0xFFFFFFFE, 0xFFFFFFFF),
        ),
        (
            "heartbeat with the signal, the firmware version and the whitelist capacity (44 bytes)",
            up(4, 6),
            up(4, 5),
            ul.ReaderStatus(3800, 60000, 2, 7, 0, 0, ul.ST_CLOCK_SYNCED, 4, t + 203, 151, 24, -67, (0, 1, 0), 36279),
        ),
        (
            "heartbeat with the signal at its lowest, the largest version and capacity",
            up(4, 7),
            up(4, 6),
            ul.ReaderStatus(5, 6, 0, 8, 0, 0, 0, 5, t, 9, 10, -128, (255, 255, 255), 0xFFFFFFFF),
        ),
        (
            "heartbeat with the signal, the version and the capacity unknown (0)",
            up(4, 8),
            up(4, 7),
            ul.ReaderStatus(5, 6, 0, 8, 0, 0, 0, 5, t, 9, 10, 0, (0, 0, 0), 0),
        ),
    ]
    for why, ctr, last, st in statuses:
        msg = ul.build_status(keys, rid, bid, ctr, st)
        valid.append(
            {
                "kind": "status",
                "direction": "up",
                "counter": ctr,
                "last_counter": last,
                "why": why,
                "hex": msg.hex(),
                "fields": st.to_fields(),
            }
        )
    s = Det("uplink sun counters")
    sun64 = [(s.bits(64), s.bits(24)) for _ in range(ul.MAX_SUN)]
    suns = [
        ("one NTAG counter", up(4, 4), up(4, 3), [(ID_BELOW_HIGH, 7)]),
        (
            "counters 0 and 0xFFFFFF, card ids 0 and the largest",
            up(4, 5),
            up(4, 4),
            [(ID_ZERO, 0), (ID_MAX, 0xFFFFFF), (0x04A21B9C11223344, 0x010203)],
        ),
        ("64 counters, the most a message carries", up(4, 6), up(4, 5), sun64),
    ]
    for why, ctr, last, ents in suns:
        msg = ul.build_sunctr(keys, rid, bid, ctr, ents)
        assert ul.parse(keys, msg, rid, bid, ul.UP, last).sun == tuple(ents)
        valid.append(
            {
                "kind": "sunctr_up",
                "direction": "up",
                "counter": ctr,
                "last_counter": last,
                "why": why,
                "hex": msg.hex(),
                "fields": {"entries": [["%016x" % c, n] for c, n in ents]},
            }
        )

    ack = ul.build_ack(keys, rid, bid, down(1), 4)
    tim = ul.build_time(keys, rid, bid, down(2), t)
    ops = [("upsert", CardRecord(ID_BELOW_HIGH, 101, HOME5, Status.SUSPENDED)), ("remove", ID_HIGH)]
    delta_blob = build_delta(KEY, rid, bid, 5, 6, ops)
    wl_blob = build_whitelist(KEY, rid, bid, 7, sorted(small_list()), t)
    downs = [
        ("ack up to seq 4", "ack", down(1), 0, ack, {"seq": 4}),
        ("time sync", "time", down(2), down(1), tim, {"epoch_s": t}),
        (
            "ack of every seq",
            "ack",
            down(7),
            down(2),
            ul.build_ack(keys, rid, bid, down(7), 0xFFFFFFFF),
            {"seq": 0xFFFFFFFF},
        ),
        (
            "a whitelist delta 5 -> 6 (LCWD, 2 operations)",
            "delta",
            down(8),
            down(7),
            ul.build_delta(keys, rid, bid, down(8), delta_blob),
            {"blob": delta_blob.hex()},
        ),
    ]
    ctr = 9
    for off, data in ul.whitelist_chunks(wl_blob, 64):
        msg = ul.build_whitelist_chunk(keys, rid, bid, down(ctr), 7, len(wl_blob), off, data)
        downs.append(
            (
                "whitelist v7 chunk at %d of %d" % (off, len(wl_blob)),
                "whitelist",
                down(ctr),
                down(ctr - 1),
                msg,
                {"version": 7, "total": len(wl_blob), "offset": off, "data": data.hex()},
            )
        )
        ctr += 1
    downs.append(
        (
            "time sync after the gateway rebooted (its boot count 41)",
            "time",
            ul.counter_of(41, 1),
            down(ctr - 1),
            ul.build_time(keys, rid, bid, ul.counter_of(41, 1), 0xFFFFFFFF),
            {"epoch_s": 0xFFFFFFFF},
        )
    )
    for why, ctr_, ents in (
        (
            "SUN counters from another reader of the building",
            ul.counter_of(41, 2),
            [(ID_BELOW_HIGH, 8), (ID_MAX, 0xFFFFFF)],
        ),
        ("64 SUN counters (a catch-up message)", ul.counter_of(41, 3), sun64),
    ):
        downs.append(
            (
                why,
                "sunctr_down",
                ctr_,
                downs[-1][2],
                ul.build_sunctr(keys, rid, bid, ctr_, ents, down=True),
                {"entries": [["%016x" % c, n] for c, n in ents]},
            )
        )
    for why, ctr_, from_seq in (
        ("resend from seq 101 (a gateway restored from a backup)", ul.counter_of(41, 4), 101),
        ("resend from seq 1", ul.counter_of(41, 5), 1),
    ):
        downs.append(
            (why, "resend", ctr_, downs[-1][2], ul.build_resend(keys, rid, bid, ctr_, from_seq), {"from_seq": from_seq})
        )
    for why, kind, ctr_, last, msg, fields in downs:
        ul.parse(keys, msg, rid, bid, ul.DOWN, last)
        valid.append(
            {
                "kind": kind,
                "direction": "down",
                "counter": ctr_,
                "last_counter": last,
                "why": why,
                "hex": msg.hex(),
                "fields": fields,
            }
        )

    # -- invalid --
    rides3 = bytes.fromhex(valid[1]["hex"])
    rec3 = [x.pack() for x in batches[1][3]]
    c_up, l_up = up(3, 2), up(3, 1)

    def rides_raw(body, ctr=c_up):
        return ul.seal(keys, ul.RIDES, rid, bid, ctr, body)

    bad_crc = bytearray(rec3[1])
    bad_crc[31] ^= 1
    c_ack = down(1)

    def sealed(kind=ul.ACK, body=(4).to_bytes(4, "big"), ctr=c_ack, reader=rid, building=bid, **kw):
        return ul.seal(keys, kind, reader, building, ctr, body, **kw)

    st_bytes = statuses[0][3].pack()
    sun3 = ul.sun_body(suns[1][3])
    sun65 = ul.sun_body(sun64) + ul.sun_body(suns[0][3])
    first_card = ul.HEADER_LEN + 12  # the first ride's card id in the ciphertext
    inv = [
        # up: what the gateway refuses
        ("up", l_up, flip(rides3, len(rides3) - 1), "bad MAC (last MAC byte flipped)", "mac"),
        ("up", l_up, flip(rides3, first_card), "flipped ciphertext byte (a card id)", "mac"),
        ("up", l_up, flip(rides3, 23), "flipped counter byte in the header", "mac"),
        (
            "up",
            l_up,
            ul.build_rides(ul.LinkKeys(OTHER_KEY), rid, bid, c_up, batches[1][3]).hex(),
            "MAC'd with another reader's key",
            "mac",
        ),
        ("up", l_up, rides3[:-1].hex(), "truncated by one byte", "mac"),
        ("up", l_up, rides3[:39].hex(), "39 bytes: shorter than header + MAC", "size"),
        ("up", l_up, "", "empty", "size"),
        ("up", c_up, rides3.hex(), "replayed: counter equal to the last accepted", "replay"),
        ("up", up(4, 1), rides3.hex(), "replayed after the reader rebooted: older boot count", "replay"),
        (
            "up",
            l_up,
            ul.build_rides(keys, rid + 1, bid, c_up, batches[1][3]).hex(),
            "for another reader (valid MAC)",
            "reader",
        ),
        (
            "up",
            l_up,
            ul.build_rides(keys, rid, bid + 1, c_up, batches[1][3]).hex(),
            "for another building (valid MAC)",
            "building",
        ),
        ("up", l_up, (b"LCLX" + rides3[4:]).hex(), "bad magic", "magic"),
        (
            "up",
            l_up,
            ul.seal(keys, ul.RIDES, rid, bid, c_up, b"".join(rec3), magic=b"LCWD").hex(),
            "delta magic (valid MAC)",
            "magic",
        ),
        (
            "up",
            l_up,
            ul.seal(keys, ul.RIDES, rid, bid, c_up, b"".join(rec3), version=2).hex(),
            "version 2 (valid MAC)",
            "version",
        ),
        (
            "up",
            l_up,
            ul.seal(keys, ul.RIDES, rid, bid, c_up, b"".join(rec3), reserved=1).hex(),
            "nonzero reserved header field (valid MAC)",
            "field",
        ),
        ("up", l_up, sealed(ul.ACK, ctr=c_up).hex(), "a down kind (ACK) sent up (valid MAC)", "kind"),
        ("up", l_up, sealed(0x04, b"", ctr=c_up).hex(), "unknown kind 0x04 (valid MAC)", "kind"),
        (
            "up",
            l_up,
            sealed(ul.SUNCTR_DOWN, sun3, ctr=c_up).hex(),
            "a down kind (SUNCTR 0x85) sent up (valid MAC)",
            "kind",
        ),
        ("up", l_up, sealed(ul.SUNCTR_UP, b"", ctr=c_up).hex(), "SUNCTR with no entry (valid MAC)", "size"),
        (
            "up",
            l_up,
            sealed(ul.SUNCTR_UP, sun3[:-1], ctr=c_up).hex(),
            "SUNCTR body not a whole number of 11-byte entries (valid MAC)",
            "size",
        ),
        ("up", l_up, sealed(ul.SUNCTR_UP, sun65, ctr=c_up).hex(), "SUNCTR with 65 entries (valid MAC)", "size"),
        (
            "up",
            l_up,
            rides_raw(b"".join(x.pack() for x in batch32) + rec3[0]).hex(),
            "33 rides: one more than a message carries (valid MAC)",
            "size",
        ),
        (
            "up",
            l_up,
            rides_raw(b"".join(rec3)[:-1]).hex(),
            "rides body not a whole number of records (valid MAC)",
            "size",
        ),
        ("up", l_up, rides_raw(rec3[0] + bytes(bad_crc) + rec3[2]).hex(), "a ride with a bad CRC (valid MAC)", "field"),
        ("up", l_up, rides_raw(rec3[0] + EMPTY_SLOT).hex(), "an erased slot in the batch (valid MAC)", "field"),
        ("up", l_up, sealed(ul.STATUS, st_bytes[:-1], ctr=c_up).hex(), "status body of 27 bytes (valid MAC)", "size"),
        (
            "up",
            l_up,
            sealed(ul.STATUS, st_bytes + bytes(4), ctr=c_up).hex(),
            "status body of 32 bytes: an ack mark without the oldest seq (valid MAC)",
            "size",
        ),
        (
            "up",
            l_up,
            sealed(ul.STATUS, statuses[5][3].pack()[:-4], ctr=c_up).hex(),
            "status body of 40 bytes: the signal and version without the capacity (valid MAC)",
            "size",
        ),
        (
            "up",
            l_up,
            sealed(ul.STATUS, statuses[5][3].pack() + b"\x00", ctr=c_up).hex(),
            "status body of 45 bytes (valid MAC)",
            "size",
        ),
        (
            "up",
            l_up,
            sealed(ul.STATUS, st_bytes[:21] + b"\x81" + st_bytes[22:], ctr=c_up).hex(),
            "status flags with an undefined bit (valid MAC)",
            "field",
        ),
        # down: what the reader refuses
        ("down", 0, flip(ack, len(ack) - 1), "bad MAC (last MAC byte flipped)", "mac"),
        ("down", down(1), flip(tim, ul.HEADER_LEN + 2), "flipped ciphertext byte", "mac"),
        ("down", 0, flip(ack, 16), "flipped counter byte in the header", "mac"),
        (
            "down",
            0,
            ul.build_ack(ul.LinkKeys(OTHER_KEY), rid, bid, c_ack, 4).hex(),
            "MAC'd with another reader's key",
            "mac",
        ),
        (
            "down",
            0,
            ul.seal(ul.LinkKeys(OTHER_KEY), ul.ACK, rid, bid, c_ack, (4).to_bytes(4, "big")).hex(),
            "another reader's ACK replayed on this reader's topic",
            "mac",
        ),
        ("down", 0, ack[:-1].hex(), "truncated by one byte", "mac"),
        ("down", 0, ack[:39].hex(), "39 bytes: shorter than header + MAC", "size"),
        ("down", 0, "", "empty", "size"),
        ("down", c_ack, ack.hex(), "replayed ACK: counter equal to the last accepted", "replay"),
        ("down", down(2), ack.hex(), "replayed ACK: counter below the last accepted", "replay"),
        ("down", down(9), tim.hex(), "replayed TIME (would set the clock back)", "replay"),
        ("down", 0, sealed(ctr=0).hex(), "counter 0 (never accepted)", "replay"),
        ("down", 0, sealed(reader=rid + 1).hex(), "for another reader (valid MAC)", "reader"),
        ("down", 0, sealed(building=bid + 1).hex(), "for another building (valid MAC)", "building"),
        ("down", 0, (b"LCWD" + ack[4:]).hex(), "bad magic", "magic"),
        ("down", 0, sealed(version=0).hex(), "version 0 (valid MAC)", "version"),
        ("down", 0, sealed(reserved=0x100).hex(), "nonzero reserved header field (valid MAC)", "field"),
        ("down", 0, rides_raw(b"".join(rec3), c_ack).hex(), "an up kind (RIDES) sent down (valid MAC)", "kind"),
        ("down", 0, sealed(ul.STATUS, st_bytes).hex(), "an up kind (STATUS) sent down (valid MAC)", "kind"),
        ("down", 0, sealed(0x87, b"").hex(), "unknown kind 0x87 (valid MAC)", "kind"),
        ("down", 0, sealed(ul.RESEND, b"\x00\x00\x01").hex(), "resend body of 3 bytes (valid MAC)", "size"),
        ("down", 0, sealed(ul.SUNCTR_UP, sun3).hex(), "an up kind (SUNCTR 0x03) sent down (valid MAC)", "kind"),
        ("down", 0, sealed(ul.SUNCTR_DOWN, b"").hex(), "SUNCTR with no entry (valid MAC)", "size"),
        (
            "down",
            0,
            sealed(ul.SUNCTR_DOWN, sun3 + b"\x00").hex(),
            "SUNCTR body not a whole number of 11-byte entries (valid MAC)",
            "size",
        ),
        ("down", 0, sealed(ul.SUNCTR_DOWN, sun65).hex(), "SUNCTR with 65 entries (valid MAC)", "size"),
        ("down", 0, sealed(ul.ACK, (4).to_bytes(5, "big")).hex(), "ACK body of 5 bytes (valid MAC)", "size"),
        ("down", 0, sealed(ul.TIME, b"\x00\x01\x02").hex(), "TIME body of 3 bytes (valid MAC)", "size"),
        ("down", 0, sealed(ul.DELTA, delta_blob[:39]).hex(), "DELTA body of 39 bytes (valid MAC)", "size"),
        (
            "down",
            0,
            sealed(ul.WHITELIST, struct.pack(">III", 7, 128, 0)).hex(),
            "WHITELIST chunk with no data (valid MAC)",
            "size",
        ),
        (
            "down",
            0,
            sealed(ul.WHITELIST, struct.pack(">III", 7, 120, 100) + wl_blob[100:]).hex(),
            "WHITELIST chunk past the end of its file (valid MAC)",
            "field",
        ),
        (
            "down",
            0,
            sealed(ul.WHITELIST, struct.pack(">III", 7, 47, 0) + wl_blob[:47]).hex(),
            "WHITELIST file of 47 bytes, shorter than any LCWL (valid MAC)",
            "field",
        ),
    ]
    invalid = []
    for direction, last, h, why, reason in inv:
        try:
            ul.parse(keys, bytes.fromhex(h), rid, bid, direction, last)
        except ul.FormatError as e:
            assert e.reason == reason, (why, e.reason, reason)
        else:
            raise AssertionError("vector not refused: " + why)
        invalid.append({"direction": direction, "last_counter": last, "hex": h, "why": why, "reason": reason})
    return {
        "key": KEY.hex(),
        "reader_id": rid,
        "building_id": bid,
        "enc_key": keys.enc.hex(),
        "mac_key": keys.mac.hex(),
        "magic": ul.MAGIC.hex(),
        "max_rides": ul.MAX_RIDES,
        "valid": valid,
        "invalid": invalid,
    }
