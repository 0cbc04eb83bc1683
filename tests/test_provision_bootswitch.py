"""A board that lost power inside a deploy's switch (step 3 of
liftcard_provisioning.deploy: the renames behind the COMMIT marker) boots the
complete new firmware, never a mix: firmware/boot.py finishes the switch
before main.py imports anything.

On the virtual serial board, which runs what is on its littlefs image as a
board does: the switch is run by the deploy's own APPLY code on the board,
cut before its k-th file operation for every k (a rename or a remove is atomic
on littlefs, so between two of them is where a power cut can leave it), then
the power goes and comes back."""

import ast
import json

import pytest

pytest.importorskip("mpremote")

from liftcard_provisioning import boardlink, deploy as D, mpybuild
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

# The switch under test: three modules and boot.py itself move in, a module
# the new firmware no longer has goes.
MOVE = ["liftcard/u32.mpy", "liftcard/crc.mpy", "boot.py", "main.py"]
STALE = "liftcard/retired.mpy"
OPS = len(MOVE) + 1 + 1  # the renames, the stale module's removal, the marker's removal

# Run on the board after APPLY: the switch with its file operations counted,
# stopped (as by a power cut) before operation number %d.
_CUT_AT = """
import os as _os
class _Cut(Exception):
    pass
class _CutOs:
    def __init__(self, k):
        self.k = k
        self.n = 0
    def _op(self):
        if self.n >= self.k:
            raise _Cut()
        self.n += 1
    def mkdir(self, d):
        _os.mkdir(d)
    def rename(self, a, b):
        self._op()
        _os.rename(a, b)
    def remove(self, p):
        self._op()
        _os.remove(p)
os = _CutOs(%d)
try:
    _fw_apply()
    print('DONE')
except _Cut:
    print('CUT')
"""


def _function(source: str, name: str) -> str:
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.dump(node)
    raise AssertionError("no %s in the source" % name)


def test_boot_py_runs_the_same_switch_as_deploy():
    boot = (mpybuild.FIRMWARE / "boot.py").read_text()
    assert _function(boot, "_fw_apply") == _function(D.APPLY, "_fw_apply")


def test_the_deploy_switch_is_read_out_of_boot_py(tmp_path):
    """One source: what deploy runs is whatever boot.py's _fw_apply is."""
    boot = (mpybuild.FIRMWARE / "boot.py").read_text()
    changed = tmp_path / "boot.py"
    changed.write_text(boot.replace("    n = 0\n", "    n = 0  # another release\n    n += 0\n", 1))
    got = D._boot_switch(changed)
    assert "n += 0" in got and _function(got, "_fw_apply") == _function(changed.read_text(), "_fw_apply")
    changed.write_text("print('no switch here')\n")
    with pytest.raises(RuntimeError, match="defines no _fw_apply"):
        D._boot_switch(changed)


def _switch_cut_at(link, cut: int, new: dict) -> None:
    """The old set on the board, the new one staged and committed, and the
    switch run until just before file operation number `cut`."""
    # The old set: what MOVE names differs from the build, and a module the
    # new set drops. An old main.py that does not start the reader: if it
    # ran, READY would never come.
    for rel in MOVE:
        old = b"print('old main')\n" if rel == "main.py" else b"old " + rel.encode()
        if rel == "boot.py":
            old = new[rel] + b"# the previous release\n"
        link.write_file(rel, old)
    link.write_file(STALE, b"old module")
    # Staged and committed, as deploy leaves it just before the switch.
    for rel in MOVE:
        link.write_file(D.STAGE + "/" + rel, new[rel])
    link.write_file(D.MARKER, json.dumps({"move": MOVE, "remove": [STALE]}).encode())
    assert link.exec(D.APPLY + _CUT_AT % cut).strip() == "CUT"


@pytest.mark.parametrize("cut", range(OPS))
def test_a_power_cut_at_each_step_of_the_switch_boots_the_new_set(tmp_path, cut):
    files, _ = D.firmware_files()
    new = {rel: local.read_bytes() for local, rel in files}
    want = {rel: D._sha(local) for local, rel in files}
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        with boardlink.connect(b.usb) as link:
            _switch_cut_at(link, cut, new)
        b.power_off()
        b.power_on()
        port.until("READY")  # the new main.py and modules run
        with boardlink.connect(b.usb) as link:
            after = link.hashes(list(want) + [STALE, D.MARKER])
    assert after == dict(want, **{STALE: None, D.MARKER: None})


def test_a_soft_reset_finishes_the_switch_too(tmp_path):
    """boot.py runs at a soft reset as at a power-on (mpremote's, from the raw
    REPL, which runs no main.py): the next command already sees the new set."""
    files, _ = D.firmware_files()
    new = {rel: local.read_bytes() for local, rel in files}
    want = {rel: D._sha(local) for local, rel in files}
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        with boardlink.connect(b.usb) as link:
            _switch_cut_at(link, 2, new)
            link.soft_reset()
            after = link.hashes(list(want) + [STALE, D.MARKER])
    assert after == dict(want, **{STALE: None, D.MARKER: None})
