"""The firmware's PN532 I2C transport (pn532link.I2cLink) against the PN532
emulator in I2C mode (started in-process): the real micropython (192K heap)
runs PN532(I2cLink(PtyI2C(pty))) -- PtyI2C (tests/firmware/pty_i2c.py) is the
machine.I2C stand-in carrying the emulator's bus transport. Checked: the
status byte (00 "not ready" polled again), frames read at a fixed length,
frames longer than the first read (NACK, then the long read), and whole taps
through liftcard.nfc.Nfc giving the credential's card id."""

import json

import pytest

from liftcard_testing.firmware import run_micropython
from liftcard_provisioning.nfc import credential as K
from liftcard_tools.nfc import cards as Cd
from liftcard_tools.nfc.pn532emu import PN532Emulator

h = bytes.fromhex
BUILDING = 12
KEYS = K.BuildingKeys(BUILDING, h("00112233445566778899AABBCCDDEEF0"), h("F0EEDDCCBBAA99887766554433221100"))
UID = h("04A1B2C3D4E580")
CRED = K.Credential(h("00000000075BCD15"), BUILDING, 3, 800, 2800)
NTAG_UID, NTAG_ID = h("04C0FFEE123480"), h("00000000000F4240")

SCRIPT = r"""
import sys, json, time
from pty_i2c import PtyI2C
from liftcard import codes
from liftcard.nfc import Nfc
from liftcard.pn532 import PN532
from liftcard.pn532link import I2cLink

path, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
bus = PtyI2C(path)
pn = PN532(I2cLink(bus, size=size))
out = {}

def hexs(b, n):
    return "".join("%02x" % b[i] for i in range(n))

if mode == "basic":
    pn.link.wake()
    o = pn.out
    o[0] = 0x02  # GetFirmwareVersion
    n = pn.command(1)
    out["firmware"] = hexs(pn.rx, 2 + n)
    o[0] = 0x14  # SAMConfiguration normal mode
    o[1] = 0x01
    o[2] = 0x14
    o[3] = 0x01
    n = pn.command(4)
    out["sam"] = hexs(pn.rx, 2 + n)
    pn.init()
    out["idle"] = pn.list_target()
else:
    class Board:
        def __init__(self):
            self.card = bytearray(8)
            self.tap_kind = 0
            self.tap_floor = 0
            self.tap_failure = -1

    board = Board()
    nfc = Nfc(pn)
    nfc.configure(bytes.fromhex(sys.argv[4]), int(sys.argv[5]))
    end = time.ticks_add(time.ticks_ms(), 10000)
    kind = 0
    while not kind and time.ticks_diff(end, time.ticks_ms()) > 0:
        kind = nfc.poll(board)
    out["credential"] = kind == codes.TAP_CREDENTIAL
    out["failure"] = board.tap_failure
    out["card"] = hexs(board.card, 8)
    out["chip_errors"] = nfc.chip_errors
out["resends"] = pn.resends
out["naks"] = pn.naks
out["bus"] = {"writes": bus.writes, "reads": bus.reads, "status_reads": bus.status_reads,
              "not_ready": bus.not_ready, "max_read": bus.max_read}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def emu():
    e = PN532Emulator(i2c=True).start()
    yield e
    e.stop()


def run(tmp_path, emu, *args):
    script = tmp_path / "i2c_run.py"
    script.write_text(SCRIPT)
    r = run_micropython([str(script), emu.path, *map(str, args)], tmp_path, timeout=120)
    text = r.stdout.decode(errors="replace")
    assert r.returncode == 0, text + r.stderr.decode(errors="replace")
    line = [x for x in text.splitlines() if x.startswith("RESULT ")]
    assert line, text
    return json.loads(line[0][len("RESULT ") :])


def long_resends(emu):
    # a host frame beyond the command itself, with no corrupted frame: the link's NACK
    return [e for e in emu.stats.exchanges if e["host_frames"] > 1]


def test_i2c_firmware_version_sam_and_idle_poll(tmp_path, emu):
    out = run(tmp_path, emu, "basic", 64)
    assert out["firmware"] == "d50332010607"  # IC PN532, Ver 1, Rev 6, ISO18092/14443A/B
    assert out["sam"] == "d515"
    assert out["idle"] is False
    assert out["resends"] == 0 and out["naks"] == 0
    cmds = [e["cmd"] for e in emu.stats.exchanges]
    assert cmds == [0x02, 0x14, 0x14, 0x02, 0x32, 0x32, 0x4A]
    # the status byte: every frame was polled for ("not ready" first), then read at 65 bytes
    bus = out["bus"]
    assert emu.stats.not_ready >= 2 * len(cmds)
    assert bus["not_ready"] == emu.stats.not_ready
    assert bus["status_reads"] > 0 and bus["max_read"] == 65
    assert emu.stats.i2c_reads == bus["reads"] and emu.stats.i2c_writes == bus["writes"]
    assert not long_resends(emu)
    # one ACK + one response per command, as on HSU
    assert all(e["chip_frames"] == 2 and e["host_frames"] == 1 for e in emu.stats.exchanges)


def test_i2c_desfire_tap_gives_the_credential_card_id(tmp_path, emu):
    emu.field.enter(Cd.make_desfire(UID, KEYS, CRED))
    out = run(tmp_path, emu, "tap", 64, KEYS.read_master.hex(), BUILDING)
    assert out["credential"] and out["failure"] == 0, out
    assert out["card"] == CRED.card_id.hex()
    assert out["chip_errors"] == 0 and out["resends"] == 0 and out["naks"] == 0
    assert sum(1 for e in emu.stats.exchanges if e["cmd"] == 0x40) == 4
    assert emu.stats.not_ready > 0 and out["bus"]["not_ready"] == emu.stats.not_ready
    assert not long_resends(emu)  # every DESFire frame fits the 65-byte read


def test_i2c_long_frames_read_again_after_nack(tmp_path, emu):
    # First read of 17 bytes: every frame longer than GetFirmwareVersion's
    # answer (the target, the DESFire answers) takes the NACK + long read path.
    emu.field.enter(Cd.make_desfire(UID, KEYS, CRED))
    out = run(tmp_path, emu, "tap", 16, KEYS.read_master.hex(), BUILDING)
    assert out["credential"] and out["failure"] == 0, out
    assert out["card"] == CRED.card_id.hex()
    assert out["chip_errors"] == 0 and out["resends"] == 0 and out["naks"] == 0
    assert out["bus"]["max_read"] == 1 + 264 + 10
    again = long_resends(emu)
    assert {e["cmd"] for e in again} >= {0x4A, 0x40}
    assert all(e["host_frames"] == 2 and e["chip_frames"] == 3 for e in again)  # NACK -> the resend


def test_i2c_ntag_tap_with_a_response_over_64_bytes(tmp_path, emu):
    # The NTAG 424 record (ReadData, ~100 bytes) exceeds the default 65-byte read.
    emu.field.enter(Cd.make_ntag424(NTAG_UID, KEYS, NTAG_ID, counter=5))
    out = run(tmp_path, emu, "tap", 64, KEYS.read_master.hex(), BUILDING)
    assert out["credential"] and out["failure"] == 0, out
    assert out["card"] == NTAG_ID.hex()
    assert out["chip_errors"] == 0 and out["resends"] == 0 and out["naks"] == 0
    again = long_resends(emu)
    assert again and all(e["cmd"] == 0x40 and e["rf_in"] > 64 - 10 for e in again)
    assert out["bus"]["max_read"] == 1 + 264 + 10


def test_i2c_bad_checksum_nacked_and_resent(tmp_path, emu):
    emu.field.enter(Cd.make_desfire(UID, KEYS, CRED))
    emu.faults.corrupt_next()
    out = run(tmp_path, emu, "tap", 64, KEYS.read_master.hex(), BUILDING)
    assert out["credential"] and out["card"] == CRED.card_id.hex()
    assert out["naks"] == 1
