"""liftcard-provision deploy: the reader firmware onto a board's filesystem.

What goes over is what a reader runs: the .mpy files of build/firmware that
firmware/manifest.py names (built first by mpybuild if the sources changed),
at the same relative paths. Only files whose sha256 differs from the board's
(hashed on the board, one exec'd snippet for all of them) are copied.

Never a mix of two firmware sets, whenever the power or the cable goes:

1. **Stage**: each changed file is written to ``.fw-new/<path>`` and its hash
   checked on the board. The running set is not touched; an interrupted stage
   leaves the old set whole, and the next deploy keeps what was already staged
   with the right hash.
2. **Commit**: ``.fw-new/COMMIT`` (the paths to move, the stale modules to
   remove), written as ``COMMIT.tmp`` and renamed: littlefs renames are atomic,
   so from that instant the new set is the one the board must run.
3. **Switch**: ``APPLY`` (below, run on the board) renames each staged file
   over its live path, removes the stale ones, then the marker and the
   staging directory. It is idempotent: a deploy that finds a COMMIT finishes
   it first (roll forward), and so does the board at boot, before main.py
   imports anything (docs/technicians.md, "deploy"): ``APPLY`` is boot.py's
   own ``_fw_apply``, read out of firmware/boot.py.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from . import mpybuild
from .boardlink import Board, BoardError

STAGE = ".fw-new"
MARKER = STAGE + "/COMMIT"

# Run on the board: finish a committed switch (idempotent; a no-op without a
# marker). One source: the function firmware/boot.py defines, which a board
# runs at every boot to finish a switch a power cut interrupted, taken out of
# that file here, so the deploy and the board can never switch differently.
BOOT_PY = mpybuild.FIRMWARE / "boot.py"


def _boot_switch(path: Path = BOOT_PY) -> str:
    src = path.read_text()
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef) and node.name == "_fw_apply":
            return "import os, json\n" + ast.get_source_segment(src, node) + "\n"
    raise RuntimeError("%s defines no _fw_apply: the deploy switch lives there" % path)


APPLY = _boot_switch()

# Removes the staging directory (files first, deepest directories first).
_CLEAN = """
import os
def _rm(d):
    try:
        it = list(os.ilistdir(d))
    except OSError:
        return
    for e in it:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _rm(p)
        else:
            os.remove(p)
    os.rmdir(d)
_rm(%r)
del _rm
"""


def firmware_files(out: Path = mpybuild.DEFAULT_OUT) -> tuple[list[tuple[Path, str]], list[str]]:
    """([(local file, board path)], the manifest's packages) of the built tree,
    building it first if needed."""
    try:
        mpybuild.build(out, quiet=True)
        files = [(out / rel, rel.as_posix()) for _src, rel in mpybuild.board_files()]
        packages = mpybuild.read_manifest().packages
    except mpybuild.BuildError as e:
        raise BoardError("cannot build the firmware: %s" % e) from None
    return files, packages


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finish(board: Board) -> int:
    """Finish a committed switch if one is pending; the files it moved."""
    n = int(board.exec(APPLY + "print(_fw_apply(%r))\ndel _fw_apply" % STAGE).strip() or 0)
    return n


def deploy(board: Board, files: list[tuple[Path, str]], packages: list[str], say=print) -> dict:
    """Bring the board's firmware to `files`; returns counts. `say`: progress lines."""
    resumed = 0
    if board.hashes([MARKER])[MARKER] is not None:
        say("finishing the switch of an interrupted deploy")
        resumed = finish(board)
    want = {rel: _sha(local) for local, rel in files}
    local = {rel: p for p, rel in files}
    have = board.hashes(list(want) + [STAGE + "/" + r for r in want])
    changed = [r for r in want if have[r] != want[r]]
    on_board = [p for pkg in packages for p in board.walk(pkg)]
    stale = sorted(p for p in on_board if p not in want)
    if not changed and not stale:
        board.exec(_CLEAN % STAGE)
        return {"copied": 0, "staged_before": 0, "removed": 0, "unchanged": len(want), "resumed": resumed}

    copied = kept = 0
    total_bytes = sum(local[r].stat().st_size for r in changed)
    sent = 0
    for i, rel in enumerate(changed, 1):
        size = local[rel].stat().st_size
        if have[STAGE + "/" + rel] == want[rel]:
            kept += 1
            say("[%d/%d] %s: already staged" % (i, len(changed), rel))
        else:
            say("[%d/%d] %s (%d bytes)" % (i, len(changed), rel, size))
            board.write_file(STAGE + "/" + rel, local[rel].read_bytes())
            copied += 1
        sent += size
    staged = board.hashes([STAGE + "/" + r for r in changed])
    bad = [r for r in changed if staged[STAGE + "/" + r] != want[r]]
    if bad:
        raise BoardError(
            "%d file(s) arrived damaged on %s (first: %s); nothing was switched: run deploy again"
            % (len(bad), board.port, bad[0])
        )
    plan = json.dumps({"move": changed, "remove": stale}).encode()
    board.write_file(MARKER + ".tmp", plan)
    board.rename(MARKER + ".tmp", MARKER)  # the commit point
    moved = finish(board)
    board.exec(_CLEAN % STAGE)
    after = board.hashes(list(want))
    if after != want:
        wrong = [r for r in want if after[r] != want[r]]
        raise BoardError("after the switch %s differs on %s: run deploy again" % (wrong[0], board.port))
    say("switched %d file(s), removed %d stale, %d bytes staged" % (moved, len(stale), total_bytes))
    return {
        "copied": copied,
        "staged_before": kept,
        "removed": len(stale),
        "unchanged": len(want) - len(changed),
        "resumed": resumed,
    }
