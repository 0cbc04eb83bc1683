"""The technician's whole path, as one flow on one board, then the rides'
(docs/technicians.md): a blank board is flashed, gets the reader firmware
(deploy) and its config (configure), is registered with a running gateway
(register: the gateway's key, broker login and ACL), checks itself
(selftest), serves taps through its test port, loses its power in the middle
of a burst, has its log harvested over USB, and every ride it logged is in
the gateway's database exactly once, byte for byte.

The same code drives the virtual serial board (default) and a real ESP32
(--port ...): only hilboard's access differs (how the board is reached and
how its power is cut). Every step goes through the real commands:
liftcard-provision and liftcard-gateway as subprocesses, the real Mosquitto,
the gateway daemon as its own process."""

import json
import os
import secrets
import subprocess
import sys

import pytest

pytest.importorskip("mpremote")
pytest.importorskip("esp32_mock_bootloader")

from hilsite import GatewaySite, gateway_cli

from liftcard_protocol.harvest import SOURCE_LIVE, unpack_harvest
from liftcard_protocol.whitelist import build_whitelist
from liftcard_provisioning import boardlink, deploy as D
from liftcard_testing import procs
from liftcard_testing.reader import BUILDING, CARDS, CONFIG, KEY, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.wait import wait_for

BURST = 30  # taps sent in one go, the power cut lands somewhere in them


# The path's config file gives the key and the broker password: a variable a
# developer exported for another reader would be refused beside them.
_FILE_SECRETS = ("LIFTCARD_READER_KEY", "LIFTCARD_BROKER_PASSWORD")


def provision(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    p = procs.spawn(
        [sys.executable, "-m", "liftcard_provisioning.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in _FILE_SECRETS},
    )
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        procs.stop(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, "%s: exit %d\n%s" % (" ".join(r.args[3:5]), r.returncode, r.stderr[-3000:])
    return r.stdout


def until_ready(line: TtyLines) -> None:
    """Lines up to the reader's READY; a cut can leave half a line before it."""
    while "READY" not in line.readline():
        pass


def uplink_up(line: TtyLines) -> bool:
    return line.status().get("uplink") == "up"


@pytest.fixture
def site(board_access, tmp_path):
    s = GatewaySite(tmp_path / "gateway", board_access.listen, board_access.uplink_host)
    try:
        s.start()
        yield s
    finally:
        s.close()


def test_blank_board_to_registered_reader_with_every_ride_once(board_access, site, tmp_path):
    a = board_access
    secrets_shown = [KEY.hex()]

    # -- flash: MicroPython and the reader partition table -----------------
    with a.flash_target() as (image, port):
        done = json.loads(ok(provision("flash", image, "--port", port, "--json")))
    assert done["chip"] == "ESP32" and done["max_rides"] > 0
    a.power_up()
    with TtyLines(a.test, timeout=60) as line:
        # -- deploy: the reader firmware onto the blank filesystem ---------
        files, _ = D.firmware_files()
        done = json.loads(ok(provision("deploy", "--port", a.usb, "--json")))
        assert done["copied"] + done["unchanged"] == len(files)
        until_ready(line)  # the deployed firmware runs

        # -- configure: ids, tariff, the gateway's broker, the secrets -----
        broker_pw = secrets.token_urlsafe(18)
        secrets_shown.append(broker_pw)
        cfg = dict(CONFIG, uplink={"host": a.uplink_host, "port": site.port, "password": broker_pw})
        f = tmp_path / "reader.json"
        f.write_text(json.dumps(cfg))
        f.chmod(0o600)
        wifi = ["--wifi-ssid", a.wifi_ssid] if a.wifi_ssid else []
        out = ok(provision("configure", "--port", a.usb, "--file", f, *wifi))
        assert "reader %d, building %d" % (READER, BUILDING) in out
        until_ready(line)
        # Its card list, as the building's cards office signs it.
        with boardlink.connect(a.usb) as b:
            b.write_file("hil-wl.bin", build_whitelist(KEY, READER, BUILDING, 1, CARDS))
            b.close(run=True)
        until_ready(line)
        assert line.command("WL hil-wl.bin") == "OK whitelist v1 2 cards"

        # -- register: the gateway learns the reader's key and login -------
        r = provision("register", "--port", a.usb, "--gateway-config", site.config)
        assert "registered reader %d" % READER in ok(r)
        for text in (r.stdout, r.stderr):
            assert not any(s in text for s in secrets_shown)
        until_ready(line)
        site.start_daemon()  # the daemon reads its readers when it starts
        wait_for(lambda: uplink_up(line), 60, "the reader's uplink to the gateway", interval=0.5)

        # -- selftest ------------------------------------------------------
        r = provision("selftest", "--port", a.usb, "--json", "--settle", "30")
        checks = {c["check"]: c for c in json.loads(ok(r))["checks"]}
        assert checks["uplink"]["state"] == "OK", checks["uplink"]
        # the gateway answers the reader's first STATUS with the time: selftest waits for it
        assert checks["clock"]["state"] == "OK", checks["clock"]
        assert checks["whitelist"]["detail"].startswith("version 1, 2 cards")
        assert all(c["state"] != "FAIL" for c in checks.values()), checks
        until_ready(line)
        wait_for(lambda: uplink_up(line), 60, "the uplink after the selftest", interval=0.5)

        # -- taps through the test port, each at the gateway ---------------
        taps = [line.tap(CARDS[i % 2].card_id, 1 + i % 6) for i in range(8)]
        assert [t.seq for t in taps] == list(range(1, 9))
        wait_for(lambda: site.ride_count(READER) == len(taps), 60, "the 8 rides at the gateway", interval=0.5)

        # -- a power cut in the middle of a burst --------------------------
        line.send(b"".join(b"TAP %016x %d\n" % (CARDS[i % 2].card_id, i % 7) for i in range(BURST)))
        line.until("RIDE ")
        a.cut()
        until_ready(line)
        logged = line.dump(1)
        assert logged[: len(taps)] == taps
        assert [r.seq for r in logged] == list(range(1, len(logged) + 1))  # no gap, no repeat
        assert len(taps) < len(logged) <= len(taps) + BURST

        # -- harvest: the log over USB -------------------------------------
        hf = tmp_path / "reader.lchv"
        ok(provision("harvest", "--port", a.usb, "--out", hf))
        h = unpack_harvest(hf.read_bytes())
        assert (h.reader_id, h.building_id, h.source) == (READER, BUILDING, SOURCE_LIVE)
        assert list(h.records) == logged
        until_ready(line)

        # -- every ride at the gateway, exactly once -----------------------
        wait_for(lambda: site.ride_count(READER) == len(logged), 90, "every logged ride at the gateway", interval=0.5)
    site.stop_daemon()
    r = gateway_cli("import", hf, "--config", site.config)
    assert r.returncode == 0, r.stderr
    assert "0 new, %d already held" % len(logged) in r.stdout
    assert site.rides(READER) == logged
