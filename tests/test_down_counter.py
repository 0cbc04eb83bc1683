"""The gateway's down counters are never used twice (docs/uplink.md, "The nonce
rule"): across restarts, with the clock going back, and across database
restores from a backup (with a clock that does not go back)."""

import shutil
import sqlite3

from hypothesis import given, settings, strategies as st

from liftcard_gateway.downcounter import RESERVE_US, DownCounter
from liftcard_gateway.store import Store

START_US = 1_795_000_000_000_000  # late 2026


class Clock:
    def __init__(self):
        self.us = START_US
        self.slept = 0.0

    def __call__(self):
        return self.us

    def sleep(self, seconds):
        self.slept += seconds
        self.us += int(seconds * 1e6) + 1


class Gateway:
    """A gateway process's counters on a database file; restart() is a new process."""

    def __init__(self, path, clock):
        self.path = path
        self.clock = clock
        self.store = Store(path)
        self.counter = DownCounter(self.store, clock, clock.sleep)

    def issue(self, n, step_us):
        out = []
        for _ in range(n):
            self.clock.us += step_us
            out.append(self.counter.next())
        return out

    def restart(self, restore_from=None):
        self.store.close()
        if restore_from is not None:
            for suffix in ("-wal", "-shm"):
                p = self.path.with_name(self.path.name + suffix)
                if p.exists():
                    p.unlink()
            shutil.copyfile(restore_from, self.path)
        self.clock.us += 200_000  # a process start takes longer than this
        self.store = Store(self.path)
        self.counter = DownCounter(self.store, self.clock, self.clock.sleep)

    def backup(self, to):
        src = sqlite3.connect(str(self.path))
        dst = sqlite3.connect(str(to))
        src.backup(dst)
        src.close()
        dst.close()


def _assert_strictly_increasing(used):
    assert all(a < b for a, b in zip(used, used[1:])), "a down counter did not grow"


def test_counters_grow_across_a_restart_with_the_clock_set_back(tmp_path):
    clock = Clock()
    gw = Gateway(tmp_path / "gw.db", clock)
    used = gw.issue(5, 10)
    clock.us -= 3600 * 1_000_000  # the Pi booted without its network time: an hour behind
    gw.restart()
    used += gw.issue(5, 10)
    _assert_strictly_increasing(used)
    gw.store.close()


def test_a_quick_restart_waits_for_the_clock_instead_of_running_ahead(tmp_path):
    clock = Clock()
    gw = Gateway(tmp_path / "gw.db", clock)
    used = gw.issue(1, 1)
    gw.restart()  # well within the reservation
    used += gw.issue(1, 1)
    assert 0 < clock.slept <= RESERVE_US / 1e6
    assert used[0] < used[1] <= clock.us
    gw.store.close()


def test_a_backup_restored_after_a_quick_restart_does_not_reuse_counters(tmp_path):
    clock = Clock()
    gw = Gateway(tmp_path / "gw.db", clock)
    used = gw.issue(1, 1)
    gw.restart()
    gw.backup(tmp_path / "backup.db")
    used += gw.issue(1, 1)
    gw.restart(restore_from=tmp_path / "backup.db")
    used += gw.issue(1, 1)
    assert len(set(used)) == len(used)
    gw.store.close()


def test_a_restored_backup_does_not_reuse_counters(tmp_path):
    clock = Clock()
    gw = Gateway(tmp_path / "gw.db", clock)
    used = gw.issue(3, 1)
    gw.backup(tmp_path / "backup.db")
    used += gw.issue(1000, 1)
    gw.restart(restore_from=tmp_path / "backup.db")
    used += gw.issue(3, 1)
    assert len(set(used)) == len(used)
    _assert_strictly_increasing(used)
    gw.store.close()


def test_one_database_write_per_reservation(tmp_path):
    clock = Clock()
    gw = Gateway(tmp_path / "gw.db", clock)
    writes = []
    gw.store.conn.set_trace_callback(
        lambda sql: writes.append(sql) if "down_reserved'" in sql and sql.startswith("INSERT") else None
    )
    gw.issue(1000, 1000)  # one second of messages at 1 kHz
    assert len(writes) == 1 and RESERVE_US > 1_000_000
    gw.issue(1, RESERVE_US)  # past the reserved range: one more
    assert len(writes) == 2
    gw.store.close()


def test_a_database_from_before_reservations_continues_above_its_boot_counters(tmp_path):
    path = tmp_path / "gw.db"
    s = Store(path)
    s.conn.execute("INSERT INTO meta (key, value) VALUES ('boot', ?)", (1 << 30,))
    s.close()
    clock = Clock()
    clock.us = 5  # a clock far behind the old scheme's counters
    gw = Gateway(path, clock)
    assert gw.issue(1, 1)[0] > (((1 << 30) << 32) | 0xFFFFFFFF)
    gw.store.close()


events = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.integers(1, 30), st.integers(1, 2_000_000)),
        st.tuples(st.just("restart"), st.just(0), st.just(0)),
        st.tuples(st.just("backup"), st.just(0), st.just(0)),
        st.tuples(st.just("restore"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("clock_back"), st.integers(1, 10**10), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(events=events, restores=st.booleans())
def test_no_counter_is_used_twice(tmp_path_factory, events, restores):
    """A timeline of restarts and either database restores (with a clock that
    only moves on) or clocks set back (with the database kept)."""
    tmp = tmp_path_factory.mktemp("dc")
    clock = Clock()
    gw = Gateway(tmp / "gw.db", clock)
    used, backups = [], []
    for what, a, b in events:
        if what == "issue":
            used += gw.issue(a, b)
        elif what == "restart":
            gw.restart()
        elif what == "backup":
            backups.append(tmp / ("b%d.db" % len(backups)))
            gw.backup(backups[-1])
        elif what == "restore" and restores and backups:
            gw.restart(restore_from=backups[a % len(backups)])
        elif what == "clock_back" and not restores:
            clock.us -= a
    gw.store.close()
    assert len(set(used)) == len(used), "a down counter was used twice"
    if not restores:
        _assert_strictly_increasing(used)
