"""The gateway daemon and the reference ledger as their own processes
(`python -m liftcard_gateway run`, `python -m liftcard_tools.ledger run`), as
they run in production, with stdout and stderr appended to a log file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from . import procs
from .paths import REPO


def start_module(module: str, args, log_path: str | os.PathLike, cwd=REPO) -> subprocess.Popen:
    """`python -m module args...` (this interpreter), output appended to log_path."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with procs.log_file(log_path) as out:
        return procs.spawn(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(cwd),
        )


def start_gateway(
    config: str | os.PathLike, log_path: str | os.PathLike, *, ready: str | None = None, timeout: float = 20.0
) -> subprocess.Popen:
    """The gateway daemon on `config`. With `ready` (an event name, e.g.
    "subscribed"), returns once its log holds that event; if it exits first or
    the timeout passes, it is stopped and AssertionError carries its log."""
    p = start_module("liftcard_gateway", ["run", "--config", str(config)], log_path)
    if ready is None:
        return p
    needle = '"event":"%s"' % ready
    log = Path(log_path)
    end = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        if needle in text:
            return p
        if p.poll() is not None or time.monotonic() >= end:
            procs.stop(p)
            raise AssertionError(
                "the gateway did not log %s (exit status %s): %s"
                % (ready, p.returncode, log.read_text(errors="replace")[-3000:])
            )
        time.sleep(0.05)


def start_ledger(config: str | os.PathLike, log_path: str | os.PathLike) -> subprocess.Popen:
    """The reference ledger on `config`."""
    return start_module("liftcard_tools.ledger", ["run", "--config", str(config)], log_path)
