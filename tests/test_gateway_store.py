"""The gateway's SQLite store and config (no broker needed)."""

import os

import pytest

from liftcard_gateway.config import GatewayConfigError, load_config
from liftcard_protocol.ride import RideRecord
from liftcard_gateway.store import ReplayError, Store, UnknownReader
from liftcard_gateway.tables import format_status


def ride(seq, card=0xFEDCBA9876543210, fee=30):
    return RideRecord(
        seq=seq, time=1000 + seq, uptime=seq, card_id=card, household=42, floor=3, fee=fee, result=0, flags=0, boot=1
    )


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(7, 12)
    yield s
    s.close()


def test_wal_mode(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_dedupe_same_batch_twice(store):
    b = [ride(s) for s in range(1, 6)]
    r1 = store.store_batch(7, 1, b)
    r2 = store.store_batch(7, 2, b)
    assert (r1.ack_seq, r1.inserted, r1.duplicates) == (5, 5, 0)
    assert (r2.ack_seq, r2.inserted, r2.duplicates) == (5, 0, 5)
    assert store.ride_count(7) == 5
    assert store.rides(7) == b  # u64 card ids round-trip


def test_reorder_gap_reported_then_filled(store):
    assert store.store_batch(7, 1, [ride(s) for s in range(1, 5)]).ack_seq == 4
    r = store.store_batch(7, 2, [ride(s) for s in range(9, 13)])
    assert r.ack_seq == 4 and r.new_gaps == ((5, 8),)
    assert [(g["from_seq"], g["to_seq"]) for g in store.gaps(7, open_only=True)] == [(5, 8)]
    r = store.store_batch(7, 3, [ride(s) for s in range(5, 9)])
    assert r.ack_seq == 12 and r.new_gaps == ()
    assert store.gaps(7, open_only=True) == []
    g = store.gaps(7)
    assert len(g) == 1 and g[0]["filled_at"] is not None  # reported, never hidden


def test_first_batch_starts_the_run(store):
    # Records reclaimed before this gateway existed: the first seq seen starts the run.
    assert store.store_batch(7, 1, [ride(s) for s in range(500, 510)]).ack_seq == 509
    assert store.gaps(7) == []


def test_first_seq_from_config(tmp_path):
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(7, 12, first_seq=1)
    r = s.store_batch(7, 1, [ride(s_) for s_ in range(33, 40)])
    assert r.ack_seq == 0 and r.new_gaps == ((1, 32),)
    assert s.store_batch(7, 2, [ride(s_) for s_ in range(1, 33)]).ack_seq == 39
    s.close()


def test_replay_refused_and_nothing_changes(store):
    store.store_batch(7, 10, [ride(1)])
    with pytest.raises(ReplayError):
        store.store_batch(7, 10, [ride(2)])
    with pytest.raises(ReplayError):
        store.store_batch(7, 9, [ride(2)])
    assert store.ride_count(7) == 1 and store.last_counter(7) == 10


def test_empty_batch_updates_counter(store):
    assert store.store_batch(7, 3, []).ack_seq == 0
    assert store.last_counter(7) == 3


def test_state_survives_reopen(tmp_path):
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(7, 12)
    s.store_batch(7, 5, [ride(1), ride(2)])
    _, reserved = s.reserve_down_counters(1000, 50)
    s.close()
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(7, 12)
    assert s.last_counter(7) == 5 and s.acked_seq(7) == 2
    assert s.reserve_down_counters(1000, 50)[0] == reserved + 1
    s.close()


def test_status_table(store):
    store.store_batch(7, 1, [ride(1), ride(3)])
    out = format_status(store.status_rows())
    lines = out.splitlines()
    assert "reader" in lines[0] and "acked seq" in lines[0] and "gaps" in lines[0]
    assert lines[2].split()[:2] == ["7", "12"]


# -- clock drift (STATUS carries the reader's clock) ---------------------------------

from liftcard_protocol import link as U  # noqa: E402
from liftcard_protocol.epoch import LIFTCARD_EPOCH  # noqa: E402

NOW = LIFTCARD_EPOCH + 91000000.7  # the gateway's receive time (Unix seconds)


def _status(time, synced=True):
    return U.ReaderStatus(
        uptime=50, free_heap=90000, backlog=0, wl_version=3, flags=U.ST_CLOCK_SYNCED if synced else 0, boot=1, time=time
    )


def test_store_status_records_the_clock_drift(store):
    # Through the real codec: the time the reader sent is what the store sees.
    msg = U.parse(bytes(32), U.build_status(bytes(32), 7, 12, 1, _status(91000002)), 7, 12, "up")
    store.store_status(7, 1, msg.status, now=NOW)
    r = store.reader(7)
    assert r["clock_drift_s"] == 2 and r["clock_at"] == NOW
    store.store_status(7, 2, _status(91000000 - 75), now=NOW + 60)
    r = store.reader(7)
    assert r["clock_drift_s"] == -135 and r["clock_at"] == NOW + 60  # 75 s behind, 60 s later
    assert isinstance(r["clock_drift_s"], int)


def test_unsynced_reader_has_no_drift(store):
    store.store_status(7, 1, _status(91000010), now=NOW)
    store.store_status(7, 2, _status(5, synced=False), now=NOW + 30)  # rebooted, not yet synced
    r = store.reader(7)
    assert r["clock_drift_s"] is None
    assert r["clock_at"] == NOW, "clock_at keeps when the drift was last measured"


def test_drift_column_added_to_an_old_database(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    c = sqlite3.connect(db)
    c.execute(
        "CREATE TABLE readers (reader_id INTEGER PRIMARY KEY, building_id INTEGER, first_seq INTEGER, "
        "acked_seq INTEGER, max_seq INTEGER, last_up_counter INTEGER, last_seen FLOAT, online INTEGER, "
        "uptime INTEGER, free_heap INTEGER, backlog INTEGER, wl_version INTEGER, unrecorded INTEGER, "
        "last_error INTEGER, status_flags INTEGER, boot INTEGER, status_at FLOAT)"
    )
    c.execute("INSERT INTO readers (reader_id, building_id, last_up_counter) VALUES (7, 12, 0)")
    c.commit()
    c.close()
    s = Store(db)
    try:
        assert s.reader(7)["clock_drift_s"] is None
        s.store_status(7, 1, _status(91000000 - 3), now=NOW)
        assert s.reader(7)["clock_drift_s"] == -3
    finally:
        s.close()


def test_status_table_shows_the_drift(store):
    store.ensure_reader(8, 12)
    store.ensure_reader(9, 12)
    store.store_status(7, 1, _status(91000002), now=NOW)
    store.store_status(8, 1, _status(91000000 - 75), now=NOW)
    store.store_status(9, 1, _status(17, synced=False), now=NOW)
    lines = format_status(store.status_rows(), now=NOW).splitlines()
    assert "drift" in lines[0]
    col = lines[0].index("drift")
    cells = {ln.split()[0]: ln[col:].split()[0] for ln in lines[2:]}
    assert cells == {"7": "+2s", "8": "-75s", "9": "-"}, lines


# -- config -----------------------------------------------------------------------


def _secret(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _cfg(tmp_path, body):
    p = tmp_path / "gw.toml"
    p.write_text(body)
    return p


GOOD = """
[gateway]
data_dir = "data"
[broker]
host = "127.0.0.1"
port = 1883
username = "gateway"
password_file = "pw"
[[readers]]
reader_id = 7
building_id = 12
key_file = "k7"
"""


def test_config_good(tmp_path):
    _secret(tmp_path / "pw", "s3cret-pass\n")
    _secret(tmp_path / "k7", "ab" * 32)
    cfg = load_config(_cfg(tmp_path, GOOD))
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.readers[7].key.value == bytes([0xAB]) * 32
    assert cfg.broker.password.value == "s3cret-pass"
    assert "s3cret" not in repr(cfg) and "abab" not in repr(cfg)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda s: s.replace("port = 1883", "port = 0"), "broker.port"),
        (lambda s: s.replace('data_dir = "data"', ""), "gateway.data_dir"),
        (lambda s: s.replace("reader_id = 7", 'reader_id = "x"'), "readers[0].reader_id"),
        (lambda s: s + "[[readers]]\nreader_id = 7\nbuilding_id = 1\nkey_file = \"k7\"\n", "readers[1].reader_id"),
        (lambda s: s.replace('key_file = "k7"', 'key_file = "nope"'), "readers[0].key_file"),
        (lambda s: s.replace("[broker]", "[broker]\nbogus = 1"), "broker.bogus"),
    ],
)
def test_config_errors_name_the_key(tmp_path, mutate, key):
    _secret(tmp_path / "pw", "s3cret-pass")
    _secret(tmp_path / "k7", "ab" * 32)
    with pytest.raises(GatewayConfigError) as ei:
        load_config(_cfg(tmp_path, mutate(GOOD)))
    assert ei.value.key == key and str(ei.value).startswith(key + ":")
    assert "\n" not in str(ei.value)


