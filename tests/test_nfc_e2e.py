"""End to end over a pty: the reference PCD (real PN532 frames) against the
PN532 emulator with emulated cards in its field, and the emulator CLI."""

import json
import subprocess
import sys
import time

import pytest

from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import frames as Fr
from liftcard_provisioning.nfc.pcd import PN532, PN532Timeout
from liftcard_provisioning.nfc.tap import Reader
from liftcard_testing import procs
from liftcard_tools.nfc import cards as Cd
from liftcard_tools.nfc.pn532emu import PN532Emulator

h = bytes.fromhex
KEYS = K.BuildingKeys(12, h("00112233445566778899AABBCCDDEEF0"), h("F0EEDDCCBBAA99887766554433221100"))
READER_KEYS = K.BuildingKeys(12, KEYS.read_master)
UID = h("04A1B2C3D4E580")
CRED = K.Credential(h("00000000075BCD15"), 12, 3, 800, 2800)


@pytest.fixture
def rig():
    emu = PN532Emulator().start()
    pn = PN532(emu.path, ack_timeout=0.3, resp_timeout=2.0)
    reader = Reader(pn, READER_KEYS)
    yield emu, pn, reader
    pn.close()
    emu.stop()


def test_genuine_desfire_granted_credential_id(rig):
    emu, pn, reader = rig
    assert reader.read_tap().result == "NO_CARD"
    emu.field.enter(Cd.make_desfire(UID, KEYS, CRED))
    emu.stats.reset()
    t = reader.read_tap()
    assert (t.result, t.card_id, t.kind) == ("OK", CRED.card_id, "desfire")
    assert t.card_id != K.legacy_card_id(UID)  # the id comes from the credential, not the UID
    tot = emu.stats.totals()
    # InListPassiveTarget, SelectApplication, 2 x auth, ReadData, InRelease
    assert tot["card_exchanges"] == 4 and tot["commands"] == 6
    assert tot["chip_frames"] == 12 and tot["host_frames"] == 6
    assert tot["rf_in"] == 1 + 17 + 17 + 35


def test_magic_clone_auth_failed(rig):
    emu, _pn, reader = rig
    real = Cd.make_desfire(UID, KEYS, CRED)
    for mode in ("wrong_key", "no_app"):
        emu.field.enter(Cd.MagicClone(real, mode))
        t = reader.read_tap()
        assert (t.result, t.card_id) == ("AUTH_FAILED", None)


def test_replayed_ntag_sun_is_replay(rig):
    emu, _pn, reader = rig
    tag = Cd.make_ntag424(h("04C0FFEE123480"), KEYS, h("00000000000F4240"))
    rec = Cd.RecordingCard(tag)
    emu.field.enter(rec)
    assert reader.read_tap().result == "OK"
    emu.field.enter(Cd.MagicClone(tag, "replay", rec.responses))
    t = reader.read_tap()
    assert (t.result, t.card_id) == ("REPLAY", h("00000000000F4240"))
    emu.field.enter(tag)
    assert reader.read_tap().result == "OK"  # the real tag's counter moved on


def test_card_removed_mid_exchange(rig):
    emu, _pn, reader = rig
    for n in (0, 1, 2, 3):
        emu.field.enter(Cd.make_desfire(UID, KEYS, CRED), leave_after=n)
        assert reader.read_tap().result == "CARD_REMOVED", n


@pytest.mark.parametrize("mode", ["garbage", "truncated", "crc", "mute"])
def test_faulty_card_garbage(rig, mode):
    emu, _pn, reader = rig
    emu.field.enter(Cd.FaultyCard(h("04998877665544"), mode))
    assert reader.read_tap().result == "CARD_GARBAGE"


def test_classic_uid_only_legacy(rig):
    emu, pn, reader = rig
    emu.field.enter(Cd.MifareClassicCard(h("DEADBEEF")))
    t = reader.read_tap()
    assert (t.result, t.card_id, t.flags) == ("LEGACY_DISABLED", h("00000000DEADBEEF"), 0x02)
    legacy = Reader(pn, READER_KEYS, legacy_uid=True)
    t = legacy.read_tap()
    assert (t.result, t.card_id, t.flags, t.kind) == ("OK", h("00000000DEADBEEF"), 0x02, "uid")


def test_chip_silent_then_recovers_after_reset(rig):
    emu, pn, reader = rig
    emu.field.enter(Cd.make_desfire(UID, KEYS, CRED))
    assert reader.read_tap().result == "OK"
    emu.faults.silence()
    pn.ack_timeout = 0.05
    assert reader.read_tap().result == "BAD_READ"
    assert pn.need_init
    assert reader.read_tap().result == "BAD_READ"  # still silent: the re-init times out too
    emu.reset()
    t = reader.read_tap()
    assert (t.result, t.card_id) == ("OK", CRED.card_id)


