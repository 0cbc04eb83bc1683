"""The ledger's account book (tools/liftcard_tools/accountbook.py): postings in
integer fen in the ride's own transaction, books that balance, costs shared by
floor against the household register, and the commands that enter them."""

import datetime
import sqlite3
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_protocol import upstream as uf
from liftcard_protocol.epoch import LIFTCARD_EPOCH
from liftcard_tools import accountbook as book
from liftcard_tools import ledger as L
from liftcard_tools.ledgerdb import LedgerDB
from liftcard_testing.configs import write_ledger_config
from liftcard_testing.devpki import make_dev_pki

REPO = Path(__file__).resolve().parents[1]
B = 12
NOV = int(datetime.datetime(2026, 11, 10, 2, 0, tzinfo=datetime.timezone.utc).timestamp()) - LIFTCARD_EPOCH


class FakeBank:
    host, port = "127.0.0.1", 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw1"])


@pytest.fixture
def db(tmp_path):
    d = LedgerDB(tmp_path / "ledger.db")
    yield d
    d.close()


def ride(seq, household=5, fee=40, result=0, flags=0, floor=4, t=None):
    return uf.UpRide(
        seq, NOV + seq if t is None else t, seq, 0x1000 + household, household, floor, fee, result, flags, 1
    )


def batch(rides, batch_id=1, reader=7, building=B, gid="gw1"):
    return uf.Batch(gid, batch_id, reader, building, tuple(rides))


def balances(db):
    return dict(db.sql.all("SELECT account, sum(amount) FROM postings GROUP BY account"))


MIX = [
    ride(1, household=5, fee=40),  # charged
    ride(2, household=5, fee=0, flags=0x10),  # free class
    ride(3, household=6, fee=0, flags=0x08),  # capped to nothing
    ride(4, household=6, fee=25, flags=0x08),  # capped, still charged
    ride(5, household=0, fee=0, result=1, floor=0xFF),  # unknown card: denied
    ride(6, household=6, fee=0, result=2),  # suspended: denied
    ride(7, household=6, fee=0, flags=0x04),  # debounced re-tap
]


def test_charged_rides_debit_the_household_and_credit_the_fund_others_post_nothing(db):
    assert db.store(batch(MIX)) == 7
    assert balances(db) == {"household:12:5": 40, "household:12:6": 25, "fund:12": -65}
    entries = db.sql.all("SELECT entry, count(*), sum(amount) FROM postings GROUP BY entry ORDER BY entry")
    assert entries == [("ride:gw1:7:1", 2, 0), ("ride:gw1:7:4", 2, 0)]
    (at,) = db.sql.one("SELECT DISTINCT at FROM postings WHERE entry='ride:gw1:7:1'")
    assert at == LIFTCARD_EPOCH + NOV + 1  # the ride's own time
    assert book.verify_books(db.sql) == []
    t = db.totals()[0]
    assert (t["rides"], t["charged"], t["free"], t["denied"], t["fees_fen"]) == (7, 2, 3, 2, 65)


def test_a_ride_stored_again_posts_nothing_again(db):
    db.store(batch(MIX))
    assert db.store(batch(MIX, batch_id=2)) == 0
    assert db.store(batch(MIX[2:5], batch_id=3)) == 0
    assert balances(db) == {"household:12:5": 40, "household:12:6": 25, "fund:12": -65}
    assert db.sql.one("SELECT count(*) FROM postings") == (4,)
    assert book.verify_books(db.sql) == []


