"""The technicians' tool and the log's identity (docs/technicians.md, "A
reader given another identity"; docs/formats.md, "Log identity"), on the
virtual serial board: configure compares the key through the reader's own
key check (another key is another identity, the same one is not), falls back
to config.json on a board without logid.bin, and a harvest leaves out the
rides of an earlier identity."""

import hashlib
import hmac
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("mpremote")

from liftcard_protocol.harvest import unpack_harvest
from liftcard_protocol.whitelist import build_whitelist
from liftcard_provisioning import boardlink, cli
from liftcard_provisioning.harvest import parse_logid
from liftcard_testing import firmware
from liftcard_testing.reader import BUILDING, CARDS, CONFIG, KEY, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

REFUSED = "reader %d still holds 2 rides not acknowledged by a gateway" % READER


@pytest.fixture
def board(tmp_path, monkeypatch):
    """Reader 1017, offline, holding 2 unacknowledged rides: (rig, test port, board dir)."""
    for var in ("LIFTCARD_READER_KEY", "LIFTCARD_BROKER_PASSWORD", "LIFTCARD_WIFI_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "board"
    with VirtualBoard(d) as b, TtyLines(b.test) as port:
        port.until("READY")
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps(CONFIG))
        assert port.command("CONFIG %s" % cfg).startswith("OK config reader %d" % READER)
        wl = tmp_path / "wl.bin"
        wl.write_bytes(build_whitelist(KEY, READER, BUILDING, 1, CARDS))
        assert port.command("WL %s" % wl) == "OK whitelist v1 2 cards"
        assert port.command("TIME 91000000") == "OK time 91000000"
        assert [port.tap(c.card_id, 5).seq for c in CARDS] == [1, 2]
        yield b, port, d


def configure(b, tmp_path, capsys, **over):
    f = tmp_path / ("cfg-%d.json" % len(list(tmp_path.glob("cfg-*.json"))))
    f.write_text(json.dumps(dict(CONFIG, **over)))
    rc = cli.main(["configure", "--port", b.usb, "--file", str(f)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_another_key_is_refused_the_same_identity_is_not(board, tmp_path, capsys):
    b, port, d = board
    other_key = "5a" * 32
    rc, out, err = configure(b, tmp_path, capsys, key=other_key)
    assert rc == 2 and err.count("\n") == 1 and REFUSED in err, err
    assert other_key not in out + err and KEY.hex() not in out + err
    port.until("READY")  # refused: the reader runs on, as it was
    st = port.status()
    assert (st["reader_id"], st["backlog"], st["foreign_rides"]) == (READER, 2, 0)
    # The same reader, building and key with another tariff: no change of identity.
    tariff = dict(CONFIG["tariff"], monthly_cap_fen=2000)
    rc, out, err = configure(b, tmp_path, capsys, tariff=tariff)
    assert rc == 0, err
    port.until("READY")
    st = port.status()
    assert (st["reader_id"], st["backlog"], st["foreign_rides"], st["log_reader_id"]) == (READER, 2, 0, READER)


def test_a_board_without_logid_is_judged_by_its_config(board, tmp_path, capsys):
    b, port, d = board
    link = boardlink.connect(b.usb)
    try:
        link.remove("logid.bin")  # as on a reader from before the file existed
        assert link.read_file("logid.bin") is None
    finally:
        link.close()  # left stopped: booting, the reader would write it again
    rc, out, err = configure(b, tmp_path, capsys, reader_id=1018)
    assert rc == 2 and REFUSED in err, err
    port.until("READY")
    st = port.status()
    assert (st["reader_id"], st["log_reader_id"], st["foreign_rides"]) == (READER, READER, 0)


def test_a_harvest_leaves_out_an_earlier_identitys_rides(board, tmp_path):
    b, port, d = board
    assert port.command("ACK 2") == "OK acked 2"
    cfg = tmp_path / "r10.json"
    cfg.write_text(json.dumps(dict(CONFIG, reader_id=10)))
    assert port.command("CONFIG %s" % cfg) == "OK config reader 10 building %d" % BUILDING
    assert port.tap(CARDS[0].card_id, 5).seq == 3  # denied (no whitelist for reader 10), still logged
    out_file = tmp_path / "r10.lchv"
    rc = cli.main(["harvest", "--port", b.usb, "--board-log-image", str(d / firmware.LOG_IMG), "--out", str(out_file)])
    assert rc == 0
    h = unpack_harvest(out_file.read_bytes())
    assert (h.reader_id, [r.seq for r in h.records]) == (10, [3])  # reader 1017's rides 1 and 2 are not its


def test_clear_needs_the_live_reader(tmp_path, capsys):
    img = tmp_path / "log.img"
    img.write_bytes(b"\xff" * (8 * 4096))
    rc = cli.main(
        ["harvest", "--image", str(img), "--reader", "8", "--building", "2", "--clear", "--out", str(tmp_path / "x")]
    )
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "--clear goes with a live reader" in err, err
    assert not (tmp_path / "x").exists()


# ---- the logid.bin format as the tool reads it (docs/formats.md, "Log identity") ----

ids = st.integers(1, (1 << 30) - 1)
keys = st.binary(min_size=32, max_size=32)


def logid_bytes(rid, bid, first, key):
    kc = hmac.new(key, b"liftcard log identity", hashlib.sha256).digest()[:8]
    return struct.pack(">4sIII8s", b"LCID", rid, bid, first, kc)


@given(ids, ids, st.integers(1, (1 << 32) - 1), keys, ids, ids, keys)
def test_logid_names_its_owner_and_matches_only_its_identity(rid, bid, first, key, rid2, bid2, key2):
    own = parse_logid(logid_bytes(rid, bid, first, key))
    assert (own.reader_id, own.building_id, own.from_seq) == (rid, bid, first)
    assert own.same({"reader_id": rid, "building_id": bid, "key": key.hex()})
    other = {"reader_id": rid2, "building_id": bid2, "key": key2.hex()}
    assert own.same(other) == ((rid2, bid2, key2) == (rid, bid, key))


@given(st.binary(max_size=40))
def test_anything_but_a_logid_names_no_owner(raw):
    if len(raw) == 24 and raw[:4] == b"LCID":
        assert parse_logid(raw) is not None
    else:
        assert parse_logid(raw) is None


def test_a_board_never_configured_is_configured_without_reading_a_log(tmp_path, capsys, monkeypatch):
    """No config, no logid.bin, no firmware yet (not even a log image on the
    virtual board): no ride can have an identity, and configure goes on."""
    for var in ("LIFTCARD_READER_KEY", "LIFTCARD_BROKER_PASSWORD", "LIFTCARD_WIFI_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    with VirtualBoard(tmp_path / "board", blank=True) as b:
        rc, out, err = configure(b, tmp_path, capsys)
        assert rc == 0, err
        assert "configured %s: reader %d" % (b.usb, READER) in out