def test_link_faults_garbage_and_bad_checksum(rig):
    emu, pn, reader = rig
    emu.field.enter(Cd.make_desfire(UID, KEYS, CRED))
    assert reader.read_tap().result == "OK"
    emu.faults.garbage(b"\x55\xaa\x13\x37")
    emu.faults.corrupt_next()
    naks = pn.naks
    assert reader.read_tap().result == "OK"
    assert pn.naks == naks + 1  # the host NACKed the bad frame and got the resend


def test_emulator_frame_level(rig):
    emu, pn, _reader = rig
    import os

    os.write(pn.fd, Fr.encode(0xD4, b"\x02"))  # asleep: ignored
    time.sleep(0.1)
    assert emu.stats.exchanges == []
    pn.init()
    assert pn.command(0x02) == bytes([0x32, 0x01, 0x06, 0x07])
    assert emu.stats.exchanges[-1]["chip_bytes"] == len(Fr.ACK) + 13
    # a frame with a wrong DCS is ignored by the chip: no ACK
    bad = bytearray(Fr.encode(0xD4, b"\x02"))
    bad[-2] ^= 1
    os.write(pn.fd, bytes(bad))
    assert pn._next_frame(time.monotonic() + 0.2) is None
    # an unknown command gets ACK + error frame
    with pytest.raises(Exception, match="syntax"):
        pn.command(0x7E)
    # extended frame from the host: InDataExchange with 300 bytes to a listed card
    emu.field.enter(Cd.FaultyCard(h("04998877665544"), "garbage"))
    assert pn.list_target() is not None
    assert pn.command(0x40, b"\x01" + bytes(300))[0] == 0x00
    # InListPassiveTarget with infinite retries waits for a card; the host aborts it with an ACK
    emu.field.leave()
    pn.command(0x32, b"\x05\xff\x01\xff")
    with pytest.raises(PN532Timeout):
        pn.command(0x4A, b"\x01\x00", timeout=0.2)
    pn.init()
    assert pn.list_target() is None


def test_waiting_list_completes_when_card_enters(rig):
    emu, pn, _reader = rig
    import threading

    pn.init()
    pn.command(0x32, b"\x05\xff\x01\xff")
    card = Cd.make_desfire(UID, KEYS, CRED)
    threading.Timer(0.2, emu.field.enter, (card,)).start()
    t = pn.list_target()
    assert t.uid == UID and t.sak == 0x20 and t.atqa == 0x0344 and t.ats == Cd.DESFIRE_ATS


def test_cli_process(tmp_path):
    spec = {
        "building_id": 12,
        "read_master": KEYS.read_master.hex(),
        "perso_master": KEYS.perso_master.hex(),
        "cards": [
            {
                "name": "alice",
                "type": "desfire",
                "uid": UID.hex(),
                "card_id": CRED.card_id.hex(),
                "valid_from": 800,
                "valid_until": 2800,
                "issuer": 3,
            },
            {"name": "fob", "type": "ntag424", "uid": "04c0ffee123480", "card_id": "00000000000f4240"},
            {"name": "old", "type": "classic", "uid": "deadbeef"},
            {"name": "evil", "type": "clone", "of": "alice", "mode": "wrong_key"},
            {"name": "bad", "type": "faulty", "uid": "04998877665544", "mode": "garbage"},
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    p = procs.spawn(
        [sys.executable, "-m", "liftcard_tools.nfc.pn532emu", "--cards", str(tmp_path / "spec.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        path = p.stdout.readline().strip()
        assert path.startswith("/dev/")
        pn = PN532(path, ack_timeout=0.5, resp_timeout=2.0)
        reader = Reader(pn, READER_KEYS)

        def ctl(line):
            p.stdin.write(line + "\n")
            p.stdin.flush()
            return p.stdout.readline().strip()

        expect = {
            "alice": ("OK", CRED.card_id),
            "fob": ("OK", h("00000000000f4240")),
            "old": ("LEGACY_DISABLED", h("00000000deadbeef")),
            "evil": ("AUTH_FAILED", None),
            "bad": ("CARD_GARBAGE", None),
        }
        for name, want in expect.items():
            assert ctl("enter " + name) == "ok"
            assert reader.read_tap()[:2] == want, name
        assert ctl("leave") == "ok"
        assert reader.read_tap().result == "NO_CARD"
        stats = json.loads(ctl("stats"))
        assert stats["totals"]["card_exchanges"] > 5
        assert ctl("nonsense").startswith("error")
        assert ctl("quit") == "ok"
        pn.close()
    finally:
        p.stdin.close()
        try:
            p.wait(10)
        finally:
            procs.stop(p)  # killed if it did not exit on its own
