"""A building's monthly statement (tools/liftcard_tools/statement.py): the
numbers against an independent count of the rides and costs put in, the local
month's edges, one household's own lines, the text and the self-contained
HTML page, and the page in a real headless Chromium."""

import datetime
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_protocol import upstream as uf
from liftcard_protocol.epoch import LIFTCARD_EPOCH
from liftcard_tools import accountbook as book
from liftcard_tools.ledgerdb import LedgerDB
from liftcard_tools.statement import render_html, render_text, statement, yuan
from liftcard_testing.configs import write_ledger_config
from liftcard_testing.devpki import make_dev_pki

REPO = Path(__file__).resolve().parents[1]
B = 12
CST = datetime.timezone(datetime.timedelta(hours=8))


def lt(y, mo, d, h, mi=0):
    """A ride time (liftcard epoch) from a Beijing wall-clock time."""
    return int(datetime.datetime(y, mo, d, h, mi, tzinfo=CST).timestamp()) - LIFTCARD_EPOCH


# (seq, household, floor, fee, result, flags, local time)
RIDES = [
    (1, 201, 3, 100, 0, 0, lt(2026, 10, 15, 9)),  # October: only the opening balance
    (2, 201, 3, 100, 0, 0, lt(2026, 11, 1, 0, 30)),  # Nov 1 00:30 local = Oct 31 16:30 UTC: November
    (3, 201, 3, 100, 0, 0, lt(2026, 11, 3, 8)),
    (4, 301, 5, 150, 0, 0, lt(2026, 11, 3, 8, 20)),
    (5, 301, 5, 0, 0, 0x10, lt(2026, 11, 4, 18)),  # free class
    (6, 302, 5, 0, 0, 0x08, lt(2026, 11, 5, 18, 5)),  # capped to 0
    (7, 302, 5, 70, 0, 0x08, lt(2026, 11, 6, 18, 10)),  # capped, charged
    (8, 0, 0xFF, 0, 1, 0, lt(2026, 11, 7, 23)),  # unknown card: denied
    (9, 302, 5, 0, 2, 0, lt(2026, 11, 8, 7)),  # suspended: denied
    (10, 201, 3, 100, 0, 0, lt(2026, 11, 30, 23, 59)),
    (11, 201, 3, 100, 0, 0, lt(2026, 12, 1, 0, 30)),  # Dec 1 local = Nov 30 UTC: December
]
REGISTER = [(B, 101, 0), (B, 201, 1), (B, 301, 2), (B, 302, 2)]


def fill(db):
    rides = [uf.UpRide(s, t, s, 0xC000 + h, h, f, fee, res, fl, 1) for s, h, f, fee, res, fl, t in RIDES]
    db.store(uf.Batch("gw1", 1, 7, B, tuple(rides)))
    db.store(uf.Batch("gw1", 2, 8, 13, (uf.UpRide(1, lt(2026, 11, 3, 8), 1, 1, 201, 3, 999, 0, 0, 1),)))  # elsewhere
    book.import_register(db.sql, REGISTER)
    book.enter_cost(db.sql, B, 80, "October check", datetime.date(2026, 10, 20), 480)
    book.enter_cost(db.sql, B, 1001, "door sensor", datetime.date(2026, 11, 12), 480)
    book.enter_cost(db.sql, B, 500, "next month", datetime.date(2026, 12, 1), 480)


@pytest.fixture
def db(tmp_path):
    d = LedgerDB(tmp_path / "ledger.db")
    fill(d)
    yield d
    d.close()


def test_the_numbers_of_a_month(db):
    s = statement(db, B, "2026-11")
    nov = [r for r in RIDES if 2 <= r[0] <= 10]
    t = s.totals
    assert (t.rides, t.charged, t.free, t.denied) == (7, 5, 2, 2)
    assert t.fees_fen == sum(r[3] for r in nov if r[4] == 0) == 520
    rows = {h.household: h for h in s.households}
    assert sorted(rows) == [0, 101, 201, 301, 302]  # the register, and the unknown card's taps
    assert (rows[201].counts.charged, rows[201].fees_fen, rows[201].floor) == (3, 300, 1)
    assert (rows[301].counts.rides, rows[301].counts.free, rows[301].fees_fen) == (2, 1, 150)
    assert (rows[302].counts.rides, rows[302].counts.denied, rows[302].fees_fen) == (2, 1, 70)
    assert (rows[0].counts.denied, rows[0].floor) == (1, None)
    assert (rows[101].counts.rides, rows[101].fees_fen, rows[101].floor) == (0, 0, 0)
    # the household's fees from the book equal its rides' fees
    for h in s.households:
        assert h.fees_fen == h.counts.fees_fen
    floors = {f.floor: f.counts for f in s.floors}
    assert (floors[3].charged, floors[3].fees_fen) == (3, 300)
    assert (floors[5].rides, floors[5].fees_fen, floors[5].denied) == (4, 220, 1)
    assert floors[0xFF].denied == 1
    # hours: local wall clock
    assert s.hours[0] == 1 and s.hours[8] == 2 and s.hours[18] == 3 and s.hours[23] == 1 and sum(s.hours) == 7
    # the fund: October's ride and cost before, November's in and out
    assert s.fund_opening_fen == 100 - 80
    assert (s.fund_in_fen, s.fund_out_fen) == (520, 1001)
    assert s.fund_closing_fen == 20 + 520 - 1001
    # costs of the month, shared by the register's floors: 1001 over weights 0, 1, 2, 2
    assert [(c.memo, c.amount_fen) for c in s.costs] == [("door sensor", 1001)]
    assert [(x.household, x.share) for x in s.costs[0].shares] == [(101, 0), (201, 200), (301, 401), (302, 400)]
    assert sum(x.share for x in s.costs[0].shares) == 1001
    assert {h.household: h.cost_share_fen for h in s.households} == {0: 0, 101: 0, 201: 200, 301: 401, 302: 400}
    # December opens where November closed
    assert statement(db, B, "2026-12").fund_opening_fen == s.fund_closing_fen


