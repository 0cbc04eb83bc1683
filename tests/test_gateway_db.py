"""SQLite plumbing (liftcard_gateway.db, schema.py): the connection's pragmas,
transactions whose failed rollback never hides the error that caused it, and
schema versions, for the gateway's database and the reference ledger's."""

import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_gateway import db, schema
from liftcard_gateway.carddb import CardDB
from liftcard_gateway.store import Store
from liftcard_protocol import upstream as uf
from liftcard_protocol.ride import RideRecord
from liftcard_tools import ledger as L

CARD = 0xFEDCBA9876543210


def ride(seq):
    return RideRecord(
        seq=seq, time=1000 + seq, uptime=seq, card_id=CARD, household=42, floor=3, fee=30, result=0, flags=0, boot=1
    )


def fill_to_the_brim(conn):
    """A disk with room for two more pages: the next large write fails with
    SQLITE_FULL, after which SQLite has already rolled the transaction back."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute("PRAGMA max_page_count=%d" % (pages + 2))


def unlimited(conn):
    conn.execute("PRAGMA max_page_count=1073741823")


# -- a full disk, for real -----------------------------------------------------------------


def test_a_full_disk_surfaces_as_itself_from_the_store(tmp_path):
    s = Store(tmp_path / "gw.db")
    try:
        s.ensure_reader(7, 12)
        fill_to_the_brim(s.conn)
        rides = [ride(i) for i in range(1, 3001)]
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            s.store_batch(7, 1, rides)
        assert not s.conn.in_transaction
        assert s.ride_count(7) == 0 and s.last_counter(7) == 0  # all or nothing
        unlimited(s.conn)  # space again: the same batch goes in
        assert s.store_batch(7, 1, rides).ack_seq == 3000
    finally:
        s.close()


def test_a_full_disk_surfaces_as_itself_from_the_ledger(tmp_path):
    key = Ed25519PrivateKey.generate()
    rides = [uf.UpRide(s, 1000 + s, s, CARD, 3, 4, 40, 0, 0, 1) for s in range(1, 3001)]
    batch = uf.parse_batch(key.public_key(), uf.build_batch(key, "gw1", 1, 7, 12, rides))
    led = L.LedgerDB(tmp_path / "ledger.db")
    try:
        fill_to_the_brim(led.conn)
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            led.store(batch)
        assert led.totals() == []
        unlimited(led.conn)
        assert led.store(batch) == 3000
    finally:
        led.close()


# -- a rollback that fails -----------------------------------------------------------------


class FailingRollback:
    """A connection whose ROLLBACK (and ROLLBACK TO) fails, like one whose disk
    or file went away under it."""

    def __init__(self, conn, also=()):
        self.conn = conn
        self.fail = ("ROLLBACK",) + tuple(also)

    @property
    def in_transaction(self):
        return self.conn.in_transaction

    def execute(self, sql, *args):
        if sql.startswith(self.fail):
            raise sqlite3.OperationalError("disk I/O error (simulated, %s)" % sql)
        return self.conn.execute(sql, *args)


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "t.db")
    c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    yield c
    c.close()


def test_an_error_whose_rollback_fails_propagates_itself(conn):
    w = FailingRollback(conn)
    with pytest.raises(sqlite3.IntegrityError) as ei:
        with db.transaction(w):
            w.execute("INSERT INTO t VALUES (1, 'a')")
            w.execute("INSERT INTO t VALUES (1, 'b')")  # the original error
    assert "UNIQUE" in str(ei.value)
    assert any("ROLLBACK failed too" in n and "disk I/O error" in n for n in ei.value.__notes__)


def test_any_exception_whose_rollback_fails_propagates_itself(conn):
    w = FailingRollback(conn)
    with pytest.raises(KeyError, match="the cause"):
        with db.transaction(w):
            w.execute("INSERT INTO t VALUES (1, 'a')")
            raise KeyError("the cause")


def test_a_failed_commit_rolls_back_and_propagates(conn):
    class FailingCommit(FailingRollback):
        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database is locked (simulated)")
            return self.conn.execute(sql, *args)

    w = FailingCommit(conn)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        with db.transaction(w):
            w.execute("INSERT INTO t VALUES (1, 'a')")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_transaction_commits_or_rolls_back(conn):
    with db.transaction(conn):
        conn.execute("INSERT INTO t VALUES (1, 'a')")
    with pytest.raises(ZeroDivisionError):
        with db.transaction(conn):
            conn.execute("INSERT INTO t VALUES (2, 'b')")
            1 / 0
    assert conn.execute("SELECT k FROM t").fetchall() == [(1,)]
    assert not conn.in_transaction


def test_savepoint_undoes_its_part_alone(conn):
    with db.transaction(conn):
        conn.execute("INSERT INTO t VALUES (1, 'a')")
        with pytest.raises(ValueError):
            with db.savepoint(conn, "part"):
                conn.execute("INSERT INTO t VALUES (2, 'b')")
                raise ValueError("refused")
        conn.execute("INSERT INTO t VALUES (3, 'c')")
    assert [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")] == [1, 3]


def test_a_savepoint_that_cannot_be_undone_fails_its_transaction(conn):
    w = FailingRollback(conn, also=("ROLLBACK TO",))
    with pytest.raises(sqlite3.OperationalError, match="ROLLBACK TO") as ei:
        with db.transaction(w):
            w.execute("INSERT INTO t VALUES (1, 'a')")
            try:
                with db.savepoint(w, "part"):
                    raise ValueError("refused")
            except ValueError:  # a caller that would go on must not be able to
                pytest.fail("the savepoint's refusal hid the failed undo")
    assert isinstance(ei.value.__context__, ValueError)


# -- connections ---------------------------------------------------------------------------


def test_connect_sets_the_pragmas_every_store_relies_on(tmp_path):
    c = db.connect(tmp_path / "sub" / "x.db")  # the directory is created
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert c.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert c.isolation_level is None  # explicit transactions only
    finally:
        c.close()
    ro = db.connect(tmp_path / "sub" / "x.db", readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError):
            ro.execute("CREATE TABLE nope (x)")
    finally:
        ro.close()


def test_every_gateway_store_opens_the_same_schema(tmp_path):
    p = tmp_path / "gateway.db"
    CardDB(p, b"\0" * 32, 1).close()  # e.g. `cards import` before the daemon's first start
    c = db.connect(p)
    try:
        assert db.user_version(c) == len(schema.MIGRATIONS)
        names = {n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {
            "rides",
            "readers",
            "gaps",
            "meta",
            "sun_counters",
            "cards",
            "card_meta",
            "card_history",
            "card_updates",
            "card_sends",
            "upstream_batches",
            "upstream_readers",
        } <= names
    finally:
        c.close()
    Store(p).close()  # already current: opens as is


# -- schema versions -----------------------------------------------------------------------


def test_a_database_from_before_schema_versions_is_brought_up_to_date(tmp_path):
    # Older tables lacking columns: tests/test_gateway_timesync.py and
    # tests/test_gateway_store.py. Here the last gateway before versions: every
    # table there, user_version 0; the migrations create nothing twice.
    p = tmp_path / "old.db"
    s = Store(p)
    s.ensure_reader(7, 12)
    s.store_batch(7, 5, [ride(1)])
    s.conn.execute("PRAGMA user_version=0")
    s.close()
    s = Store(p)
    try:
        assert db.user_version(s.conn) == len(schema.MIGRATIONS)
        assert s.last_counter(7) == 5 and s.ride_count(7) == 1  # the data stays
        assert s.store_batch(7, 6, [ride(2)]).ack_seq == 2
    finally:
        s.close()


def test_migrations_run_once_in_order_and_all_or_nothing(tmp_path):
    ran = []

    def step(n, fail=False):
        def m(conn):
            ran.append(n)
            conn.execute("CREATE TABLE m%d (x)" % n)
            if fail:
                raise RuntimeError("migration %d failed" % n)

        return m

    p = tmp_path / "m.db"
    c = db.connect(p)
    try:
        assert db.migrate(c, [step(1), step(2)]) == 2 and ran == [1, 2]
        assert db.migrate(c, [step(1), step(2)]) == 2 and ran == [1, 2]  # nothing to do
        with pytest.raises(RuntimeError, match="migration 4"):
            db.migrate(c, [step(1), step(2), step(3), step(4, fail=True)])
        assert db.user_version(c) == 2  # neither 3 nor 4
        assert c.execute("SELECT count(*) FROM sqlite_master WHERE name='m3'").fetchone()[0] == 0
        assert db.migrate(c, [step(1), step(2), step(3)]) == 3 and ran[-1] == 3
        with pytest.raises(db.SchemaError, match="newer"):  # a database a newer program made
            db.migrate(c, [step(1)])
    finally:
        c.close()


def test_the_ledger_database_has_a_schema_version_too(tmp_path):
    p = tmp_path / "ledger.db"
    c = sqlite3.connect(str(p))  # a ledger made before schema versions: its tables, version 0
    c.execute(
        "CREATE TABLE rides (gateway_id TEXT NOT NULL, reader_id INTEGER NOT NULL, seq INTEGER NOT NULL, "
        "building_id INTEGER NOT NULL, time INTEGER NOT NULL, uptime INTEGER NOT NULL, card_id TEXT NOT NULL, "
        "household INTEGER NOT NULL, floor INTEGER NOT NULL, fee INTEGER NOT NULL, result INTEGER NOT NULL, "
        "flags INTEGER NOT NULL, boot INTEGER NOT NULL, time_corrected INTEGER, batch_id INTEGER NOT NULL, "
        "stored_at REAL NOT NULL, PRIMARY KEY (gateway_id, reader_id, seq))"
    )
    c.commit()
    c.close()
    led = L.LedgerDB(p)
    try:
        assert db.user_version(led.conn) == len(L.MIGRATIONS)
        assert led.totals() == []
    finally:
        led.close()


def test_a_database_from_a_newer_gateway_is_refused_in_one_line(tmp_path, capsys):
    from liftcard_gateway.cli import main

    (tmp_path / "broker.pass").write_text("pw\n")
    (tmp_path / "broker.pass").chmod(0o600)
    (tmp_path / "gw.toml").write_text('[gateway]\ndata_dir = "data"\n[broker]\npassword_file = "broker.pass"\n')
    c = db.connect(tmp_path / "data" / "gateway.db")
    c.execute("PRAGMA user_version=%d" % (len(schema.MIGRATIONS) + 1))
    c.close()
    assert main(["status", "--config", str(tmp_path / "gw.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("liftcard-gateway: cannot open the database ") and "newer" in err
    assert len(err.splitlines()) == 1
