"""The real firmware's heartbeat (the virtual reader under micropython, on a
private Mosquitto): it carries the signal its network reports, the firmware's
version (firmware/liftcard/__init__.py) and the whitelist capacity the reader
computes from its own 2 MB littlefs image, the figure the gateway's rule
(liftcard_protocol.capacity) gives for that size."""

import re

import pytest

from liftcard_gateway.broker import find_tool
from liftcard_protocol.capacity import max_cards
from liftcard_testing.minigateway import MiniGateway
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.paths import FIRMWARE
from liftcard_testing.reader import BUILDING, READER, configured_reader
from liftcard_testing.wait import wait_for

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto not installed", allow_module_level=True)


def test_the_firmware_heartbeat_carries_signal_version_and_capacity(tmp_path):
    version = re.search(r'^VERSION = "(\d+)\.(\d+)\.(\d+)"', (FIRMWARE / "liftcard/__init__.py").read_text(), re.M)
    with MosquittoInstance(readers={READER: BUILDING}) as broker:
        gw = MiniGateway(broker)
        r = configured_reader(tmp_path, broker.host, broker.port, broker.credentials["reader-%d" % READER])
        try:
            wait_for(lambda: gw.statuses, 15, "a STATUS heartbeat")
            st = gw.statuses[0]
            assert st.fw_version == tuple(int(x) for x in version.groups())
            assert st.firmware == r.status()["fw"]
            assert st.rssi == r.status()["net_rssi"] != 0  # the host board's Wi-Fi model says -48 dBm
            assert st.wl_capacity == max_cards(2 * 1024 * 1024) == 36279
            assert st.acked_seq is not None  # the 44-byte body: the seqs come with it
        finally:
            r.kill()
            gw.close()
