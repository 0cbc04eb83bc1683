"""The gateway's SQLite store and config (no broker needed)."""

import os

import pytest

from liftcard_gateway.config import GatewayConfigError, load_config
from liftcard_gateway.formats import RideRecord
from liftcard_gateway.store import ReplayError, Store, format_status


def ride(seq, card=0xFEDCBA9876543210, fee=30):
    return RideRecord(seq=seq, time=1000 + seq, uptime=seq, card_id=card, household=42, floor=3, fee=fee,
                      result=0, flags=0, boot=1)


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
    b1 = s.next_boot()
    s.close()
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(7, 12)
    assert s.last_counter(7) == 5 and s.acked_seq(7) == 2
    assert s.next_boot() == b1 + 1
    s.close()


def test_status_table(store):
    store.store_batch(7, 1, [ride(1), ride(3)])
    out = format_status(store.status_rows())
    lines = out.splitlines()
    assert "reader" in lines[0] and "acked seq" in lines[0] and "gaps" in lines[0]
    assert lines[2].split()[:2] == ["7", "12"]


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


@pytest.mark.parametrize("mutate, key", [
    (lambda s: s.replace("port = 1883", "port = 0"), "broker.port"),
    (lambda s: s.replace('data_dir = "data"', ""), "gateway.data_dir"),
    (lambda s: s.replace("reader_id = 7", 'reader_id = "x"'), "readers[0].reader_id"),
    (lambda s: s + "[[readers]]\nreader_id = 7\nbuilding_id = 1\nkey_file = \"k7\"\n", "readers[1].reader_id"),
    (lambda s: s.replace('key_file = "k7"', 'key_file = "nope"'), "readers[0].key_file"),
    (lambda s: s.replace("[broker]", "[broker]\nbogus = 1"), "broker.bogus"),
])
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
