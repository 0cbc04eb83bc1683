"""`liftcard-gateway status [--json]` and `liftcard-gateway report`: the JSON
carries the same figures as the tables; the report counts granted rides
(charged, free) and fees in integer fen per building and household, denied
taps apart; bad options are one line on stderr, exit 2."""

import datetime
import json
import sqlite3
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftcard_gateway import cli, refusals
from liftcard_gateway.config import load_config
from liftcard_gateway.db import connect
from liftcard_gateway.report import ReportError, month_range, report
from liftcard_gateway.store import Store
from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.epoch import date_to_day
from liftcard_protocol.ride import RideRecord
from liftcard_testing.configs import write_gateway_config

NO_BROKER = SimpleNamespace(host="127.0.0.1", port=1, credentials={"gateway": "unused"})
KEYS = {7: bytes(range(32)), 8: bytes(range(1, 33)), 9: bytes(range(2, 34))}
READERS = {7: 12, 8: 12, 9: 13}
NOV = date_to_day(datetime.date(2026, 11, 1)) * 86400
DEC = date_to_day(datetime.date(2026, 12, 1)) * 86400


def ride(seq, t, household, fee, result=0, flags=0):
    return RideRecord(seq, t, seq, 0x1122334455667788, household, 3, fee, result, flags, 1)


@pytest.fixture
def gw(tmp_path):
    cfg = load_config(write_gateway_config(tmp_path / "gw", NO_BROKER, KEYS, READERS))
    st = Store(cfg.db_path)
    for rid, bid in READERS.items():
        st.ensure_reader(rid, bid)
    yield cfg, st
    st.close()


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fill(st):
    st.store_batch(
        7,
        1,
        [
            ride(1, NOV + 100, 101, 40),
            ride(2, NOV + 200, 101, 0, flags=int(Flag.DEBOUNCED)),  # a re-tap: a free ride
            ride(3, NOV + 300, 102, 30, flags=int(Flag.CAPPED)),
            ride(4, NOV + 400, 0, 0, result=int(Result.UNKNOWN_CARD)),  # denied: not a ride
            ride(5, NOV + 500, 103, 0, result=int(Result.SUSPENDED)),
            ride(6, DEC + 100, 101, 40),  # December
        ],
    )
    st.store_batch(8, 1, [ride(1, NOV + 50, 101, 25), ride(2, NOV + 60, 104, 0, flags=int(Flag.FREE_CLASS))])
    st.store_batch(9, 1, [ride(1, NOV + 70, 201, 50, flags=int(Flag.LEGACY_UID))])


def test_report_counts_rides_fees_and_denied_taps_apart(gw, capsys):
    cfg, st = gw
    fill(st)
    code, out, err = run(capsys, "report", "--config", cfg.path, "--month", "2026-11", "--json")
    assert code == 0 and err == ""
    rep = json.loads(out)
    b12, b13 = rep["buildings"]
    assert (b12["building_id"], b12["rides"], b12["charged"], b12["free"], b12["fees_fen"], b12["denied"]) == (
        12, 5, 3, 2, 95, 2,
    )  # fmt: skip
    hh = {h["household"]: h for h in b12["households"]}
    assert (hh[101]["rides"], hh[101]["charged"], hh[101]["free"], hh[101]["fees_fen"]) == (3, 2, 1, 65)
    assert (hh[0]["rides"], hh[0]["denied"]) == (0, 1)
    assert (hh[103]["rides"], hh[103]["denied"]) == (0, 1)
    assert (b13["rides"], b13["fees_fen"]) == (1, 50)
    assert rep["total"] == {"rides": 6, "charged": 4, "free": 2, "fees_fen": 145, "denied": 2}

    code, out, _ = run(capsys, "report", "--config", cfg.path, "--building", 12, "--json")
    rep = json.loads(out)
    assert [b["building_id"] for b in rep["buildings"]] == [12]
    assert rep["total"]["fees_fen"] == 135  # every month: December's 40 too

    code, out, _ = run(capsys, "report", "--config", cfg.path, "--month", "2026-11")
    assert code == 0
    assert "building 12" in out and "building 13" in out
    total_line = [ln for ln in out.splitlines() if ln.startswith("all buildings")][0]
    assert total_line.split()[2:] == ["6", "4", "2", "145", "2"]


def test_month_follows_the_utc_offset(gw, capsys):
    cfg, st = gw
    # 30 Nov 20:00 UTC is 1 Dec 04:00 at UTC+8.
    st.store_batch(7, 1, [ride(1, DEC - 4 * 3600, 101, 40)])
    utc = report(connect(cfg.db_path, readonly=True), month="2026-11")
    east = report(connect(cfg.db_path, readonly=True), month="2026-12", utc_offset_min=480)
    assert utc["total"]["rides"] == 1 and east["total"]["rides"] == 1
    assert report(connect(cfg.db_path, readonly=True), month="2026-11", utc_offset_min=480)["total"]["rides"] == 0