def test_a_posting_never_half_applies(db):
    # A posting that fails takes its ride (and the batch record) with it: no ride without its money.
    db.sql.execute("CREATE TRIGGER no_postings BEFORE INSERT ON postings BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        db.store(batch(MIX))
    assert db.sql.one("SELECT count(*) FROM rides") == (0,)
    assert db.sql.one("SELECT count(*) FROM batches") == (0,)
    db.sql.execute("DROP TRIGGER no_postings")
    assert db.store(batch(MIX)) == 7  # the resend stores and posts it all
    assert book.verify_books(db.sql) == []


def test_an_entry_that_does_not_balance_is_refused():
    with pytest.raises(book.BookError, match="does not balance"):
        book.posting_rows("x", B, 0, [("household:12:5", 40), ("fund:12", -39)])
    with pytest.raises(book.BookError):
        book.posting_rows("x", B, 0, [("household:12:5", 0), ("fund:12", 0)])


def test_zero_postings_are_refused_by_the_schema(db):
    with pytest.raises(sqlite3.IntegrityError):
        db.sql.execute("INSERT INTO postings (entry, building_id, account, at, amount) VALUES ('x', 1, 'fund:1', 0, 0)")


def test_verify_finds_every_kind_of_damage(db):
    db.store(batch(MIX))
    db.sql.execute("INSERT INTO postings (entry, building_id, account, at, amount) VALUES ('x', 12, 'fund:12', 0, 5)")
    problems = book.verify_books(db.sql)
    assert any("sum to 5" in p for p in problems) and any("entry x" in p for p in problems)
    db.sql.execute("DELETE FROM postings WHERE entry='x'")
    db.sql.execute("DELETE FROM postings WHERE entry='ride:gw1:7:4'")
    assert any("charged rides" in p for p in book.verify_books(db.sql))


def test_an_old_ledger_gets_its_charged_rides_posted_when_it_migrates(tmp_path):
    p = tmp_path / "old.db"
    c = sqlite3.connect(str(p))  # version 1: rides and batches, no book
    L.MIGRATIONS[0](
        type("S", (), {"statements": lambda self, t: c.executescript(t.format(rides_id="", float="REAL"))})()
    )
    c.executemany(
        "INSERT INTO rides VALUES ('gw1', 7, ?, 12, ?, 0, 'c', ?, 4, ?, ?, 0, 1, NULL, 1, 0)",
        [(1, NOV, 5, 40, 0), (2, NOV, 6, 0, 0), (3, NOV, 6, 30, 0), (4, NOV, 0, 0, 1)],
    )
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    db = LedgerDB(p)
    try:
        assert balances(db) == {"household:12:5": 40, "household:12:6": 30, "fund:12": -70}
        assert book.verify_books(db.sql) == []
    finally:
        db.close()


# -- sharing a cost by floor ---------------------------------------------------------------

households = st.lists(
    st.tuples(st.integers(1, 2**24 - 1), st.integers(0, 30)), min_size=1, max_size=40, unique_by=lambda x: x[0]
).filter(lambda hs: any(f > 0 for _, f in hs))


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(0, 10**11), hs=households)
def test_shares_sum_exactly_and_follow_the_weights(amount, hs):
    shares = book.share_cost(amount, hs)
    assert sum(s.share for s in shares) == amount
    total = sum(f for _, f in hs)
    for s in shares:
        exact = Fraction(amount * s.floor, total)
        assert s.share in (exact.numerator // exact.denominator, -(-exact.numerator // exact.denominator))
        assert s.weight == s.floor
        if s.floor == 0:
            assert s.share == 0  # the ground floor pays nothing
    by_floor = sorted(shares, key=lambda s: s.floor)
    assert all(a.share <= b.share for a, b in zip(by_floor, by_floor[1:]) if a.floor < b.floor)


@settings(max_examples=100, deadline=None)
@given(amount=st.integers(0, 10**9), hs=households, data=st.data())
def test_sharing_is_deterministic_whatever_the_order(amount, hs, data):
    shuffled = data.draw(st.permutations(hs))
    assert book.share_cost(amount, hs) == book.share_cost(amount, shuffled)


def test_largest_remainder_ties_go_to_the_lower_household():
    # 100 fen over three equal floors: 33 each and one fen left; it goes to household 1.
    assert [s.share for s in book.share_cost(100, [(3, 2), (1, 2), (2, 2)])] == [34, 33, 33]
    # floors 1, 2, 3 and a ground-floor shop: 1000 fen -> 166.67, 333.33, 500, 0
    assert [(s.household, s.share) for s in book.share_cost(1000, [(10, 1), (11, 2), (12, 3), (13, 0)])] == [
        (10, 167),
        (11, 333),
        (12, 500),
        (13, 0),
    ]


def test_a_cost_nobody_can_share_is_refused():
    with pytest.raises(book.BookError, match="ground floor"):
        book.share_cost(100, [(1, 0), (2, 0)])


# -- the register --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "line 1: the header"),
        ("building,household\n12,5\n", "line 1: the header"),
        ("building,household,floor\n", "lists no household"),
        ("building,household,floor\n12,5\n", "line 2: needs 3 fields"),
        ("building,household,floor\n12,5,3\n12,x,3\n", "line 3: household must be an integer"),
        ("building,household,floor\n12,5,-1\n", "line 2: floor must be an integer 0 .. 255"),
        ("building,household,floor\n12,5,\u00b2\n", "line 2: floor must be an integer 0 .. 255"),
        ("building,household,floor\n0,5,1\n", "line 2: building must be"),
        ("building,household,floor\n12,5,1\n12,5,2\n", "line 3: household 5 of building 12 is already on line 2"),
    ],
)
def test_a_bad_register_names_its_line(text, msg):
    with pytest.raises(book.BookError, match=msg):
        book.parse_register(text)


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 2**30 - 1), st.integers(1, 2**24 - 1), st.integers(0, 255)),
        min_size=1,
        max_size=20,
        unique_by=lambda r: r[:2],
    )
)
def test_a_register_round_trips(rows):
    text = "building,household,floor\n" + "".join("%d,%d,%d\n" % r for r in rows)
    assert book.parse_register(text) == rows


def test_an_import_replaces_the_buildings_it_names(db):
    book.import_register(db.sql, [(12, 1, 0), (12, 2, 3), (13, 1, 2)])
    book.import_register(db.sql, [(12, 2, 3), (12, 4, 5)])
    assert book.register(db.sql, 12) == [(2, 3), (4, 5)]
    assert book.register(db.sql, 13) == [(1, 2)]  # not in the second file: kept


