"""The gateway benchmark runs end to end (tools/bench/gateway.py --quick) with
the real brokers, gateway and ledger, and its JSON holds what
docs/benchmarks.md reports. Only what does not depend on timing is asserted:
every ride reached the gateway and the ledger exactly once with exact fees,
and the document has the figures and ratios."""

import json
import subprocess
import sys

import pytest

from liftcard_testing.paths import REPO

DRIVER = REPO / "tools" / "bench" / "gateway.py"


@pytest.fixture(scope="module")
def doc():
    res = subprocess.run(
        [sys.executable, str(DRIVER), "--quick"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_every_ride_reaches_the_ledger_once(doc):
    live = doc["live"]
    assert live["stored"] == live["rides"] == 3000
    assert live["gateway_exactly_once"] and live["ledger_exactly_once"] and live["ledger_fees_match"]
    for b in doc["backlog"]:
        assert b["ledger_exactly_once"], b


def test_document_has_the_figures_and_ratios(doc):
    for key in ("benchmark", "command", "machine", "targets", "baseline", "live", "ratios", "backlog"):
        assert key in doc
    assert doc["baseline"]["rides"] == 3000 and doc["baseline"]["rides_per_s"] > 0
    for key in ("gateway_ack", "ledger_ack"):
        assert doc["live"][key]["rides_per_s"] > 0
    assert set(doc["ratios"]) == {"gateway_ack_vs_baseline", "ledger_ack_vs_baseline", "backlog_peak_rss_full_vs_tenth"}
    small, full = doc["backlog"]
    assert full["rides"] > small["rides"]
    assert full["gateway_memory"]["peak_rss_kib"] > 0


def test_bad_arguments_are_one_line_errors():
    res = subprocess.run(
        [sys.executable, str(DRIVER), "--readers", "0"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert res.stderr.strip() == "gateway bench: --readers must be at least 1"
