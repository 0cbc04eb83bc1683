"""liftcard-provision card personalise / read: the real CLI (a subprocess, the
installed console script) on the pty of the PN532 emulator (in-process) with an
emulated blank DESFire card in its field; the result is then read by the
reference PCD (the reader's tap procedure) with only the building's read key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liftcard_provisioning import cardverbs, cli
from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import pcd
from liftcard_provisioning.nfc.tap import Reader
from liftcard_tools.nfc import cards as Cd
from liftcard_tools.nfc.pn532emu import PN532Emulator

h = bytes.fromhex
BUILDING = 12
READ_MASTER = "00112233445566778899aabbccddeef0"
PERSO_MASTER = "f0eeddccbbaa99887766554433221100"
KEYS = K.BuildingKeys(BUILDING, h(READ_MASTER), h(PERSO_MASTER))
UID = h("04A1B2C3D4E580")
CARD_ID = "00000000075BCD15"
EXE = Path(sys.executable).with_name("liftcard-provision")


def run(*args, timeout=30):
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "liftcard_provisioning.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def write_keys(path, mode=0o600, **doc):
    body = {"building_id": BUILDING, "read_master": READ_MASTER, "perso_master": PERSO_MASTER}
    body.update(doc)
    body = {k: v for k, v in body.items() if v is not None}
    path.write_text(json.dumps(body))
    os.chmod(path, mode)
    return path


def no_keys(*texts):
    for t in texts:
        low = t.lower()
        for k in (READ_MASTER, PERSO_MASTER):
            assert k not in low
        assert "traceback" not in low


@pytest.fixture
def emu():
    e = PN532Emulator().start()
    yield e
    e.stop()


@pytest.fixture
def keyfile(tmp_path):
    return write_keys(tmp_path / "building-12.json")


def personalise(emu, keyfile, *extra, card_id=CARD_ID):
    return run(
        "card",
        "personalise",
        "--port",
        emu.path,
        "--keys",
        keyfile,
        "--card-id",
        card_id,
        "--valid-from",
        "2026-01-01",
        "--valid-until",
        "2027-12-31",
        "--issuer",
        "3",
        *extra,
    )


def test_personalise_blank_card_then_read_back_and_tap(emu, keyfile):
    card = Cd.DesfireCard(UID)
    emu.field.enter(card)
    r = personalise(emu, keyfile)
    no_keys(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    assert "personalised card 04A1B2C3D4E580: card id 00000000075BCD15, building 12" in r.stdout
    assert "valid 2026-01-01 .. 2027-12-31, issuer 3" in r.stdout
    for step in (
        "select PICC",
        "create application LCF",
        "authenticate key 0",
        "change key 1",
        "create file 1",
        "write credential",
        "change key 0",
        "verify: ok",
    ):
        assert step in r.stderr, step

    # the card now holds the diversified keys and the credential
    app = card.apps[K.AID_LCF]
    assert app.keys[0][0] == KEYS.desfire_key(UID, 0) and app.keys[1][0] == KEYS.desfire_key(UID, 1)
    cred = K.Credential.decode(bytes(app.files[1].data))
    assert cred == K.Credential(h(CARD_ID), BUILDING, 3, 731, 1460, 1)

    # card read, with a keys file holding only the read master
    ro = write_keys(keyfile.parent / "read-only.json", perso_master=None)
    r = run("card", "read", "--port", emu.path, "--keys", ro, "--json")
    no_keys(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["card_id"] == CARD_ID and got["building_id"] == BUILDING and got["mac"] == "verified"
    assert got["valid_from"] == "2026-01-01" and got["valid_until"] == "2027-12-31" and got["issuer"] == 3
    r = run("card", "read", "--port", emu.path, "--keys", ro)
    fields = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert r.returncode == 0 and fields["mac:"] == "verified" and fields["card_id:"] == CARD_ID

    # a reader (reference PCD, read master only) grants it: OK with the card id
    pn = pcd.PN532(emu.path)
    try:
        reader = Reader(pn, K.BuildingKeys(BUILDING, h(READ_MASTER)))
        tap = reader.read_tap(today=800)
        assert tap[:2] == ("OK", h(CARD_ID)) and tap.kind == "desfire"
        assert reader.read_tap(today=2000).result == "EXPIRED"
        # another building's reader refuses it
        other = Reader(pn, K.BuildingKeys(BUILDING + 1, h(READ_MASTER)))
        assert other.read_tap().result == "AUTH_FAILED"
    finally:
        pn.close()

    # personalising it again: refused, nothing changed
    before = bytes(app.files[1].data)
    r = personalise(emu, keyfile, card_id="0000000000000001")
    assert r.returncode == 1 and "already personalised for building 12" in r.stderr
    assert bytes(card.apps[K.AID_LCF].files[1].data) == before
    no_keys(r.stdout, r.stderr)


def test_valid_until_never(emu, keyfile):
    emu.field.enter(Cd.DesfireCard(UID))
    r = run(
        "card",
        "personalise",
        "--port",
        emu.path,
        "--keys",
        keyfile,
        "--card-id",
        CARD_ID,
        "--valid-from",
        "2026-01-01",
        "--valid-until",
        "never",
    )
    assert r.returncode == 0, r.stderr
    r = run("card", "read", "--port", emu.path, "--keys", keyfile, "--json")
    assert json.loads(r.stdout)["valid_until"] == "never"


def test_card_personalised_with_other_keys_is_refused(emu, keyfile):
    other = K.BuildingKeys(BUILDING, h("11" * 16), h("22" * 16))
    card = Cd.make_desfire(UID, other, K.Credential(h("0000000000000042"), BUILDING))
    before = {k: [list(x) for x in a.keys] for k, a in card.apps.items()}
    emu.field.enter(card)
    r = personalise(emu, keyfile)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("liftcard-provision: card 04A1B2C3D4E580 is already personalised with other keys")
    )
    assert {k: [list(x) for x in a.keys] for k, a in card.apps.items()} == before
    r = run("card", "read", "--port", emu.path, "--keys", keyfile)
    assert r.returncode == 1 and "refused the read key" in r.stderr
    no_keys(r.stdout, r.stderr)


def last_line(r):
    lines = r.stderr.strip().splitlines()
    assert lines, r
    assert lines[-1].startswith("liftcard-provision: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_no_card_and_blank_read(emu, keyfile):
    r = personalise(emu, keyfile)
    assert r.returncode == 1 and "no card in the field" in last_line(r)
    emu.field.enter(Cd.DesfireCard(UID))
    r = run("card", "read", "--port", emu.path, "--keys", keyfile)
    assert r.returncode == 1 and "no liftcard application" in last_line(r)
    emu.field.enter(Cd.MifareClassicCard(h("DEADBEEF")))
    r = personalise(emu, keyfile)
    assert r.returncode == 1 and "not a DESFire" in last_line(r)


@pytest.mark.parametrize(
    "args, why",
    [
        (["--card-id", "00000000075BCD1"], "--card-id"),
        (["--card-id", "00000000075BCDZZ"], "--card-id"),
        (["--card-id", "0000000000000000"], "reserved"),
        (["--valid-from", "2026-13-01"], "--valid-from"),
        (["--valid-from", "26-01-01"], "--valid-from"),
        (["--valid-until", "2025-12-31"], "after --valid-until"),
        (["--issuer", "70000"], "--issuer"),
    ],
)
def test_bad_input(emu, keyfile, args, why):
    base = {"--card-id": CARD_ID, "--valid-from": "2026-01-01", "--valid-until": "2027-12-31"}
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [x for kv in base.items() for x in kv]
    emu.field.enter(Cd.DesfireCard(UID))
    r = run("card", "personalise", "--port", emu.path, "--keys", keyfile, *flat)
    assert r.returncode == 2
    assert why in last_line(r)
    assert len(r.stderr.strip().splitlines()) == 1


def test_keys_file_problems(tmp_path, emu):
    card = Cd.DesfireCard(UID)
    emu.field.enter(card)
    common = ["--card-id", CARD_ID, "--valid-from", "2026-01-01", "--valid-until", "2027-12-31"]
    loose = write_keys(tmp_path / "loose.json", mode=0o644)
    r = run("card", "personalise", "--port", emu.path, "--keys", loose, *common)
    assert r.returncode == 2 and "mode 0644" in last_line(r) and "chmod 600" in last_line(r)
    r = run("card", "read", "--port", emu.path, "--keys", loose)
    assert r.returncode == 2 and "mode 0644" in last_line(r)
    r = run("card", "read", "--port", emu.path, "--keys", tmp_path / "missing.json")
    assert r.returncode == 2 and "not found" in last_line(r)
    bad = write_keys(tmp_path / "bad.json", read_master=READ_MASTER[:-2] + "zz")
    r = run("card", "read", "--port", emu.path, "--keys", bad)
    assert r.returncode == 2 and "read_master must be exactly 32 hex digits" in last_line(r)
    no_keys(r.stderr)
    assert READ_MASTER[:-2] not in r.stderr
    ro = write_keys(tmp_path / "ro.json", perso_master=None)
    r = run("card", "personalise", "--port", emu.path, "--keys", ro, *common)
    assert r.returncode == 2 and "perso_master missing" in last_line(r)
    notjson = tmp_path / "x.json"
    notjson.write_text("{")
    os.chmod(notjson, 0o600)
    r = run("card", "read", "--port", emu.path, "--keys", notjson)
    assert r.returncode == 2 and "not valid JSON" in last_line(r)
    assert not card.apps  # nothing was written by any of these


def test_port_problems(tmp_path, keyfile):
    r = run("card", "read", "--port", tmp_path / "ttyNOPE", "--keys", keyfile)
    assert r.returncode == 1 and "cannot open serial port" in last_line(r)
    # a port with nothing answering (the emulator silenced)
    e = PN532Emulator().start()
    try:
        e.faults.silence()
        r = run("card", "read", "--port", e.path, "--keys", keyfile)
        assert r.returncode == 1 and "no PN532 answering" in last_line(r)
    finally:
        e.stop()


def test_port_auto_choice():
    ch340 = ("/dev/ttyUSB0", 0x1A86, 0x7523, "USB Serial", "CH340")
    cp = ("/dev/ttyUSB1", 0x10C4, 0xEA60, "CP2102", "CP210x")
    other = ("/dev/ttyACM0", 0x2341, 0x0043, "Arduino Uno", None)
    assert cardverbs.pick_port("auto", [ch340, other]) == "/dev/ttyUSB0"
    assert cardverbs.pick_port("/dev/ttyS3", []) == "/dev/ttyS3"
    with pytest.raises(cli.Fail, match="several candidates: /dev/ttyUSB0, /dev/ttyUSB1"):
        cardverbs.pick_port("auto", [ch340, cp, other])
    with pytest.raises(cli.Fail, match="no likely PN532 USB adapter.*ttyACM0"):
        cardverbs.pick_port("auto", [other])


def test_ports_and_help():
    r = run("ports")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "card" in r.stdout and "ports" in r.stdout
    r = run("card", "personalise", "--help")
    assert r.returncode == 0 and "--valid-until" in r.stdout and "0600" in r.stdout
    r = run("card", "frobnicate")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