def test_a_cost_is_charged_to_the_fund_and_shared(db):
    db.store(batch([ride(1, fee=500), ride(2, household=6, fee=700)]))
    book.import_register(db.sql, [(B, 5, 2), (B, 6, 4), (B, 7, 0)])
    cid, shares = book.enter_cost(db.sql, B, 1001, "door sensor", datetime.date(2026, 11, 20), 480)
    assert [(s.household, s.share) for s in shares] == [(5, 334), (6, 667), (7, 0)]
    assert balances(db)["fund:12"] == -1200 + 1001
    assert balances(db)["cost:12"] == -1001
    assert db.sql.all("SELECT household, share FROM cost_shares WHERE cost_id=? ORDER BY household", (cid,)) == [
        (5, 334),
        (6, 667),
        (7, 0),
    ]
    (at,) = db.sql.one("SELECT at FROM costs WHERE id=?", (cid,))
    assert at == int(datetime.datetime(2026, 11, 19, 16, 0, tzinfo=datetime.timezone.utc).timestamp())  # local midnight
    assert book.verify_books(db.sql) == []


def test_a_cost_without_a_register_changes_nothing(db):
    db.store(batch([ride(1, fee=500)]))  # a household rode; its floor in the ride is no register
    with pytest.raises(book.BookError, match="no household register"):
        book.enter_cost(db.sql, B, 100, "x", datetime.date(2026, 11, 2), 480)
    assert db.sql.one("SELECT count(*) FROM costs") == (0,)
    assert balances(db) == {"household:12:5": 500, "fund:12": -500}


# -- the commands ------------------------------------------------------------------------------


def run(*a):
    return subprocess.run(
        [sys.executable, "-m", "liftcard_tools.ledger", *a], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def one_line_error(r, code=2):
    assert r.returncode == code, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("liftcard-ledger: ") and "Traceback" not in r.stderr
    return r.stderr


def test_the_book_commands_and_their_refusals(tmp_path, pki):
    cfg = write_ledger_config(tmp_path, pki, FakeBank, ["gw1"])
    c = str(cfg)
    dbp = tmp_path / "ledger-data" / "ledger.db"
    reg = tmp_path / "reg.csv"
    reg.write_text("building,household,floor\n12,101,0\n12,201,1\n12,301,2\n")
    # a cost before the register: refused, nothing written
    assert "no household register" in one_line_error(
        run("cost", "--config", c, "--building", "12", "--amount-fen", "300", "--memo", "m")
    )
    r = run("households", "import", str(reg), "--config", c)
    assert r.returncode == 0 and r.stdout.strip() == "building 12: 3 households"
    bad = tmp_path / "bad.csv"
    bad.write_text("building,household,floor\n12,101,0\n12,102,upstairs\n")
    assert "bad.csv: line 3: floor must be" in one_line_error(run("households", "import", str(bad), "--config", c))
    assert "cannot read" in one_line_error(run("households", "import", str(tmp_path / "none.csv"), "--config", c))
    r = run("households", "list", "--config", c, "--building", "12")
    assert r.returncode == 0 and [ln.split() for ln in r.stdout.splitlines()[2:]] == [
        ["101", "0"],
        ["201", "1"],
        ["301", "2"],
    ]
    for argv, msg in [
        (("--amount-fen", "-5"), "--amount-fen must be an integer"),
        (("--amount-fen", "12.5"), "--amount-fen must be an integer"),
        (("--amount-fen", "0"), "--amount-fen must be an integer"),
        (("--amount-fen", "\u00b2"), "--amount-fen must be an integer"),
        (("--amount-fen", "5", "--date", "2026-13-01"), "--date must be YYYY-MM-DD"),
        (("--amount-fen", "5", "--building", "x"), "--building must be"),
    ]:
        args = ["cost", "--config", c, "--building", "12", "--memo", "lift", *argv]
        assert msg in one_line_error(run(*args))
    assert "--memo must be" in one_line_error(
        run("cost", "--config", c, "--building", "12", "--amount-fen", "5", "--memo", " ")
    )
    conn = sqlite3.connect(str(dbp))
    assert conn.execute("SELECT count(*) FROM costs").fetchone() == (0,)
    r = run(
        "cost",
        "--config",
        c,
        "--building",
        "12",
        "--amount-fen",
        "300",
        "--memo",
        "annual inspection",
        "--date",
        "2026-11-03",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "cost 1: 300 fen from fund:12 on 2026-11-03, shared among 2 households"
    assert [ln.split() for ln in r.stdout.splitlines()[3:]] == [
        ["101", "0", "0", "0"],
        ["201", "1", "1", "100"],
        ["301", "2", "2", "200"],
    ]
    assert conn.execute("SELECT account, amount FROM postings ORDER BY account").fetchall() == [
        ("cost:12", -300),
        ("fund:12", 300),
    ]
    conn.close()
    r = run("verify", "--config", c)
    assert r.returncode == 0 and r.stdout.strip() == "the books balance"
