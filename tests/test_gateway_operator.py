"""Defects an operator met walking through docs/operations.md, each pinned:
the legacy column and log lines count only bare-UID rides a reader granted."""

import secrets
import time

import pytest

from liftcard_gateway.broker import find_tool
from liftcard_gateway.store import Store
from liftcard_protocol import link
from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.ride import RideRecord
from liftcard_testing.daemonrig import daemon_broker, daemon_rig
from liftcard_testing.logcapture import EventLog

READERS = {7: 12, 8: 12}


def ride(seq, result=Result.GRANTED, flags=0, fee=30):
    return RideRecord(
        seq=seq,
        time=1000 + seq,
        uptime=seq,
        card_id=0xFEDCBA9876543210,
        household=42,
        floor=3,
        fee=fee,
        result=int(result),
        flags=int(flags),
        boot=1,
    )


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gw.db")
    s.ensure_reader(7, 12)
    s.ensure_reader(8, 12)
    yield s
    s.close()


def test_a_refused_legacy_tap_is_not_counted_as_legacy(store):
    """Reader 8 has legacy_uid off: it refused a bare-UID tap (LEGACY_DISABLED,
    the flag set as the tap was a bare UID). That is not a reader letting such
    cards ride: `legacy` stays 0, the refusal is counted apart."""
    store.store_batch(7, 1, [ride(1), ride(2, flags=Flag.LEGACY_UID)])
    store.store_batch(8, 1, [ride(1), ride(2, Result.LEGACY_DISABLED, Flag.LEGACY_UID, fee=0)])
    rows = {r["reader_id"]: r for r in store.status_rows()}
    assert (rows[7]["legacy"], rows[7]["legacy_refused"]) == (1, 0)
    assert (rows[8]["legacy"], rows[8]["legacy_refused"]) == (0, 1)


@pytest.fixture(scope="module")
def broker():
    try:
        find_tool("mosquitto")
    except Exception:  # pragma: no cover
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    with daemon_broker(READERS) as b:
        yield b


@pytest.fixture
def gw(tmp_path, broker):
    keys = {rid: secrets.token_bytes(32) for rid in READERS}
    with daemon_rig(tmp_path, broker, keys, EventLog()) as rig:  # (g, cfg, log, reader)
        yield rig


def test_daemon_logs_a_refused_legacy_tap_as_a_refusal(gw):
    g, cfg, log, reader = gw
    r = reader(8)
    recs = [ride(1), ride(2, Result.LEGACY_DISABLED, Flag.LEGACY_UID, fee=0)]
    r.publish(link.build_rides(r.key, r.rid, r.bid, r.counter(), recs))
    assert r.ack() == 2
    ev = log.wait(lambda x: x["event"] == "legacy_refused")
    assert (ev["reader_id"], ev["rides"]) == (8, 1)
    r.publish(link.build_rides(r.key, r.rid, r.bid, r.counter(), [ride(3, flags=Flag.LEGACY_UID)]))
    assert r.ack() == 3
    ev = log.wait(lambda x: x["event"] == "legacy_rides")
    assert (ev["reader_id"], ev["rides"]) == (8, 1)
    time.sleep(0.3)
    assert len(log.events("legacy_rides")) == 1 and len(log.events("legacy_refused")) == 1
