"""tools/bench/nfc.py runs as recorded (every tap kind five times, an NTAG's
counter growing from tap to tap) and its JSON has the documented shape; the
frame and byte counts are deterministic (docs/nfc.md, docs/benchmarks.md "NFC tap")."""

import json
import subprocess
import sys

import pytest

from liftcard_testing.paths import REPO

DRIVER = REPO / "tools" / "bench" / "nfc.py"


@pytest.fixture(scope="module")
def doc():
    r = subprocess.run([sys.executable, str(DRIVER)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_shape(doc):
    for key in ("benchmark", "command", "driver", "results", "model", "targets"):
        assert key in doc
    assert set(doc["results"]) == {"desfire", "ntag424", "uid", "idle"}
    for res in doc["results"].values():
        assert set(res) == {"counts", "rf_bytes_with_framing", "ms", "per_command"}
        for k in (
            "uart_115200",
            "i2c_400k",
            "rf_air",
            "rf_frame_delays",
            "card_processing_assumed",
            "pn532_processing_assumed",
            "total_uart",
            "total_i2c",
        ):
            assert res["ms"][k] >= 0
        m = res["ms"]
        assert (
            abs(
                m["total_uart"]
                - (
                    m["uart_115200"]
                    + m["rf_air"]
                    + m["rf_frame_delays"]
                    + m["card_processing_assumed"]
                    + m["pn532_processing_assumed"]
                )
            )
            < 0.05
        )
    t = doc["targets"]["tap_to_relay"]
    assert t["ms"] == 150.0 and t["desfire_estimate_uart_ms"] == doc["results"]["desfire"]["ms"]["total_uart"]
    assert "ASSUMPTION" in doc["model"]["card_processing"]


@pytest.mark.parametrize(
    "kind, cmds, host, chip, rf",
    [
        ("desfire", ["4A", "40", "40", "40", "40", "52"], (6, 108), (12, 184), (47, 70)),
        ("ntag424", ["4A", "40", "40", "40", "40", "52"], (6, 91), (12, 214), (30, 100)),
        ("uid", ["4A", "52"], (2, 21), (4, 41), (0, 0)),
        ("idle", ["4A"], (1, 11), (2, 16), (0, 0)),
    ],
)
def test_counts(doc, kind, cmds, host, chip, rf):
    c = doc["results"][kind]["counts"]
    assert c["commands_list"] == cmds
    assert (c["host_frames"], c["host_bytes"]) == host
    assert (c["chip_frames"], c["chip_bytes"]) == chip
    assert (c["rf_out"], c["rf_in"]) == rf
    # 115200 8N1: 10 bits per byte
    assert doc["results"][kind]["ms"]["uart_115200"] == round((host[1] + chip[1]) * 10 / 115200 * 1e3, 2)
