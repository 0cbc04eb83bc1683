"""The reader's side of RESEND (docs/uplink.md), for real: the virtual reader
(firmware/main.py under micropython, 192K heap) over a private Mosquitto to a
small CPython gateway (liftcard_testing.minigateway). Its heartbeat carries its
ack mark and the oldest seq its log holds; a RESEND makes it send again, in
order, what its log still holds from the seq named (acknowledged records
too), and nothing it no longer holds."""

import pytest

from liftcard_gateway.broker import find_tool
from liftcard_protocol import link as U
from liftcard_testing.minigateway import MiniGateway
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.reader import BUILDING, CARD, READER, configured_reader
from liftcard_testing.wait import wait_for

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto not installed", allow_module_level=True)

SMALL_LOG = 6 * 4096  # 2 journal sectors + 4 of 128 records: it reclaims after ~300 rides


@pytest.fixture
def broker():
    with MosquittoInstance(readers={READER: BUILDING}) as b:
        yield b


def _reader(tmp_path, broker, args=()):
    return configured_reader(tmp_path, broker.host, broker.port, broker.credentials["reader-%d" % READER], args=args)


def _acked_all(r, timeout=60):
    last = r.status()["next_seq"] - 1
    wait_for(lambda: r.status()["acked"] == last, timeout, "acks for every ride")
    return last


def _heartbeat_after_reconnect(gw, r, broker):
    n = len(gw.statuses)
    connects = r.status()["uplink_connects"]
    broker.restart()
    wait_for(lambda: r.status()["uplink_connects"] > connects, 40, "the reader to reconnect")
    wait_for(lambda: len(gw.statuses) > n, 20, "its heartbeat at the reconnect")
    return gw.statuses[-1]


def test_resend_sends_the_acknowledged_rides_again_from_the_seq_named(broker, tmp_path):
    gw = MiniGateway(broker)
    r = _reader(tmp_path, broker)
    try:
        wait_for(lambda: gw.statuses, 20, "the first heartbeat")
        st = gw.statuses[0]
        assert (st.acked_seq, st.oldest_seq) == (0, 1)  # nothing logged yet
        for _ in range(40):
            r.tap(CARD, 5)
        last = _acked_all(r)
        st = _heartbeat_after_reconnect(gw, r, broker)
        assert (st.acked_seq, st.oldest_seq, st.backlog) == (last, 1, 0)
        with gw.lock:
            before = dict(gw.rides)
            gw.rides.clear()  # a gateway that lost them
        gw.send(U.build_resend, 4)
        wait_for(lambda: r.status()["uplink_resends"] == 1, 10, "the RESEND obeyed")
        wait_for(lambda: len(gw.rides) == last - 3, 20, "rides 4..%d again" % last)
        with gw.lock:
            assert sorted(gw.rides) == list(range(4, last + 1))
            assert all(gw.rides[s] == before[s] for s in gw.rides), "a resent record differs"
        # A RESEND above the ack mark changes nothing: the backlog goes anyway.
        gw.send(U.build_resend, last + 1)
        r.tap(CARD, 5)
        wait_for(lambda: last + 1 in gw.rides, 20, "the new ride")
        assert r.status()["uplink_resends"] == 1
        wait_for(lambda: r.status()["acked"] == last + 1, 20, "its ack")
    finally:
        r.kill()
        gw.close()


def test_what_the_log_no_longer_holds_is_not_sent(broker, tmp_path):
    """A small log that has reclaimed its oldest sector: the heartbeat's
    oldest_seq says where the log starts, and a RESEND from 1 brings exactly
    oldest_seq..last, nothing invented below it."""
    gw = MiniGateway(broker)
    r = _reader(tmp_path, broker, args=("--log-size", str(SMALL_LOG)))
    try:
        wait_for(lambda: r.status()["uplink"] == "up", 20, "the uplink to come up")
        for i in range(450):
            r.tap(CARD, 5)
            if i % 100 == 99:
                _acked_all(r)  # acked, so the log may reclaim while idle
        last = _acked_all(r)
        wait_for(lambda: r.status()["erases"] > 0, 20, "a sector reclaimed")
        st = _heartbeat_after_reconnect(gw, r, broker)
        assert st.acked_seq == last and 1 < st.oldest_seq <= last, (st.acked_seq, st.oldest_seq)
        with gw.lock:
            gw.rides.clear()
        gw.send(U.build_resend, 1)
        wait_for(lambda: len(gw.rides) == last - st.oldest_seq + 1, 30, "the rides the log still holds")
        with gw.lock:
            assert sorted(gw.rides) == list(range(st.oldest_seq, last + 1))
    finally:
        r.kill()
        gw.close()
