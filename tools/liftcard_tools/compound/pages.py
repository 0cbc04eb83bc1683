"""Each building's statement page, if the ledger offers one.

The reference ledger may have a `statement` command (`liftcard-ledger
statement --config C --building B --month YYYY-MM --html OUT`); when its
--help answers, a page is written per building and month of the run and its
path returned. When it does not, there is nothing to write and the demo says
nothing about it. Only the ledger's command line is used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LEDGER = "liftcard_tools.ledger"


def _ledger(*args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", LEDGER, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def offered() -> bool:
    try:
        return _ledger("statement", "--help").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def write_statements(config: Path, buildings, months, out_dir: Path) -> list:
    """[(building_id, month, path or None, one-line error or None)] for each building and month."""
    out = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for b in buildings:
        for m in months:
            page = out_dir / ("statement-b%d-%s.html" % (b, m))
            r = _ledger("statement", "--config", config, "--building", b, "--month", m, "--html", page)
            if r.returncode == 0 and page.exists():
                out.append((b, m, page, None))
            else:
                err = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
                out.append((b, m, None, err))
    return out
