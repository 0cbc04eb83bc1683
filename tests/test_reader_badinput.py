"""Bad input against the whole virtual reader (firmware/main.py under the real
micropython, 192K heap, its own flash images): garbage on the tap line, refused
configs, whitelists and deltas. Each is answered with one ERR line naming the
problem, the reader keeps running, and its state is what it was."""

import json

import pytest

from liftcard_protocol.card import CardRecord
from liftcard_protocol.delta import build_delta
from liftcard_protocol.whitelist import build_whitelist
from liftcard_testing.reader import BUILDING, CARD, CARDS, CONFIG, KEY, READER, VirtualReader


@pytest.fixture
def reader(tmp_path):
    with VirtualReader(tmp_path) as r:  # killed at the end if a test left it running
        cfg = r.file("config.json", json.dumps(CONFIG).encode())
        assert r.command("CONFIG " + cfg).startswith("OK config reader 1017")
        wl = r.file("wl1.bin", build_whitelist(KEY, READER, BUILDING, 1, CARDS))
        assert r.command("WL " + wl) == "OK whitelist v1 2 cards"
        assert r.command("TIME 91000000") == "OK time 91000000"
        yield r


def _state(r):
    s = r.status()
    return {k: s[k] for k in ("reader_id", "building_id", "whitelist_version", "cards", "next_seq", "acked")}


GARBAGE = [
    (b"TAP 11223344556677\n", "ERR bad tap: card id must be 16 hex digits"),
    (b"TAP 11223344556677zz\n", "ERR bad tap: card id is not hex"),
    (b"TAP\n", "ERR bad tap: card id must be 16 hex digits"),
    (b"TAP 1122334455667788 999\n", "ERR bad tap: floor must be a number 0..254"),
    (b"TAP 1122334455667788 -1\n", "ERR bad tap: floor must be a number 0..254"),
    (b"UID 1\n", "ERR bad tap: card id must be 16 hex digits (UID: 2..16)"),
    (b"FAIL 99\n", "ERR bad tap: FAIL needs a reason code 7..11"),
    (b"FAIL\n", "ERR bad tap: FAIL needs a reason code 7..11"),
    (b"\xff\xfe\x00garbage\n", "ERR command is not text"),
    (b"X" * 600 + b"\n", "ERR line too long"),
    (b"FROB\n", "ERR unknown command FROB"),
    (b"TIME soon\n", "ERR usage: TIME <seconds since 2024-01-01 UTC>"),
    (b"TIME 99999999999\n", "ERR usage: TIME"),
    (b"ACK 999\n", "ERR ack 999 is beyond the last record"),
    (b"ACK\n", "ERR usage: ACK"),
    (b"DUMP x\n", "ERR usage: DUMP [from seq] [count]"),
    (b"ACK x\n", "ERR usage: ACK <seq>"),
    (b"WL\n", "ERR usage: WL"),
    (b"WL /nonexistent/wl.bin\n", "ERR cannot open /nonexistent/wl.bin"),
    (b"DELTA /nonexistent/d.bin\n", "ERR cannot read delta"),
    (b"CONFIG /nonexistent/c.json\n", "ERR config: cannot read"),
]


def test_garbage_lines_are_refused_and_the_reader_goes_on(reader):
    before = _state(reader)
    for raw, expect in GARBAGE:
        reader.send(raw)
        reply = reader.until("ERR")[-1].strip()
        assert reply.startswith(expect), (raw[:40], reply)
        assert "Traceback" not in reply
    assert _state(reader) == before, "garbage changed the reader's state"
    ride = reader.tap(CARD)
    assert ride.result == 0 and ride.fee == 40 and ride.seq == before["next_seq"]
    assert reader.quit() == 0


def _config(**changes):
    cfg = json.loads(json.dumps(CONFIG))
    for k, v in changes.items():
        if k.startswith("tariff_"):
            cfg["tariff"][k[len("tariff_") :]] = v
        else:
            cfg[k] = v
    return cfg