def test_one_households_own_lines(db):
    s = statement(db, B, "2026-11", household=302)
    assert [h.household for h in s.households] == [302]
    assert (s.totals.rides, s.totals.denied, s.totals.fees_fen) == (2, 1, 70)
    assert [[(x.household, x.share) for x in c.shares] for c in s.costs] == [[(302, 400)]]
    assert sum(s.hours) == 2
    with pytest.raises(book.BookError, match="household 999 is not known in building 12"):
        statement(db, B, "2026-11", household=999)


def test_another_time_zone_moves_the_edges(db):
    utc = statement(db, B, "2026-11", utc_offset_min=0)
    assert utc.totals.rides == 7  # ride 2 (Oct 31 UTC) out, ride 11 (Nov 30 UTC) in
    assert utc.hours[16] == 1 and utc.hours[0] == 2  # 00:30 and 08:xx Beijing = 16:30 and 00:xx UTC


@given(fen=st.integers(-(10**12), 10**12))
def test_yuan_is_exact(fen):
    s = yuan(fen)
    assert re.fullmatch(r"-?\d+\.\d\d", s)
    assert int(s.replace(".", "")) == fen


def test_text_and_a_self_contained_page(db):
    s = statement(db, B, "2026-11")
    text = render_text(s)
    assert "rides 7 (charged 5, free 2); denied taps 2; fees 5.20 yuan" in text
    assert "fund: opening 0.20, in 5.20, out 10.01, closing -4.61 yuan" in text
    assert "Cost 2, 2026-11-12: door sensor, 10.01 yuan, shared by floor" in text
    page = render_html(s)
    # nothing fetched: no scripts, stylesheets, images or fonts from anywhere
    assert not re.search(r"<script|<link|<img|<iframe|src=|url\(|@import", page, re.I)
    assert page.count("<svg") == 2 and 'id="chart-hours"' in page and 'id="chart-floors"' in page


def test_the_memo_is_escaped_on_the_page(db):
    book.enter_cost(db.sql, B, 10, "<script>alert(1)</script>", datetime.date(2026, 11, 13), 480)
    page = render_html(statement(db, B, "2026-11"))
    assert "<script>" not in page and "&lt;script&gt;" in page


class FakeBank:
    host, port = "127.0.0.1", 1


@pytest.fixture
def cli(tmp_path_factory, tmp_path):
    pki = make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw1"])
    cfg = write_ledger_config(tmp_path, pki, FakeBank, ["gw1"])
    d = LedgerDB(tmp_path / "ledger-data" / "ledger.db")
    fill(d)
    d.close()

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "liftcard_tools.ledger", "statement", "--config", str(cfg), *a],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )

    return run


def test_the_statement_command(cli, tmp_path):
    out = tmp_path / "b12.html"
    r = cli("--building", "12", "--month", "2026-11", "--html", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Elevator fund statement, building 12, 2026-11\n")
    assert 'id="fees-fen" data-fen="520"' in out.read_text()
    r = cli("--building", "12", "--month", "2026-11", "--household", "201")
    assert r.returncode == 0 and "household 201" in r.stdout.splitlines()[0]
    for args, msg in [
        (("--building", "12", "--month", "2026-13"), "--month must be YYYY-MM"),
        (("--building", "12", "--month", "Nov"), "--month must be YYYY-MM"),
        (("--building", "-1", "--month", "2026-11"), "--building must be"),
        (("--building", "12", "--month", "2026-11", "--household", "42"), "household 42 is not known"),
        (("--building", "12", "--month", "2026-11", "--html", str(tmp_path / "no" / "x.html")), "cannot write"),
    ]:
        r = cli(*args)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "no").exists()


