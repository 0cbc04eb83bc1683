"""A full whitelist sent to a live virtual reader in WHITELIST chunks, end to
end and real: a private Mosquitto (MosquittoInstance), the virtual reader
(firmware/main.py under the real micropython, 192K heap) with an "uplink"
section in its config, and the CPython test gateway (liftcard_testing.minigateway),
which seals the chunks with liftcard_protocol.link and publishes them on QoS 1.

Checked: a ~2000-card list arrives in order (with a duplicate chunk, as QoS 1
may deliver one), is assembled on the reader's flash and installed; a tap on a
card only the new list holds is granted; the reader's STATUS heartbeat
reports the new wl_version to the gateway; a forged list (another key's MAC)
is assembled but never installed."""

import pytest

from liftcard_gateway.broker import find_tool
from liftcard_protocol import link as U
from liftcard_protocol.card import CardRecord
from liftcard_protocol.whitelist import build_whitelist
from liftcard_testing.minigateway import MiniGateway
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.reader import CARD, KEY, READER, BUILDING, configured_reader
from liftcard_testing.wait import wait_for

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto not installed", allow_module_level=True)

N = 2000
NEW_CARD = 0x0A0B0C0D0E0F1011


def _cards(version):
    # CARD (of the reader's v1 list) stays; N-1 others, NEW_CARD among them.
    cards = [CardRecord(CARD, 501, 0b100001), CardRecord(NEW_CARD, 777, 0b11)]
    step = (1 << 64) // N
    cards += [CardRecord(i * step + 12345 + version, 1000 + i % 50, 0b111) for i in range(1, N - 1)]
    return cards


def _send_list(gw, blob, version, order=None):
    pieces = U.whitelist_chunks(blob)
    for i in order if order is not None else range(len(pieces)):
        off, data = pieces[i]
        gw.send(U.build_whitelist_chunk, version, len(blob), off, data)
    return len(pieces)


@pytest.fixture
def broker():
    with MosquittoInstance(readers={READER: BUILDING}) as b:
        yield b


def test_a_list_in_chunks_is_installed_and_reported(broker, tmp_path):
    gw = MiniGateway(broker)
    r = configured_reader(tmp_path, broker.host, broker.port, broker.credentials["reader-%d" % READER])
    try:
        wait_for(lambda: r.status()["uplink"] == "up", 15, "the uplink to come up")
        wait_for(lambda: gw.statuses, 10, "a STATUS heartbeat")
        assert gw.statuses[-1].wl_version == 1
        assert r.tap(NEW_CARD, 1).result == 1, "the new card is not on the v1 list"

        # A forged list: assembled, refused at install, the old list kept.
        forged = build_whitelist(bytes(range(1, 33)), READER, BUILDING, 2, _cards(2))
        _send_list(gw, forged, 2)
        try:
            wait_for(lambda: "MAC" in (r.status()["uplink_error"] or ""), 20, "the forged list refused")
        except AssertionError:
            raise AssertionError(r.status())
        s = r.status()
        assert s["whitelist_version"] == 1 and s["cards"] == 2 and s["uplink_refused"] == 0
        assert r.tap(NEW_CARD, 1).result == 1

        blob = build_whitelist(KEY, READER, BUILDING, 2, _cards(2))
        assert len(blob) == 48 + 16 * N
        n = (len(blob) + U.MAX_BLOB - 1) // U.MAX_BLOB
        assert n >= 8
        order = list(range(n))
        order.insert(4, 2)  # chunk 2 delivered twice
        _send_list(gw, blob, 2, order)
        wait_for(lambda: r.status()["whitelist_version"] == 2, 30, "the chunked list installed")
        s = r.status()
        assert s["cards"] == N and s["uplink_refused"] == 0
        ride = r.tap(NEW_CARD, 1)
        assert ride.result == 0 and ride.household == 777, ride
        assert r.tap(CARD, 5).result == 0
        wait_for(lambda: any(st.wl_version == 2 for st in gw.statuses), 20, "a STATUS with wl_version 2")
        with gw.lock:
            assert not gw.refused
    finally:
        r.kill()
        gw.close()
