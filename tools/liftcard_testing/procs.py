"""Every process the rigs start, and the guarantee that none outlives its user.

- ``spawn()`` is subprocess.Popen for the rigs: the process is registered and
  stopped at interpreter exit if its owner forgot it, and on Linux, started
  from the main thread, it gets SIGTERM when its parent dies
  (PR_SET_PDEATHSIG), so a test worker or a benchmark killed with SIGKILL does
  not leave a broker, a gateway or a reader behind.
- ``stop()``: SIGTERM (and SIGCONT, in case a fault test froze it), then
  SIGKILL after a timeout; always reaped. ``running()`` ties a process to a
  ``with`` block.
- ``MARKER``: the environment variable a test session sets to a value of its
  own; every child inherits it, so ``leftovers()`` can find what a session
  started, whoever its parent is by then (orphans are re-parented), by
  reading /proc/<pid>/environ.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

MARKER = "LIFTCARD_TEST_RUN"

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_PR_SET_PDEATHSIG = 1


def _libc_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _libc_prctl()


def _die_with_parent(parent: int):
    """A preexec_fn: SIGTERM this child when the thread that forked it ends
    (for the main thread: when the parent process dies, however it dies)."""
    prctl = _prctl

    def preexec():
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took hold
            os._exit(1)

    return preexec


def spawn(argv, **popen_kw) -> subprocess.Popen:
    """subprocess.Popen(argv, **popen_kw), registered for stop_all() at exit;
    tied to its parent's life when started from the main thread on Linux
    (a process started from another thread would get SIGTERM when that
    thread ends, so it is not tied)."""
    if "preexec_fn" in popen_kw:
        raise ValueError("spawn() sets preexec_fn itself (use umask=, env=, cwd=)")
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        popen_kw["preexec_fn"] = _die_with_parent(os.getpid())
    p = subprocess.Popen([str(a) for a in argv], **popen_kw)
    with _live_lock:
        _live.add(p)
    return p


def _forget(p: subprocess.Popen) -> None:
    with _live_lock:
        _live.discard(p)


def stop(p: subprocess.Popen | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop p (sig, then SIGKILL after timeout s) and reap it; returns its exit
    status (None for None). A process that already exited is only reaped. Its
    pipes stay open for whoever still reads them."""
    if p is None:
        return None
    try:
        if p.poll() is None:
            try:
                p.send_signal(sig)
                if sig != signal.SIGKILL:
                    p.send_signal(signal.SIGCONT)  # a frozen (SIGSTOP) process handles nothing
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        return p.returncode
    finally:
        _forget(p)


def kill(p: subprocess.Popen | None) -> int | None:
    """SIGKILL (a crash, for fault tests) and reap."""
    return stop(p, sig=signal.SIGKILL)


@contextlib.contextmanager
def running(p: subprocess.Popen, timeout: float = 10.0):
    """with running(spawn(...)) as p: ... -- p is stopped when the block ends."""
    try:
        yield p
    finally:
        stop(p, timeout)


def stop_all(timeout: float = 5.0) -> None:
    """Stop every process spawn() started that is still registered."""
    with _live_lock:
        left = list(_live)
    for p in left:
        stop(p, timeout)


atexit.register(stop_all)


# -- the session marker --------------------------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return False
    state = stat.rpartition(b")")[2].split()[:1]
    return state not in ([b"Z"], [b"X"])  # a zombie has ended; only its parent's wait is missing


def marked(value: str, nested_only: bool = False) -> list[tuple[int, str]]:
    """(pid, command line) of every live process but this one whose
    environment holds MARKER=value or MARKER=value/<anything> (only the latter
    with nested_only). Linux only (/proc); elsewhere []."""
    if not os.path.isdir("/proc"):
        return []
    exact = ("%s=%s" % (MARKER, value)).encode()
    under = exact + b"/"
    if nested_only:
        exact = under
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        env = _read(f"/proc/{name}/environ")
        if not env:
            continue
        if not any(v == exact or v.startswith(under) for v in env.split(b"\0")):
            continue
        if not _alive(int(name)):
            continue
        cmd = (_read(f"/proc/{name}/cmdline") or b"").replace(b"\0", b" ").decode(errors="replace").strip()
        out.append((int(name), cmd[:300]))
    return sorted(out)


def leftovers(value: str, grace: float = 5.0, nested_only: bool = False) -> list[tuple[int, str]]:
    """marked(value, nested_only), after letting processes that are on their
    way out finish for up to `grace` s."""
    end = time.monotonic() + grace
    while True:
        left = marked(value, nested_only)
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.1)


def kill_pids(pids) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def log_file(path: str | os.PathLike):
    """An append-mode binary file for a child's stdout/stderr (the child keeps
    its own descriptor; close this one after spawning)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")
