"""selftest's table from what the reader reports (selftest.checks). That it
waits for the gateway's time once linked: hil_tests/test_path.py."""

from liftcard_provisioning import selftest as S

LINKED = {
    "fw": "0.1.0",
    "platform": "esp32",
    "reader_id": 1017,
    "building_id": 12,
    "whitelist_version": 0,
    "cards": 0,
    "error": "no whitelist installed",
    "heap_free": 60000,
    "clock_synced": True,
    "net": "up",
    "uplink": "up",
    "nfc_chip": [0x32, 1, 6, 7],
}


def rows(st):
    return {r[0]: r for r in S.checks(st)}


def test_no_whitelist_is_one_failed_row_saying_where_it_comes_from():
    got = rows(LINKED)
    assert "reader" not in got  # the reader's error is that same missing whitelist: not twice
    assert got["whitelist"][1] == "FAIL" and "building's cards from the bank" in got["whitelist"][2]
    other = dict(LINKED, error="config: floors out of range")
    assert rows(other)["reader"] == ("reader", "FAIL", "config: floors out of range")
