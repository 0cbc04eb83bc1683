"""The session-end check (liftcard_testing.leakcheck) on a run of its own: a
test that leaves a process behind (in a session of its own, as Mosquitto used
to be started) fails the run, which names the process and kills it; the same
run without the leak passes. With one process and with two xdist workers."""

import os
import subprocess
import sys

import pytest

from liftcard_testing import procs
from liftcard_testing.wait import wait_for

LEAKY = '''
import subprocess, sys

def test_starts_a_process():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # leaked-on-purpose"],
                         start_new_session=True)
    with open(PIDFILE, "w") as f:
        f.write(str(p.pid))
    if not LEAK:
        p.kill()
        p.wait()
'''


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _run(tmp_path, leak, dist):
    d = tmp_path / ("leak" if leak else "clean")
    d.mkdir()
    (d / "conftest.py").write_text('pytest_plugins = ["liftcard_testing.leakcheck"]\n')
    pidfile = d / "pid"
    (d / "test_inner.py").write_text("PIDFILE = %r\nLEAK = %r\n" % (str(pidfile), leak) + LEAKY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not an xdist worker
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *dist, str(d)],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    pid = int(pidfile.read_text())
    return res, pid


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the check reads /proc")
@pytest.mark.parametrize("dist", [["-p", "no:xdist"], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_process_left_behind_fails_the_run_and_is_killed(tmp_path, dist):
    res, pid = _run(tmp_path, leak=True, dist=dist)
    try:
        out = res.stdout + res.stderr
        assert res.returncode == pytest.ExitCode.TESTS_FAILED, out
        assert "still ran after its last teardown" in out and "leaked-on-purpose" in out, out
        assert "pid %d:" % pid in out, out
        wait_for(lambda: not _alive(pid), 10, "the leaked process to be killed")
    finally:
        procs.kill_pids([pid])


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the check reads /proc")
def test_a_run_that_ends_its_processes_passes(tmp_path):
    res, pid = _run(tmp_path, leak=False, dist=["-p", "no:xdist"])
    assert res.returncode == pytest.ExitCode.OK, res.stdout + res.stderr
    assert not _alive(pid)
