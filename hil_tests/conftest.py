"""The hardware-in-the-loop suite's options and its board (hil_tests/README.md).

    python -m pytest hil_tests                       # the virtual serial board
    python -m pytest hil_tests --port /dev/ttyUSB0 --test-uart /dev/ttyUSB1 \\
        --micropython-image ESP32_GENERIC-v1.28.0.bin --gateway-host 192.168.4.1 --wifi-ssid LiftNet

The options are this suite's alone in a run that also collects tests/ (pytest
refuses an option registered twice), and nothing here registers a plugin or
a fixture that tests/conftest.py does: the leak check is loaded here only when
tests/ is not in the run.
"""

import os
import sys

import pytest

LEAKCHECK = "liftcard_testing.leakcheck"

# Nothing of liftcard_testing is imported here while the conftests load, so
# whichever conftest comes first marks it for assertion rewriting before it is
# imported (marking it again after tests/conftest.py imported it would warn).
if "liftcard_testing" not in sys.modules:
    pytest.register_assert_rewrite("liftcard_testing")


REAL_BOARD = ("--test-uart", "--micropython-image", "--gateway-host", "--wifi-ssid")


def pytest_configure(config):
    # The leak check, once: tests/conftest.py names it too; when this suite
    # runs alone, it is loaded here (a late plugin still gets its configure).
    if not config.pluginmanager.has_plugin(LEAKCHECK):
        config.pluginmanager.import_plugin(LEAKCHECK)
    # A real board needs all of it: refused before anything runs, not half way.
    if config.getoption("--port") is not None:
        need = [o for o in REAL_BOARD if not config.getoption(o)]
        if need:
            raise pytest.UsageError("hil_tests --port needs %s too (hil_tests/README.md)" % ", ".join(need))
        if "LIFTCARD_WIFI_PASSWORD" not in os.environ:
            raise pytest.UsageError("hil_tests --port: set LIFTCARD_WIFI_PASSWORD (the reader's Wi-Fi password)")


def pytest_addoption(parser):
    g = parser.getgroup("hil", "hil_tests: a real reader board instead of the virtual serial board")
    g.addoption("--port", default=None, help="the ESP32 board's USB port (its REPL); absent: the virtual serial board")
    g.addoption("--test-uart", default=None, help="with --port: the USB-serial adapter wired to the board's UART1")
    g.addoption("--micropython-image", default=None, help="with --port: the MicroPython .bin that flash writes")
    g.addoption("--gateway-host", default=None, help="with --port: this computer's address on the reader's Wi-Fi")
    g.addoption("--wifi-ssid", default=None, help="with --port: the Wi-Fi the reader joins (LIFTCARD_WIFI_PASSWORD)")


@pytest.fixture
def board_access(request, tmp_path):
    """The board, reached through a hilboard access (virtual or serial)."""
    from hilboard import SerialAccess, VirtualAccess

    opt = request.config.getoption
    if opt("--port") is None:
        access = VirtualAccess(tmp_path)
    else:
        access = SerialAccess(
            opt("--port"), opt("--test-uart"), opt("--micropython-image"), opt("--gateway-host"), opt("--wifi-ssid")
        )
    try:
        yield access
    finally:
        access.close()