def test_config_secret_file_mode_and_content(tmp_path):
    _secret(tmp_path / "pw", "s3cret-pass", mode=0o644)
    _secret(tmp_path / "k7", "ab" * 32)
    with pytest.raises(GatewayConfigError) as ei:
        load_config(_cfg(tmp_path, GOOD))
    assert ei.value.key == "broker.password_file" and "0600" in str(ei.value)
    assert "s3cret" not in str(ei.value)
    _secret(tmp_path / "pw", "s3cret-pass")
    _secret(tmp_path / "k7", "zz" * 32)
    with pytest.raises(GatewayConfigError) as ei:
        load_config(_cfg(tmp_path, GOOD))
    assert ei.value.key == "readers[0].key_file" and "zz" not in str(ei.value)


def test_group_commit_keeps_each_message_apart(store):
    """store_batches: several messages in one transaction, a refused one (a
    replayed counter, an unknown reader) leaves the others in, and each result
    is what store_batch would have returned in that order."""
    store.ensure_reader(8, 12)
    res = store.store_batches(
        [
            (7, 1, [ride(s) for s in range(1, 4)]),
            (8, 1, [ride(s) for s in range(1, 3)]),
            (7, 2, [ride(s) for s in range(4, 6)]),  # same reader, later counter: in
            (7, 2, [ride(s) for s in range(6, 8)]),  # counter repeated within the group: replay
            (9, 1, [ride(1)]),  # not registered
            (7, 3, [ride(s) for s in range(3, 7)]),  # overlap: 3..5 duplicates, 6 new
        ]
    )
    assert [type(r).__name__ for r in res] == [
        "BatchResult",
        "BatchResult",
        "BatchResult",
        "ReplayError",
        "UnknownReader",
        "BatchResult",
    ]
    assert isinstance(res[3], ReplayError) and isinstance(res[4], UnknownReader)
    assert [r.ack_seq for r in (res[0], res[1], res[2], res[5])] == [3, 2, 5, 6]
    assert (res[5].inserted, res[5].duplicates) == (1, 3)
    assert [r.seq for r in store.rides(7)] == list(range(1, 7))  # 7 never came in
    assert [r.seq for r in store.rides(8)] == [1, 2]
    assert store.last_counter(7) == 3 and store.last_counter(8) == 1
    with pytest.raises(ReplayError):
        store.store_batch(7, 3, [ride(7)])


