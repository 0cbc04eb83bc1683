"""Firmware tests: each `test_*` function in tests/firmware/test_*.py runs in its
own real MicroPython process with the production heap limit (192K), on littlefs
over a 2 MB file-backed block device and a NOR-rules log partition."""

import re

import pytest

from liftcard_testing.firmware import run_micropython
from liftcard_testing.paths import MP_TESTS


def _collect():
    for path in sorted(MP_TESTS.glob("test_*.py")):
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M):
            yield pytest.param(path.stem, name, id=f"{path.stem}::{name}")


@pytest.mark.parametrize("module,function", list(_collect()))
def test_micropython(module, function, tmp_path):
    res = run_micropython([str(MP_TESTS / "mprun.py"), module, function], tmp_path)
    out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    assert res.returncode == 0 and f"PASS {function}" in out, out