@pytest.mark.parametrize(
    "args, word",
    [
        (["--month", "2026-13"], "--month"),
        (["--month", "Nov 2026"], "--month"),
        (["--building", "99"], "--building 99"),
        (["--month", "2026-11", "--utc-offset-min", "9999"], "--utc-offset-min"),
    ],
)
def test_report_bad_options_are_one_line(gw, capsys, args, word):
    cfg, st = gw
    fill(st)
    before = Path(cfg.db_path).read_bytes()
    code, out, err = run(capsys, "report", "--config", cfg.path, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and word in err and "Traceback" not in err
    assert Path(cfg.db_path).read_bytes() == before


def test_report_without_a_database(tmp_path, capsys):
    cfg = write_gateway_config(tmp_path / "gw", NO_BROKER, KEYS, READERS)
    code, out, err = run(capsys, "report", "--config", cfg)
    assert code == 1 and "no database yet" in err and len(err.strip().splitlines()) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([7, 8, 9]),
            st.integers(1, 6),  # household
            st.sampled_from([0, 0, 0, int(Result.UNKNOWN_CARD), int(Result.LOST), int(Result.AUTH_FAILED)]),
            st.integers(0, 65535),  # fee, u16 fen
        ),
        max_size=40,
    )
)
def test_report_matches_a_plain_sum(taps):
    """Whatever the taps: rides = granted, charged = granted with a fee,
    fees = the granted fees summed exactly in fen, denied taps apart."""
    with tempfile.TemporaryDirectory() as d:
        st_ = Store(Path(d) / "gateway.db")
        for rid, bid in READERS.items():
            st_.ensure_reader(rid, bid)
        seq = {7: 0, 8: 0, 9: 0}
        want: dict = {}
        for i, (rid, hh, result, fee) in enumerate(taps):
            seq[rid] += 1
            fee = fee if result == 0 else 0  # a denial carries fee 0 (formats.md)
            st_.store_batch(rid, i + 1, [ride(seq[rid], NOV + i, hh, fee, result)])
            w = want.setdefault((READERS[rid], hh), [0, 0, 0, 0, 0])
            if result == 0:
                w[0] += 1
                w[1 if fee else 2] += 1
                w[3] += fee
            else:
                w[4] += 1
        rep = report(st_.conn, month="2026-11")
        st_.close()
    got = {
        (b["building_id"], h["household"]): [h["rides"], h["charged"], h["free"], h["fees_fen"], h["denied"]]
        for b in rep["buildings"]
        for h in b["households"]
    }
    assert got == want
    assert rep["total"]["fees_fen"] == sum(w[3] for w in want.values())


def test_month_range_is_a_whole_month():
    lo, hi = month_range("2024-02")
    assert (hi - lo) == 29 * 86400  # 2024 is a leap year
    with pytest.raises(ReportError):
        month_range("2023-12")


def test_status_json_has_the_table_figures(gw, capsys):
    cfg, st = gw
    fill(st)
    st.store_batch(8, 2, [ride(5, NOV + 90, 101, 25)])  # a gap 3..4
    refusals.record(st.conn, 7, "mac", known=True)
    refusals.record(st.conn, 7, "mac", known=True)
    refusals.record(st.conn, 4242, "unknown_reader", known=False)
    code, out, err = run(capsys, "status", "--config", cfg.path, "--json")
    assert code == 0 and err == ""
    snap = json.loads(out)
    code, text, _ = run(capsys, "status", "--config", cfg.path)
    assert code == 0
    lines = text.splitlines()
    head = lines[0].split()
    by_reader = {}
    for ln in lines[2 : 2 + len(READERS)]:
        cells = ln.split()
        by_reader[int(cells[0])] = cells
    for r in snap["readers"]:
        cells = by_reader[r["reader_id"]]
        assert cells[1] == str(r["building_id"])
        assert cells[head.index("stored") - 1] == str(r["stored"])  # "last seen" is two words in the heading
        assert cells[-2] == str(r["open_gaps"]) and cells[-1] == str(r["legacy"])
    assert {r["reader_id"]: (r["stored"], r["open_gaps"], r["legacy"]) for r in snap["readers"]} == {
        7: (6, 0, 0),
        8: (3, 1, 0),
        9: (1, 0, 1),
    }
    assert snap["gaps"] == [{"reader_id": 8, "from_seq": 3, "to_seq": 4, "noticed_at": snap["gaps"][0]["noticed_at"]}]
    assert "open gaps:" in text and "\n8       3         4" in text.replace("  ", "  ")
    ref = {(x["reader_id"], x["reason"]): x["count"] for x in snap["refusals"]}
    assert ref == {(0, "unknown_reader"): 1, (7, "mac"): 2}
    assert "not configured  unknown_reader  1" in text and "7               mac             2" in text
    assert snap["upstream"] is None and snap["cards"] is None  # no [upstream], no [cards]
    assert snap["database"]["schema_version"] == len(__import__("liftcard_gateway.schema").schema.MIGRATIONS)


def test_status_json_on_a_database_being_written(gw, capsys):
    """The JSON reads one consistent snapshot; every figure is a number or null."""
    cfg, st = gw
    fill(st)
    code, out, _ = run(capsys, "status", "--config", cfg.path, "--json")
    snap = json.loads(out)
    for r in snap["readers"]:
        for k, v in r.items():
            assert v is None or isinstance(v, (int, float, bool)), k
    c = sqlite3.connect(cfg.db_path)
    assert c.execute("SELECT count(*) FROM rides").fetchone()[0] == sum(r["stored"] for r in snap["readers"])
    c.close()
