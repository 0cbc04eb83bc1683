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
   it first (roll forward), and so should the board at boot, before main.py
   imports anything (see docs/technicians.md, "deploy": boot.py runs the
   same ``APPLY`` text).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import mpybuild
from .boardlink import Board, BoardError

STAGE = ".fw-new"
MARKER = STAGE + "/COMMIT"

# Run on the board (and, for a switch cut by a power loss, by boot.py): finish
# a committed switch. Idempotent; a no-op without a marker.
APPLY = """
import os, json
def _fw_apply(stage='.fw-new'):
    try:
        with open(stage + '/COMMIT') as f:
            plan = json.load(f)
    except OSError:
        return 0
    n = 0
    for p in plan['move']:
        d = ''
        for c in p.split('/')[:-1]:
            d = d + '/' + c if d else c
            try:
                os.mkdir(d)
            except OSError:
                pass
        try:
            os.rename(stage + '/' + p, p)
            n += 1
        except OSError:
            pass
    for p in plan['remove']:
        try:
            os.remove(p)
        except OSError:
            pass
    os.remove(stage + '/COMMIT')
    return n
"""

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