BAD_CONFIGS = [
    (b"{not json", "config: not valid JSON"),
    (json.dumps([1, 2]).encode(), "config: not a JSON object"),
    (json.dumps(_config(reader_id=0)).encode(), "config: reader_id must be"),
    (json.dumps(_config(floors=40)).encode(), "config: floors must be"),
    (json.dumps(_config(key="zz" * 32)).encode(), "config: key must be 64 hex digits"),
    (json.dumps(_config(tariff_fee_fen=[1, 2])).encode(), "config: tariff.fee_fen must list one fee per floor"),
    (json.dumps(_config(tariff_fee_fen=[0, 0, 10, 20, 30, 40, -5])).encode(), "config: tariff.fee_fen entries"),
    (json.dumps(_config(tariff_free_classes=["vip"])).encode(), "config: tariff.free_classes has an unknown class"),
    (json.dumps(_config(legacy_uid="yes")).encode(), "config: legacy_uid must be true or false"),
]


@pytest.mark.parametrize("raw,expect", BAD_CONFIGS, ids=[e for _, e in BAD_CONFIGS])
def test_bad_config_is_refused_and_the_last_good_one_stays(reader, raw, expect):
    before = _state(reader)
    reply = reader.command("CONFIG " + reader.file("bad.json", raw))
    assert reply.startswith("ERR " + expect), reply
    assert KEY.hex() not in reply
    assert _state(reader) == before
    assert reader.tap(CARD).fee == 40  # the old tariff still applies
    # And after a power cycle, too.
    assert reader.quit() == 0
    with VirtualReader(reader.dir) as again:
        s = again.status()
        assert s["reader_id"] == READER and s["whitelist_version"] == 1 and s["error"] is None
        assert again.quit() == 0


def test_refused_whitelists_and_deltas_leave_the_list_alone(reader):
    other_key = bytes(32)
    good2 = build_whitelist(KEY, READER, BUILDING, 2, CARDS[:1])
    cases = [
        ("short", good2[:40], "ERR whitelist"),
        ("truncated", good2[:-1], "ERR whitelist size does not match"),
        ("forged", build_whitelist(other_key, READER, BUILDING, 2, CARDS), "ERR whitelist MAC does not verify"),
        ("stale", build_whitelist(KEY, READER, BUILDING, 1, CARDS[:1]), "ERR stale whitelist version 1"),
        ("other reader", build_whitelist(KEY, READER + 1, BUILDING, 2, CARDS), "ERR whitelist is for another reader"),
        ("empty", b"", "ERR whitelist too short"),
    ]
    before = _state(reader)
    for name, data, expect in cases:
        reply = reader.command("WL " + reader.file("bad-wl.bin", data))
        assert reply.startswith(expect), (name, reply)
        assert _state(reader) == before, name
    lost = CardRecord(CARD, 501, 0b100001, status=2)
    deltas = [
        ("forged", build_delta(other_key, READER, BUILDING, 1, 2, [("upsert", lost)]), "ERR delta MAC does not verify"),
        ("gap", build_delta(KEY, READER, BUILDING, 2, 3, [("upsert", lost)]), "ERR delta 2->3 does not follow"),
        ("stale", build_delta(KEY, READER, BUILDING, 0, 1, [("upsert", lost)]), "ERR stale delta"),
        ("short", b"LCWD", "ERR delta too short"),
        ("huge", b"\0" * 10000, "ERR delta larger than"),
    ]
    for name, data, expect in deltas:
        reply = reader.command("DELTA " + reader.file("bad-d.bin", data))
        assert reply.startswith(expect), (name, reply)
        assert _state(reader) == before, name
    assert reader.tap(CARD).result == 0  # still granted: no forged "lost" took hold
    good = build_delta(KEY, READER, BUILDING, 1, 2, [("upsert", lost)])
    assert reader.command("DELTA " + reader.file("d.bin", good)) == "OK whitelist v2"
    assert reader.tap(CARD).result == 3  # LOST
    assert reader.quit() == 0
