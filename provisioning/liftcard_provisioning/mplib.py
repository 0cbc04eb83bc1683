"""Fetch the locked micropython-lib files from the package index, hash-checked.

micropython-lib's sdists on the package index carry no setup.py, so pip cannot
install them. This reads ``firmware/micropython-lib.lock``, asks the index that
pip itself is configured with for each package by name (PEP 691 JSON simple
API), downloads the pinned sdist, refuses it unless its sha256 matches the lock,
and copies the listed members into ``firmware/lib/``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "firmware" / "micropython-lib.lock"
DEST = REPO / "firmware" / "lib"


class LockError(Exception):
    """A lock entry could not be fetched or did not verify."""


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    sha256: str
    members: tuple[str, ...]

    @property
    def project(self) -> str:
        return re.sub(r"[-_.]+", "-", self.name).lower()


def read_lock(path: Path = LOCK) -> list[Locked]:
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 4 or not re.fullmatch(r"[0-9a-f]{64}", parts[2]):
            raise LockError(f"{path.name}:{lineno}: expected 'name version sha256 member...'")
        entries.append(Locked(parts[0], parts[1], parts[2], tuple(parts[3:])))
    return entries


def index_url() -> str:
    """The simple index pip uses here (PIP_INDEX_URL, pip config, or pip's default)."""
    env = os.environ.get("PIP_INDEX_URL")
    if env:
        return env.rstrip("/")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().rstrip("/")
    except (OSError, subprocess.SubprocessError):
        pass
    from pip._internal.models.index import PyPI  # pip's own default index

    return PyPI.simple_url.rstrip("/")


def _get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def fetch_one(entry: Locked, index: str, dest: Path = DEST) -> list[Path]:
    listing = json.loads(_get(f"{index}/{entry.project}/", "application/vnd.pypi.simple.v1+json"))
    wanted = None
    for f in listing.get("files", []):
        if f.get("hashes", {}).get("sha256") == entry.sha256:
            wanted = f
            break
    if wanted is None:
        raise LockError(f"{entry.name} {entry.version}: no file on the index has the locked sha256")
    data = _get(wanted["url"])
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise LockError(f"{entry.name} {entry.version}: sha256 mismatch (got {digest})")
    written = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        by_suffix = {}
        for m in tar.getmembers():
            if m.isfile():
                by_suffix[m.name.split("/", 1)[-1]] = m
        for member in entry.members:
            m = by_suffix.get(member)
            if m is None:
                raise LockError(f"{entry.name} {entry.version}: sdist has no {member}")
            out = dest / member
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(m).read())
            written.append(out)
    return written


def installed(dest: Path = DEST, lock: Path = LOCK) -> bool:
    stamp = dest / ".lock-sha256"
    return stamp.exists() and stamp.read_text() == hashlib.sha256(lock.read_bytes()).hexdigest()


def fetch_all(dest: Path = DEST, lock: Path = LOCK, quiet: bool = False) -> None:
    if installed(dest, lock):
        return
    index = index_url()
    for entry in read_lock(lock):
        files = fetch_one(entry, index, dest)
        if not quiet:
            print(
                f"micropython-lib: {entry.name} {entry.version} verified -> "
                + ", ".join(str(p.relative_to(dest)) for p in files)
            )
    (dest / ".lock-sha256").write_text(hashlib.sha256(lock.read_bytes()).hexdigest())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=DEST, help="where the files go (default firmware/lib)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        fetch_all(args.dest, quiet=args.quiet)
    except (LockError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