def test_group_commit_is_all_or_nothing_on_a_crash(store, monkeypatch):
    """A failure that is not a refusal (here the database erroring mid-group)
    rolls the whole group back: nothing was acked, the readers resend it all."""
    real = store._store_one
    calls = []

    def flaky(*a):
        calls.append(a[0])
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return real(*a)

    monkeypatch.setattr(store, "_store_one", flaky)
    with pytest.raises(RuntimeError):
        store.store_batches([(7, 1, [ride(1)]), (7, 2, [ride(2)])])
    assert store.ride_count(7) == 0 and store.last_counter(7) == 0


def test_status_reports_rides_made_in_legacy_uid_mode(store):
    """A reader that lets UID-only cards in (legacy mode) shows it: the count
    of its rides flagged LEGACY_UID, so the operator sees which readers accept
    copyable cards."""
    store.ensure_reader(8, 12)
    legacy = [
        RideRecord(
            seq=s,
            time=1000 + s,
            uptime=s,
            card_id=0xDEADBEEF,
            household=42,
            floor=3,
            fee=30,
            result=0,
            flags=0x02,
            boot=1,
        )
        for s in (2, 3)
    ]
    store.store_batch(7, 1, [ride(1)] + legacy)
    store.store_batch(8, 1, [ride(1), ride(2)])
    rows = {r["reader_id"]: r for r in store.status_rows()}
    assert (rows[7]["legacy"], rows[8]["legacy"]) == (2, 0)
    lines = format_status(store.status_rows()).splitlines()
    assert lines[0].split()[-1] == "legacy"
    assert lines[2].split()[0] == "7" and lines[2].split()[-1] == "2"
    assert lines[3].split()[0] == "8" and lines[3].split()[-1] == "0"
