"""The whole virtual reader reading real PN532 frames: firmware/main.py under
the real micropython (192K heap) with --pn532 on the pty of the PN532
emulator (started in-process), emulated cards in its field. The firmware's
own driver, crypto and tap procedure decide; every tap is one RIDE record."""

import json
import queue
import subprocess
import threading
import time

import pytest

from liftcard_protocol.card import CardRecord
from liftcard_protocol.ride import RideRecord
from liftcard_protocol.whitelist import build_whitelist
from liftcard_provisioning.nfc import credential as K
from liftcard_tools.nfc import cards as Cd
from liftcard_testing import firmware, procs
from liftcard_testing.configs import write_gateway_config
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_tools.nfc.pn532emu import PN532Emulator

h = bytes.fromhex
KEY = bytes(range(32))
READER, BUILDING = 1017, 12
KEYS = K.BuildingKeys(BUILDING, h("00112233445566778899AABBCCDDEEF0"), h("F0EEDDCCBBAA99887766554433221100"))
UID = h("04A1B2C3D4E580")
CRED = K.Credential(h("00000000075BCD15"), BUILDING, 3, 800, 2800)
NTAG_UID, NTAG_ID = h("04C0FFEE123480"), h("00000000000F4240")
CLASSIC_UID = h("DEADBEEF")
CONFIG = {
    "reader_id": READER,
    "building_id": BUILDING,
    "floors": 7,
    "ground_floor": 0,
    "key": KEY.hex(),
    "read_master": KEYS.read_master.hex(),
    "tariff": {"fee_fen": [0, 0, 10, 20, 30, 40, 50], "free_classes": [], "monthly_cap_fen": 0, "debounce_s": 0},
}
CARDS = [
    CardRecord(int.from_bytes(CRED.card_id, "big"), 501, 0b100001),
    CardRecord(int.from_bytes(NTAG_ID, "big"), 502, 0b1001),
    CardRecord(int.from_bytes(bytes(4) + CLASSIC_UID, "big"), 503, 0b11),
]
GRANTED, AUTH_FAILED, REPLAY, CARD_REMOVED, CARD_GARBAGE, LEGACY_DISABLED = 0, 8, 9, 10, 11, 12
F_LEGACY_UID = 0x02


