"""Where the pieces of the source checkout are (the rigs run from one)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
TESTS = REPO / "tests"
MP_TESTS = TESTS / "firmware"  # MicroPython test modules, run by tests/test_firmware.py
VECTORS = TESTS / "vectors"
