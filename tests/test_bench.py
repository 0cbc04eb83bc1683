"""The reader benchmark runs end to end (tools/bench/reader.py --quick) and its
JSON holds the figures docs/benchmarks.md reports. Only relations that do not
depend on timing are asserted: flash counts, capacities, heap limits, results."""

import json
import subprocess
import sys

import pytest

from liftcard_testing.firmware import venv_tool as tool
from liftcard_testing.paths import REPO

DRIVER = REPO / "tools" / "bench" / "reader.py"


def _run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, str(DRIVER), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def doc():
    res = _run("--quick", "--micropython", tool("micropython"))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_document_shape(doc):
    for key in ("benchmark", "command", "machine", "heap", "datasheet", "results", "targets", "notes"):
        assert key in doc
    assert doc["heap"] == "192K"
    assert doc["datasheet"]["page_program_ms"]["typ"] == 0.4
    assert doc["datasheet"]["sector_erase_ms"]["typ"] == 45.0
    assert len(doc["results"]) == 1
    s = doc["results"][0]["summary"]
    for key in (
        "cards",
        "median_us",
        "p99_us",
        "heap",
        "flash_per_ride",
        "rides_per_2MB",
        "baseline",
        "ratios",
        "estimates",
        "lookup_fs_reads",
        "breakdown_median_us",
    ):
        assert key in s, key
    assert s["median_us"] > 0 and s["p99_us"] >= s["median_us"]


def test_reader_decides_every_tap_as_expected(doc):
    r = doc["results"][0]
    assert r["reader"]["ok"]
    assert r["reader"]["results"] == r["expected_results"]
    assert r["summary"]["results_match_expected"]
    assert r["reader"]["results"].get("GRANTED", 0) > 0
    assert r["reader"]["results"].get("UNKNOWN_CARD", 0) > 0
    assert r["reader"]["whitelist"]["cards"] == r["summary"]["cards"]


def test_reader_flash_per_ride(doc):
    r = doc["results"][0]
    fl = r["reader"]["flash"]
    s = r["summary"]
    # One 32-byte slot programmed on the NOR log per ride, nothing on littlefs,
    # no erase on the tap path.
    assert fl["nor_bytes_programmed"] == 32 * fl["rides"]
    assert fl["nor_program_ops"] == fl["rides"]
    assert fl["nor_sectors_erased"] == 0
    assert fl["fs_bytes_programmed"] == 0 and fl["fs_sectors_erased"] == 0
    assert s["flash_per_ride"]["reader_bytes_programmed"] == 32
    assert s["flash_per_ride"]["reader_pages_programmed"] == 1
    assert r["reader"]["counts"]["nor_pages_programmed_per_tap"] == 1
    # The wrapped ring: erases happen while idle, never inside a tap.
    w = r["reader"]["wrap"]
    assert w["laps"] > 1
    assert w["nor_erases_on_tap_path"] == 0 and w["fs_erases_on_tap_path"] == 0
    assert w["forced_erases"] == 0 and w["unlogged_rides"] == 0
    assert w["nor_erases_while_idle"] > 0


def test_capacity_and_heap(doc):
    s = doc["results"][0]["summary"]
    # 2 MB log: 512 sectors - 2 journal = 510 ring sectors, one kept erased ahead.
    assert s["rides_per_2MB"]["reader"] == (510 - 1) * 128
    assert s["rides_per_2MB"]["reader"] >= 50000
    h = s["heap"]
    assert h["limit_bytes"] <= 192 * 1024
    assert 0 < h["reader_live_bytes"] < h["limit_bytes"]
    assert h["free_at_end_of_loop"] > 0
    # Lookups touch flash a logarithmic number of times, not the whole list.
    reads = s["lookup_fs_reads"]["found"]
    assert 1 <= reads < s["cards"] / 4


def test_baseline_and_ratios(doc):
    s = doc["results"][0]["summary"]
    b = s["baseline"]
    # 300 cards fit as a dict in 192K today; if they ever stop fitting, the
    # driver must say why and take the timings from a labelled larger heap.
    if not b["fits_192K"]:
        assert "MemoryError" in b["error_192K"]
        assert b["timings_heap"] != "192K"
    assert b["results_match_expected"]
    # littlefs append + flush: at least a program of the record and far more
    # than the NOR log's 32 bytes; about one sector erase per ride.
    assert b["bytes_programmed_per_ride"] >= 10 * 32
    assert b["sectors_erased_per_ride"] >= 0.5
    assert b["pages_programmed_per_ride"] > 1
    assert 0 < s["rides_per_2MB"]["baseline"] <= 2 * 1024 * 1024 // 32
    ratios = s["ratios"]
    assert ratios["bytes_programmed_per_ride"] == pytest.approx(b["bytes_programmed_per_ride"] / 32, rel=0.01)
    assert ratios["sectors_erased_per_ride"] == "inf"
    est = s["estimates"]
    assert est["reader_flash_ms_per_ride"]["typ"] == pytest.approx(0.4)
    assert est["baseline_flash_ms_per_ride"]["typ"] > 45 * b["sectors_erased_per_ride"]


def test_targets_listed(doc):
    names = [t["target"] for t in doc["targets"]]
    assert any("192K" in n for n in names)
    assert any("50,000" in n for n in names)
    flash = [t for t in doc["targets"] if "flash per ride" in t["target"]][0]
    assert flash["met"] is True


@pytest.mark.parametrize("args", [["--cards", "abc"], ["--taps", "0"], ["--bogus"], ["--cards", "0"]])
def test_bad_arguments(args):
    res = _run(*args, timeout=30)
    assert res.returncode != 0
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error" in lines[0], res.stderr