class NfcReader:
    def __init__(self, workdir, emu):
        self.dir, self.emu = workdir, emu
        self.p = procs.spawn(
            firmware.reader_argv(workdir, "--pn532", emu.path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=firmware.reader_env(),
            cwd=workdir,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.until("READY")
        except BaseException:
            self.kill()
            raise

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line.decode(errors="replace"))
        self.lines.put("")

    def until(self, prefix, timeout=15.0):
        seen = []
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %r within %ss: %s" % (prefix, timeout, "".join(seen)))
            assert line, "reader exited: %s" % "".join(seen)
            seen.append(line)
            if line.startswith(prefix):
                return line

    def command(self, text):
        self.p.stdin.write(text.encode() + b"\n")
        self.p.stdin.flush()
        return self.until(("OK", "ERR", "STATUS")).strip()

    def file(self, name, data):
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def status(self):
        return json.loads(self.command("STATUS")[len("STATUS ") :])

    def present(self, card, leave_after=None):
        """A card enters the field; -> the RIDE record of its tap. The card
        then leaves, and this returns once the reader has seen an empty field."""
        emu = self.emu
        emu.stats.reset()
        emu.field.enter(card, leave_after)
        line = self.until("RIDE ")
        rec = RideRecord.unpack(bytes.fromhex(line.split()[1]))
        self.last_stats = list(emu.stats.exchanges)
        emu.field.leave()
        self.wait_polled()
        return rec

    def wait_polled(self, timeout=10.0):
        emu = self.emu
        n = len(emu.stats.exchanges)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with emu.lock:
                if any(e["cmd"] == 0x4A for e in emu.stats.exchanges[n:]):
                    return
            time.sleep(0.01)
        raise AssertionError("the reader did not poll")

    def quit(self):
        self.p.stdin.write(b"QUIT\n")
        self.p.stdin.flush()
        self.p.stdin.close()
        return self.p.wait(timeout=30)

    def kill(self):
        """SIGKILL if it still runs; reaped either way."""
        procs.kill(self.p)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    emu = PN532Emulator().start()
    try:
        r = NfcReader(tmp_path_factory.mktemp("nfc"), emu)
        try:
            yield _configured(r)
        finally:
            r.kill()
    finally:
        emu.stop()


def _configured(r):
    assert r.command("CONFIG " + r.file("config.json", json.dumps(CONFIG).encode())).startswith("OK config")
    assert r.command("WL " + r.file("wl.bin", build_whitelist(KEY, READER, BUILDING, 1, CARDS))).startswith("OK")
    assert r.command("TIME 91000000") == "OK time 91000000"
    return r


def _tap_slice(exchanges):
    # The tap's commands: the InListPassiveTarget that found the card, the
    # card exchanges, the InRelease after them.
    first = next(i for i, e in enumerate(exchanges) if e["cmd"] == 0x40)
    last = next(i for i in range(first, len(exchanges)) if exchanges[i]["cmd"] == 0x52)
    return exchanges[first - 1 : last + 1]


def test_genuine_desfire_granted_by_its_credential_id(rig):
    rec = rig.present(Cd.make_desfire(UID, KEYS, CRED))
    assert (rec.result, rec.card_id, rec.flags & F_LEGACY_UID) == (GRANTED, int.from_bytes(CRED.card_id, "big"), 0)
    assert rec.household == 501 and rec.fee == 40 and rec.floor == 5
    tap = _tap_slice(rig.last_stats)
    assert [e["cmd"] for e in tap] == [0x4A, 0x40, 0x40, 0x40, 0x40, 0x52]
    tot = {
        k: sum(e[k] for e in tap) for k in ("host_frames", "host_bytes", "chip_frames", "chip_bytes", "rf_out", "rf_in")
    }
    assert tot["host_frames"] == 6 and tot["chip_frames"] == 12 and tot["rf_in"] == 70
    print("DESFire tap:", tot)


def test_magic_clone_auth_failed(rig):
    real = Cd.make_desfire(UID, KEYS, CRED)
    for mode in ("wrong_key", "no_app"):
        rec = rig.present(Cd.MagicClone(real, mode))
        assert (rec.result, rec.card_id, rec.fee) == (AUTH_FAILED, 0, 0), mode


def test_ntag_granted_then_replay_denied(rig):
    tag = Cd.make_ntag424(NTAG_UID, KEYS, NTAG_ID, counter=5)
    recording = Cd.RecordingCard(tag)
    rec = rig.present(recording)
    assert (rec.result, rec.card_id, rec.household) == (GRANTED, int.from_bytes(NTAG_ID, "big"), 502)
    rec = rig.present(Cd.MagicClone(tag, "replay", recording.responses))
    assert (rec.result, rec.card_id) == (REPLAY, int.from_bytes(NTAG_ID, "big"))
    assert rig.present(tag).result == GRANTED  # the real tag's counter moved on


def test_card_removed_mid_exchange(rig):
    for n in (1, 3):
        rec = rig.present(Cd.make_desfire(UID, KEYS, CRED), leave_after=n)
        assert (rec.result, rec.card_id) == (CARD_REMOVED, 0), n


@pytest.mark.parametrize("mode", ["garbage", "truncated", "crc"])
def test_faulty_card_garbage(rig, mode):
    rec = rig.present(Cd.FaultyCard(h("04998877665544"), mode))
    assert (rec.result, rec.card_id) == (CARD_GARBAGE, 0)


def test_classic_refused_unless_legacy_then_flagged(rig):
    rec = rig.present(Cd.MifareClassicCard(CLASSIC_UID))
    assert (rec.result, rec.card_id, rec.flags & F_LEGACY_UID) == (
        LEGACY_DISABLED,
        int.from_bytes(CLASSIC_UID, "big"),
        F_LEGACY_UID,
    )
    cfg = dict(CONFIG, legacy_uid=True)
    assert rig.command("CONFIG " + rig.file("legacy.json", json.dumps(cfg).encode())).startswith("OK")
    try:
        rec = rig.present(Cd.MifareClassicCard(CLASSIC_UID))
        assert (rec.result, rec.card_id, rec.flags & F_LEGACY_UID, rec.household) == (
            GRANTED,
            int.from_bytes(CLASSIC_UID, "big"),
            F_LEGACY_UID,
            503,
        )
        # legacy mode never reads an ISO card by its UID
        assert rig.present(Cd.MagicClone(Cd.make_desfire(UID, KEYS, CRED), "wrong_key")).result == AUTH_FAILED
    finally:
        assert rig.command("CONFIG " + rig.file("config.json", json.dumps(CONFIG).encode())).startswith("OK")


def test_link_garbage_and_bad_checksum_still_granted(rig):
    rig.emu.faults.garbage(b"\x55\xaa\x13\x37")
    rig.emu.faults.corrupt_next()
    rec = rig.present(Cd.make_desfire(UID, KEYS, CRED))
    assert rec.result == GRANTED


def test_chip_silent_then_back_reader_recovers(rig):
    emu = rig.emu
    before = rig.status()
    emu.faults.silence()
    time.sleep(2.5)  # polls time out; re-inits fail, once a second
    s = rig.status()  # the reader still answers its commands
    assert s["nfc_chip_errors"] > before["nfc_chip_errors"] and s["next_seq"] == before["next_seq"]
    emu.reset()  # the chip is back (asleep: the reader's wake-up brings it up)
    rec = rig.present(Cd.make_desfire(UID, KEYS, CRED))
    assert (rec.result, rec.card_id) == (GRANTED, int.from_bytes(CRED.card_id, "big"))


def test_heap_after_boot_with_nfc(rig):
    s = rig.status()
    print("heap_free with the NFC stack loaded:", s["heap_free"], "nfc_taps", s["nfc_taps"])
    assert s["heap_free"] > 40000


def test_uplink_and_nfc_together_under_the_heap_limit(tmp_path):
    # A real reader has both: the PN532 stack and the MQTT uplink to a real
    # Mosquitto. Loaded from .py this combination ran out of memory at CONFIG
    # under 192K; from the .mpy build (as deployed) it configures, links up,
    # grants a genuine card and its ride reaches the broker's side.
    with MosquittoInstance(readers={READER: BUILDING}) as broker:
        emu = PN532Emulator().start()
        r = None
        try:
            r = NfcReader(tmp_path, emu)
            cfg = dict(
                CONFIG,
                uplink={
                    "host": broker.host,
                    "port": broker.port,
                    "password": broker.credentials["reader-%d" % READER],
                    "keepalive_s": 10,
                },
            )
            reply = r.command("CONFIG " + r.file("config.json", json.dumps(cfg).encode()))
            assert reply.startswith("OK config"), reply
            assert r.command("WL " + r.file("wl.bin", build_whitelist(KEY, READER, BUILDING, 1, CARDS))).startswith(
                "OK"
            )
            assert r.command("TIME 91000000") == "OK time 91000000"
            end = time.monotonic() + 15
            while r.status().get("uplink") != "up":
                assert time.monotonic() < end, "the uplink did not come up"
                time.sleep(0.1)
            rec = r.present(Cd.make_desfire(UID, KEYS, CRED))
            assert (rec.result, rec.card_id) == (GRANTED, int.from_bytes(CRED.card_id, "big"))
            end = time.monotonic() + 15
            while r.status()["uplink_batches"] < 1:
                assert time.monotonic() < end, "the ride was not sent"
                time.sleep(0.1)
            s = r.status()
            print("heap_free with NFC and uplink:", s["heap_free"])
            assert s["error"] is None and s["heap_free"] > 8000
            assert r.quit() == 0
        finally:
            if r is not None:
                r.kill()
            emu.stop()


def test_ntag_sun_recorded_at_one_reader_replayed_at_another_is_denied(tmp_path):
    # Two virtual readers of one building, each with its own PN532 emulator
    # and uplink to a real Mosquitto, and the gateway daemon: an NTAG tapped
    # at reader A, its recorded SUN replayed at reader B -> REPLAY, since A's
    # counter reached B through the gateway (docs/uplink.md, SUNCTR).
    from liftcard_gateway.config import load_config
    from liftcard_gateway.daemon import Gateway
    from liftcard_gateway.logs import MemoryLog

    ids = (READER, READER + 1)
    keys = {READER: KEY, READER + 1: bytes(range(100, 132))}
    with MosquittoInstance(readers={rid: BUILDING for rid in ids}) as broker:
        gdir = tmp_path / "gw"
        gw_toml = write_gateway_config(gdir, broker, keys, {rid: BUILDING for rid in ids}, client_id="gw-sun-e2e")
        log = MemoryLog()
        records = log.records

        g = Gateway(load_config(gw_toml), log=log)
        gt = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
        gt.start()
        assert g.wait_ready(10)
        emus, readers = [], []
        try:
            for rid in ids:
                emu = PN532Emulator().start()
                emus.append(emu)
                d = tmp_path / f"r{rid}"
                d.mkdir()
                r = NfcReader(d, emu)
                readers.append(r)
                cfg = dict(
                    CONFIG,
                    reader_id=rid,
                    key=keys[rid].hex(),
                    uplink={
                        "host": broker.host,
                        "port": broker.port,
                        "password": broker.credentials["reader-%d" % rid],
                        "keepalive_s": 10,
                    },
                )
                reply = r.command("CONFIG " + r.file("config.json", json.dumps(cfg).encode()))
                assert reply.startswith("OK config"), reply
                wl = build_whitelist(keys[rid], rid, BUILDING, 1, CARDS)
                assert r.command("WL " + r.file("wl.bin", wl)).startswith("OK")
                assert r.command("TIME 91000000") == "OK time 91000000"
            end = time.monotonic() + 20
            while not all(r.status().get("uplink") == "up" for r in readers) or {
                x["reader_id"] for x in records if x["event"] == "status"
            } != set(ids):
                assert time.monotonic() < end, "the uplinks did not come up"
                time.sleep(0.1)
            a, b = readers
            tag = Cd.make_ntag424(NTAG_UID, KEYS, NTAG_ID, counter=5)
            recording = Cd.RecordingCard(tag)
            rec = a.present(recording)
            assert (rec.result, rec.card_id) == (GRANTED, int.from_bytes(NTAG_ID, "big"))
            end = time.monotonic() + 15
            while b.status()["uplink_sun_merged"] < 1:
                assert time.monotonic() < end, "the counter did not reach reader B: %r" % records[-5:]
                time.sleep(0.1)
            assert a.status()["uplink_sun_sent"] == 1
            ev = [x for x in records if x["event"] == "sun_counters"]
            assert [(x["reader_id"], x["raised"], x["forwarded_to"]) for x in ev] == [(READER, 1, [READER + 1])]
            rec = b.present(Cd.MagicClone(tag, "replay", recording.responses))
            assert (rec.result, rec.card_id) == (REPLAY, int.from_bytes(NTAG_ID, "big"))
            assert b.present(tag).result == GRANTED  # the real tag's counter moved on
            assert "%016x" % int.from_bytes(NTAG_ID, "big") not in json.dumps(records)
            for r in readers:
                assert r.status()["error"] is None
                assert r.quit() == 0
        finally:
            for r in readers:
                r.kill()
            for emu in emus:
                emu.stop()
            g.stop()
            gt.join(10)
