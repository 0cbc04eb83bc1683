"""`liftcard-gateway import FILE` (importer.py): a harvest file's rides go in
through the store's batch path, deduplicated on (reader_id, seq) with what the
link brought; importing twice stores nothing; a corrupt file, an unknown
reader or a reader of another building is refused with one line, exit 2,
and no database touched. Real CLI processes (liftcard_testing.procs)."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from liftcard_gateway.store import Store
from liftcard_protocol.harvest import SOURCE_IMAGE, Harvest, pack_harvest
from liftcard_protocol.ride import RideRecord
from liftcard_testing import procs
from liftcard_testing.configs import write_gateway_config

READER, BUILDING, OTHER_READER = 1017, 12, 1018
KEYS = {READER: bytes(range(32)), OTHER_READER: bytes(range(1, 33))}
NO_BROKER = SimpleNamespace(host="127.0.0.1", port=1, credentials={"gateway": "unused"})


def rides(first, n):
    return tuple(
        RideRecord(s, 90_000_000 + s, s, 0x1122334455667788, 101, 3, 20, 0, 0, 1) for s in range(first, first + n)
    )


def cli(*args):
    p = procs.spawn(
        [sys.executable, "-m", "liftcard_gateway", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = p.communicate(timeout=120)
    finally:
        procs.stop(p)
    return p.returncode, out.decode(), err.decode()


@pytest.fixture
def gw(tmp_path):
    cfg = write_gateway_config(tmp_path / "gw", NO_BROKER, KEYS, {READER: BUILDING, OTHER_READER: BUILDING})
    return cfg, tmp_path / "gw" / "data" / "gateway.db"


def harvest_file(path, h):
    path.write_bytes(pack_harvest(h))
    return path


def db_path(cfg):
    from liftcard_gateway.config import load_config

    c = load_config(cfg)
    c.db_path.parent.mkdir(parents=True, exist_ok=True)
    return c.db_path


def test_import_twice_stores_each_ride_once(gw, tmp_path):
    cfg, _ = gw
    db = db_path(cfg)
    f = harvest_file(tmp_path / "r.lchv", Harvest(READER, BUILDING, 0, 100, rides(1, 40)))
    rc, out, err = cli("import", f, "--config", cfg)
    assert rc == 0, err
    assert "40 new, 0 already held" in out and "up to seq 40" in out
    rc, out, err = cli("import", f, "--config", cfg)
    assert rc == 0, err
    assert "0 new, 40 already held" in out
    st = Store(db)
    try:
        assert st.rides(READER) == list(rides(1, 40))
        assert st.acked_seq(READER) == 40
        # imported rides carry no link counter, and the link's replay state is untouched
        assert st.conn.execute("SELECT count(*) FROM rides WHERE up_counter IS NULL").fetchone()[0] == 40
        assert st.last_counter(READER) == 0
    finally:
        st.close()


def test_import_merges_with_what_the_link_brought(gw, tmp_path):
    cfg, _ = gw
    db = db_path(cfg)
    st = Store(db)
    try:
        st.ensure_reader(READER, BUILDING)
        st.store_batch(READER, 7, rides(1, 10))  # the link delivered 1..10, then the Wi-Fi died
        st.store_batch(READER, 8, rides(15, 2))  # and 15..16 (11..14 lost in the air: a gap)
        assert st.gaps(READER, open_only=True)
    finally:
        st.close()
    f = harvest_file(tmp_path / "r.lchv", Harvest(READER, BUILDING, 10, 100, rides(1, 30), SOURCE_IMAGE))
    rc, out, err = cli("import", f, "--config", cfg)
    assert rc == 0, err
    assert "18 new, 12 already held" in out and "up to seq 30" in out
    st = Store(db)
    try:
        assert [r.seq for r in st.rides(READER)] == list(range(1, 31))
        assert not st.gaps(READER, open_only=True)  # the harvest filled the gap
        assert st.last_counter(READER) == 8  # the link goes on from where it was
        assert st.store_batch(READER, 9, rides(31, 1)).ack_seq == 31
    finally:
        st.close()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: pack_harvest(Harvest(4242, BUILDING, 0, 1, rides(1, 3))), "reader 4242, which this gateway does not"),
        (lambda: pack_harvest(Harvest(READER, 13, 0, 1, rides(1, 3))), "building 13, but this gateway has reader"),
        (lambda: pack_harvest(Harvest(READER, BUILDING, 0, 1, rides(1, 3)))[:-1], "SHA-256 does not match"),
        (lambda: b"LCWL" + bytes(100), "not a harvest file"),
    ],
    ids=["unknown-reader", "other-building", "truncated", "not-a-harvest"],
)
def test_refused_files(gw, tmp_path, make, words):
    cfg, db = gw
    f = tmp_path / "bad.lchv"
    f.write_bytes(make())
    rc, out, err = cli("import", f, "--config", cfg)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and words in err and err.startswith("liftcard-gateway: import refused: ")
    assert not db.exists()


def test_a_missing_file_is_one_line(gw, tmp_path):
    cfg, _ = gw
    rc, _, err = cli("import", tmp_path / "nope.lchv", "--config", cfg)
    assert rc == 2 and err.count("\n") == 1 and "cannot read" in err
