"""A pytest plugin: a test run fails if a process it started is still alive at
its end, and that process is killed.

How it knows: at configure time the run puts procs.MARKER=<fresh uuid> in its
environment; an xdist worker appends its own id (<uuid>/gw0). Every process
the tests start inherits it, even one that changes its session or loses its
parent (orphans are re-parented, their environment stays), so the run finds
them all in /proc/*/environ (Linux; elsewhere the check finds nothing):

- in each process that runs tests (the only one, or each xdist worker), an
  autouse session fixture looks when its last teardown is done, after every
  other fixture: leftovers are listed in an error of the last test and killed;
- in the xdist controller, once the workers are gone, pytest_sessionfinish
  looks for anything of any worker (say a worker crashed), lists it, kills it
  and sets the exit status to "tests failed".

A process gets a few seconds to finish exiting before it counts as left behind.

Load it from a conftest.py: ``pytest_plugins = ["liftcard_testing.leakcheck"]``.
"""

from __future__ import annotations

import os
import uuid

import pytest

from . import procs

_RUN = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller's marker, then its id
        base = os.environ.get(procs.MARKER) or uuid.uuid4().hex
        run = "%s/%s" % (base, workerinput.get("workerid", "worker"))
    else:
        run = uuid.uuid4().hex
    os.environ[procs.MARKER] = run
    config.stash[_RUN] = run


def _describe(left) -> str:
    return "\n".join("  pid %d: %s" % (pid, cmd or "?") for pid, cmd in left)


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_session(request):
    """Set up before any other session fixture, so torn down after all of them."""
    yield
    left = procs.leftovers(request.config.stash[_RUN])
    if left:
        procs.kill_pids(pid for pid, _ in left)
        pytest.fail(
            "%d process(es) started by this test session still ran after its last teardown "
            "(killed now):\n%s" % (len(left), _describe(left)),
            pytrace=False,
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if getattr(config, "workerinput", None) is not None or _RUN not in config.stash:
        return  # a worker: its fixture did the check
    # With xdist the workers themselves hold the bare marker (and may be on
    # their way out): what counts is theirs, <marker>/<worker id>.
    workers = config.pluginmanager.get_plugin("dsession") is not None
    left = procs.leftovers(config.stash[_RUN], nested_only=workers)
    if not left:
        return
    procs.kill_pids(pid for pid, _ in left)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    msg = "%d process(es) started by this test run outlived it (killed now):\n%s" % (len(left), _describe(left))
    if tr is not None:
        tr.ensure_newline()
        tr.write_sep("=", "processes left running", red=True)
        tr.write_line(msg)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
