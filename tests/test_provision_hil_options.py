"""hil_tests' command line (hil_tests/conftest.py): without --port the suite
takes the virtual serial board; with --port, a real board, which needs its
test UART, a MicroPython image, the gateway's address and the Wi-Fi: a
missing one is refused as a usage error before anything runs (no board is
flashed half way)."""

import os
import subprocess
import sys

from liftcard_testing import procs
from liftcard_testing.paths import REPO


def pytest_run(*args, env=None):
    p = procs.spawn(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    try:
        out, _ = p.communicate(timeout=120)
    finally:
        procs.stop(p)
    return p.returncode, out.decode(errors="replace")


def test_a_real_board_needs_every_option():
    env = {k: v for k, v in os.environ.items() if k != "LIFTCARD_WIFI_PASSWORD"}
    rc, out = pytest_run("hil_tests", "--collect-only", "-q", "--port", "/dev/ttyUSB9", env=env)
    assert rc == 4, out  # pytest's usage error
    assert "hil_tests --port needs --test-uart, --micropython-image, --gateway-host, --wifi-ssid too" in out
    full = ["--test-uart", "/dev/ttyUSB8", "--micropython-image", "mp.bin", "--gateway-host", "10.0.0.2"]
    rc, out = pytest_run(
        "hil_tests", "--collect-only", "-q", "--port", "/dev/ttyUSB9", *full, "--wifi-ssid", "L", env=env
    )
    assert rc == 4 and "set LIFTCARD_WIFI_PASSWORD" in out, out


def test_the_options_are_the_suites_own_in_a_whole_run():
    """tests/ and hil_tests/ in one run: no option or plugin registered twice."""
    rc, out = pytest_run("tests/test_provision_hil_options.py", "hil_tests", "--collect-only", "-q")
    assert rc == 0, out
    assert "hil_tests/test_path.py::test_blank_board_to_registered_reader_with_every_ride_once" in out
    assert "Warning" not in out
