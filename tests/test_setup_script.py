"""scripts/setup.sh, sourced by hand as the README says: it leaves the caller's
shell options alone (a `set -e` leaking into an interactive shell closes it at
the next failing command) and puts the venv first on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sourcing_setup_keeps_the_callers_shell_options():
    script = 'source scripts/setup.sh >/dev/null; echo "flags=$-"; set -o | grep -E "^(errexit|nounset|pipefail)"; echo "path=$PATH"'
    env = dict(os.environ, LIFTCARD_NO_APT="1")
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) if "\t" in line else line.split("=", 1) for line in out.stdout.splitlines())
    assert "e" not in lines["flags"] and "u" not in lines["flags"], out.stdout
    for opt in ("errexit", "nounset", "pipefail"):
        assert lines[opt].strip() == "off", out.stdout
    assert lines["path"].split(":")[0] == str(ROOT / ".venv" / "bin")


def test_a_failing_setup_returns_instead_of_closing_the_shell(tmp_path):
    # A setup that cannot finish (here: no python3 on PATH) says so and returns 1; the caller goes on.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "cat", "sha256sum", "cut", "id", "ls", "grep"):
        src = subprocess.run(["bash", "-c", "command -v " + tool], capture_output=True, text=True).stdout.strip()
        if src:
            (bindir / tool).symlink_to(src)
    script = 'source scripts/setup.sh; echo "rc=$?"; echo still-here'
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={"PATH": str(bindir), "LIFTCARD_NO_APT": "1", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "rc=1" in out.stdout and "still-here" in out.stdout, (out.stdout, out.stderr)
    assert "setup: failed" in out.stderr
