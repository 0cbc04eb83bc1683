"""Each building's statement page, if the ledger offers one.

The reference ledger may have a `statement` command (`liftcard-ledger
statement --config C --building B --month YYYY-MM --html OUT`); when its
--help answers, a page is written per building and month of the run and its
path returned. When it does not, there is nothing to write and the demo says
nothing about it. Only the ledger's command line is used."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .bankside import run_ledger


def offered() -> bool:
    try:
        return run_ledger("statement", "--help").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def write_statements(config: Path, buildings, months, out_dir: Path) -> list:
    """[(building_id, month, path or None, one-line error or None)] for each building and month."""
    out = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for b in buildings:
        for m in months:
            page = out_dir / ("statement-b%d-%s.html" % (b, m))
            r = run_ledger("statement", "--config", config, "--building", b, "--month", m, "--html", page)
            if r.returncode == 0 and page.exists():
                out.append((b, m, page, None))
            else:
                err = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
                out.append((b, m, None, err))
    return out
