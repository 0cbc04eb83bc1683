"""liftcard-provision selftest drives the reader's outputs as a tap does, so a
technician hears the relay click at installation: on the virtual serial board
the host board reports them (as board_esp32 drives the pins) on its output,
which at the raw REPL is the USB port."""

import json

import pytest

pytest.importorskip("mpremote")

from liftcard_provisioning import boardlink, cli, selftest
from liftcard_testing.reader import CONFIG, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard


def test_selftest_pulses_the_relay_and_beeps(tmp_path, capsys):
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps(CONFIG))
        assert port.command("CONFIG %s" % cfg).startswith("OK config reader %d" % READER)
        cli.main(["selftest", "--port", b.usb, "--json"])
        out, err = capsys.readouterr()
        checks = {c["check"]: c for c in json.loads(out)["checks"]}
        assert checks["relay"]["state"] == "OK", checks["relay"]
        ms = int(checks["relay"]["detail"].split()[1])
        assert ms >= 300
        port.until("READY")  # the reader runs again after the selftest
        with boardlink.connect(b.usb) as board:
            out = board.exec(selftest.board_code(1.0), timeout=60)
        wanted = ["RELAY ON", "LED GREEN", "BEEP OK", "RELAY OFF", "LED RED", "BEEP DENY"]
        assert [x.strip() for x in out.splitlines() if x.strip() in wanted] == wanted, out
