"""Shared fixtures. The rigs themselves (brokers, virtual readers, the
compiled firmware, configs, the site) live in the liftcard_testing package
(tools/liftcard_testing/); test modules import them from there, never from
each other.

liftcard_testing.leakcheck fails the run if a process it started (a broker, a
reader, a gateway, a ledger...) is still alive at its end, and kills it.
"""

import pytest

# Plain asserts in the rigs report like the tests' own.
pytest.register_assert_rewrite("liftcard_testing")

from liftcard_testing import firmware  # noqa: E402

pytest_plugins = ["liftcard_testing.leakcheck"]


@pytest.fixture
def micropython(tmp_path):
    """run(args, **kw): a MicroPython script to completion in tmp_path
    (liftcard_testing.firmware.run_micropython; the firmware is compiled once,
    the first time a test needs it)."""

    def run(args, **kw):
        return firmware.run_micropython(args, tmp_path, **kw)

    return run


# tests/firmware/ holds MicroPython code, run by test_firmware.py under the real
# micropython binary; CPython must not import it as test modules.
collect_ignore = ["firmware"]
