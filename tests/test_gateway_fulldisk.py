"""A full disk and read-only database files, for real (docs/gateway.md, "A full
disk"): a small tmpfs filled to the last byte, and SQLite's -shm left read-only
for the daemon's user. Every path names the real cause and the file, never a
secondary "cannot rollback" nor a bare OperationalError; a start recovers when
it safely can (its own read-only -shm)."""

import contextlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from liftcard_gateway import db
from liftcard_gateway.broker import find_tool
from liftcard_gateway.store import Store
from liftcard_protocol.link import ReaderStatus
from liftcard_protocol.ride import RideRecord
from liftcard_testing.daemonrig import daemon_broker, daemon_rig, db_rides
from liftcard_testing.logcapture import EventLog

READERS = {7: 12}
FULL = "database or disk is full"


def ride(seq):
    return RideRecord(
        seq=seq, time=1000 + seq, uptime=seq, card_id=0xFEDCBA9876543210, household=42, floor=3, fee=30, result=0,
        flags=0, boot=1,
    )  # fmt: skip


@contextlib.contextmanager
def small_disk(size="4m"):
    """A tmpfs of `size` (root only; skipped elsewhere), unmounted at the end."""
    d = Path(tempfile.mkdtemp(prefix="lc-disk-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(d)], capture_output=True)
    if r.returncode:
        d.rmdir()
        pytest.skip("cannot mount a tmpfs here (needs root): %s" % r.stderr.decode(errors="replace").strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


def fill(disk: Path) -> Path:
    """Take every free byte of disk; returns the filler (delete it to free them)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
    return filler


def test_every_store_write_on_a_full_disk_names_the_full_disk():
    with small_disk() as disk:
        path = disk / "data" / "gateway.db"
        s = Store(path)
        try:
            s.ensure_reader(7, 12)
            s.store_batch(7, 1, [ride(i) for i in range(1, 11)])
            filler = fill(disk)
            writes = {
                "store_batches": lambda: s.store_batches([(7, 2, [ride(i) for i in range(11, 3000)])]),
                "import_rides": lambda: s.import_rides(7, [ride(i) for i in range(3000, 6000)]),
                "ensure_reader": lambda: [s.ensure_reader(r, 12) for r in range(100, 3000)],
                "store_status": lambda: [s.store_status(7, 2 + i, ReaderStatus(1, 2, 3, 4)) for i in range(3000)],
                "merge_sun": lambda: s.merge_sun(7, 12, 5000, [(c, 1) for c in range(1, 5000)]),
                "reserve_down_counters": lambda: [s.reserve_down_counters(10**15 + i, 1) for i in range(3000)],
            }
            for name, write in writes.items():
                with pytest.raises(sqlite3.OperationalError) as e:
                    write()
                assert FULL in str(e.value), (name, str(e.value))
                assert "rollback" not in str(e.value).lower() and not getattr(e.value, "__notes__", None), name
                assert not s.conn.in_transaction, name
                why = db.explain(path, e.value)
                assert why is not None and str(path) in why and "the disk is full" in why, (name, why)
            assert s.ride_count(7) == 10 and s.acked_seq(7) == 10  # each write all or nothing
            filler.unlink()  # room again: the same writes go in
            assert s.store_batch(7, 2, [ride(i) for i in range(11, 3000)]).ack_seq == 2999
        finally:
            s.close()


def test_a_restart_on_a_full_disk_says_so_and_names_the_file(tmp_path):
    """The daemon stopped, the disk filled up, the daemon started again: its one
    line names gateway.db and the full disk, exit 1, no traceback."""
    with small_disk() as disk:
        path = disk / "data" / "gateway.db"
        s = Store(path)
        s.ensure_reader(7, 12)
        s.store_batch(7, 1, [ride(i) for i in range(1, 21)])
        s.close()
        fill(disk)
        with pytest.raises(sqlite3.Error) as e:
            Store(path).ensure_reader(8, 12)
        why = db.explain(path, e.value)
        assert why is not None and str(path) in why and "the disk is full" in why, why
        with daemon_broker(READERS) as broker:
            cfg = _config(tmp_path / "gw", broker, data_dir=disk / "data")
            r = subprocess.run(
                [sys.executable, "-m", "liftcard_gateway", "run", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert str(path) in lines[0] and "the disk is full" in lines[0], lines[0]


def _config(dirpath: Path, broker, data_dir: Path) -> Path:
    from liftcard_testing.configs import write_gateway_config

    cfg = write_gateway_config(dirpath, broker, {7: secrets.token_bytes(32)}, READERS)
    text = cfg.read_text()
    assert 'data_dir = "' in text
    lines = [('data_dir = "%s"' % data_dir) if ln.startswith("data_dir = ") else ln for ln in text.splitlines()]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@pytest.fixture(scope="module")
def broker():
    try:
        find_tool("mosquitto")
    except Exception:  # pragma: no cover
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    with daemon_broker(READERS) as b:
        yield b


def test_the_daemon_journal_names_the_full_disk_and_the_file(broker):
    with small_disk() as disk:
        keys = {7: secrets.token_bytes(32)}
        log = EventLog()
        with daemon_rig(disk / "gw", broker, keys, log) as (g, cfg, log, reader):
            r = reader(7)
            r.send(range(1, 6))
            assert r.ack() == 5
            filler = fill(disk)
            r.publish(r.rides_msg(range(6, 33)))
            ev = log.wait(lambda x: x["event"] == "error")
            assert ev["error"] == "OperationalError" and ev["message"] == FULL, ev
            assert ev["file"] == str(cfg.db_path) and "the disk is full" in ev["cause"], ev
            r.no_ack()
            filler.unlink()
            r.send(range(6, 33))  # the reader's resend, once there is room
            assert r.ack() == 32
            assert db_rides(cfg, 7) == list(range(1, 33))


# -- a read-only -shm --------------------------------------------------------------------------

# Run as an unprivileged user (root writes a 0444 file anyway): the child imports
# as root, then drops to `nobody`, then opens the database.
CHILD = textwrap.dedent(
    """
    import os, sys, importlib.metadata, sqlite_utils
    from liftcard_gateway import db
    from liftcard_gateway.store import Store
    sqlite_utils.Database(memory=True)
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    path = sys.argv[2] + "/gateway.db"
    if sys.argv[1] == "make":
        s = Store(path)
        s.ensure_reader(7, 12)
        os._exit(0)  # killed: -wal and -shm stay
    try:
        s = Store(path)
        s.ensure_reader(7, 12)
        print("OK", *s.repaired, sep="\\n")
    except Exception as e:
        print("ERR", db.explain(path, e) or "%s: %s" % (type(e).__name__, e), sep="\\n")
    """
)


@pytest.fixture
def nobody_dir():
    d = Path(tempfile.mkdtemp(prefix="lc-ro-"))
    try:
        if os.geteuid() == 0:
            os.chown(d, 65534, 65534)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _child(*args):
    r = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


def test_a_read_only_shm_of_its_own_is_made_writable_and_the_start_goes_on(nobody_dir):
    _child("make", nobody_dir)
    shm = nobody_dir / "gateway.db-shm"
    assert shm.exists()
    os.chmod(shm, 0o444)
    out = _child("open", nobody_dir)
    assert out[0] == "OK", out
    assert out[1] == "%s was read-only (mode 0444): made it 0600" % shm  # the daemon logs it (db_repaired)


def test_a_read_only_shm_of_another_user_is_named_with_its_mode_and_the_fix(nobody_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the -shm to another user")
    _child("make", nobody_dir)
    shm = nobody_dir / "gateway.db-shm"
    os.chown(shm, 0, 0)
    os.chmod(shm, 0o444)
    out = _child("open", nobody_dir)
    assert out[0] == "ERR", out
    assert out[1].startswith("cannot open %s: read-only (mode 0444, owner root; this is nobody);" % shm), out
    assert "chmod 600 %s" % shm in out[1]