def test_the_page_in_a_browser(db, tmp_path):
    from liftcard_testing.browser import Browser, browser_missing

    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    s = statement(db, B, "2026-11")
    page = tmp_path / "statement.html"
    page.write_text(render_html(s), encoding="utf-8")
    with Browser() as b:
        b.open(page.as_uri())
        b.screenshot(tmp_path / "statement.png")
        assert b.console_errors() == []
        assert b.text("#building") == "12" and b.text("#month") == "2026-11"
        t = s.totals
        assert [b.text("#" + i) for i in ("rides", "charged-rides", "free-rides", "denied-taps")] == [
            str(t.rides),
            str(t.charged),
            str(t.free),
            str(t.denied),
        ]
        assert b.text("#fees-fen") == yuan(t.fees_fen) == "5.20"
        assert [b.text("#fund-" + k) for k in ("opening", "in", "out", "closing")] == [
            yuan(s.fund_opening_fen),
            yuan(s.fund_in_fen),
            yuan(s.fund_out_fen),
            yuan(s.fund_closing_fen),
        ]
        for h in s.households:
            row = 'tr.household[data-household="%d"] ' % h.household
            assert b.text(row + "td.fees") == yuan(h.fees_fen)
            assert b.text(row + "td.share") == yuan(h.cost_share_fen)
            assert b.text(row + "td.rides") == str(h.counts.rides)
            assert b.text(row + "td.denied") == str(h.counts.denied)
        for f in s.floors:
            assert b.text('tr.floor[data-floor="%d"] td.fees' % f.floor) == yuan(f.counts.fees_fen)
        # the charts are drawn from the same numbers, and drawn (non-empty boxes)
        bars = b.script(
            "return Array.from(document.querySelectorAll('#chart-hours rect.bar'))"
            ".map(r => [Number(r.dataset.hour), Number(r.dataset.value), r.getBBox().height])"
        )
        assert [v for _, v, _ in sorted(bars)] == s.hours
        assert all((hgt > 0) == (v > 0) for _, v, hgt in bars)
        fee_bars = b.script(
            "return Array.from(document.querySelectorAll('#chart-floors rect.bar'))"
            ".map(r => [Number(r.dataset.floor), Number(r.dataset.value)])"
        )
        assert sorted(map(tuple, fee_bars)) == [(f.floor, f.counts.fees_fen) for f in s.floors]
        assert b.text("section.cost .memo") == "door sensor"
    assert (tmp_path / "statement.png").stat().st_size > 1000


tap = st.tuples(
    st.integers(1, 6),  # household (registered 1..5; 6 is not)
    st.integers(0, 7),  # destination floor
    st.integers(0, 500),  # fee
    st.sampled_from([0, 0, 0, 1, 2, 5]),  # result
    st.integers(lt(2026, 10, 25, 0), lt(2026, 12, 5, 0)),  # around November
)


@settings(max_examples=40, deadline=None)
@given(taps=st.lists(tap, min_size=1, max_size=40), costs=st.lists(st.integers(1, 10**6), max_size=3))
def test_a_statement_adds_up_whatever_the_rides(tmp_path_factory, taps, costs):
    d = LedgerDB(tmp_path_factory.mktemp("prop") / "ledger.db")
    try:
        rides = [
            uf.UpRide(i + 1, t, 0, 0xD000 + h, h, f, fee if res == 0 else 0, res, 0, 1)
            for i, (h, f, fee, res, t) in enumerate(taps)
        ]
        d.store(uf.Batch("gw1", 1, 7, B, tuple(rides)))
        book.import_register(d.sql, [(B, h, h % 4) for h in range(1, 6)])
        for i, amount in enumerate(costs):
            book.enter_cost(d.sql, B, amount, "c%d" % i, datetime.date(2026, 11, 1 + 10 * i), 480)
        s = statement(d, B, "2026-11")
        start, end = lt(2026, 11, 1, 0), lt(2026, 12, 1, 0)
        nov = [r for r in rides if start <= r.time < end]
        granted = [r for r in nov if r.result == 0]
        assert s.totals.rides == len(granted) == sum(s.hours)
        assert s.totals.denied == len(nov) - len(granted)
        assert s.totals.charged == sum(1 for r in granted if r.fee > 0)
        assert s.totals.fees_fen == sum(r.fee for r in granted) == s.fund_in_fen
        assert sum(h.fees_fen for h in s.households) == s.fund_in_fen
        assert sum(f.counts.fees_fen for f in s.floors) == s.fund_in_fen
        before = sum(r.fee for r in rides if r.result == 0 and r.time < start)
        assert s.fund_opening_fen == before
        assert s.fund_out_fen == sum(costs) == sum(h.cost_share_fen for h in s.households)
        assert s.fund_closing_fen == s.fund_opening_fen + s.fund_in_fen - s.fund_out_fen
        assert book.verify_books(d.sql) == []
    finally:
        d.close()
