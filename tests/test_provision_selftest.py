"""selftest's table from what the reader reports (selftest.checks). That it
waits for the gateway's time once linked: hil_tests/test_path.py."""

import pytest

from liftcard_provisioning import cli, selftest as S

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


@pytest.mark.parametrize("value", ["nan", "-5", "1e12", "inf", "soon"])
def test_a_bad_settle_is_one_line_before_the_board_is_touched(capsys, value):
    with pytest.raises(SystemExit) as e:
        cli.main(["selftest", "--port", "/dev/nonexistent-board", "--settle", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--settle" in err and "Traceback" not in err
