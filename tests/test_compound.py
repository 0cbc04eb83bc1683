"""The compound (liftcard-demo, liftcard_tools.compound) at a small size:
every process real (local Mosquitto, gateway, TLS bank broker, ledger, one
virtual reader per elevator), the traffic and the faults of its script, then
its reconciliation, asserted, the elevator funds' account book included (the
household register, the maintenance and repair costs shared by floor, each
building's statement page in headless chromium); and broken evidence (a ride
deleted and a cost share changed in the ledger's database before the check)
makes it exit 1.

The model pieces (population, clock, money formatting) and the
reconciliation's own checks are exercised without processes too.
"""

import copy
import dataclasses
import datetime
import io
import random
import shlex
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import load_config
from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.epoch import date_to_day
from liftcard_testing import procs
from liftcard_testing.bankbroker import tls_connack
from liftcard_testing.configs import BrokerLogin, write_gateway_config
from liftcard_testing.mosquitto import free_port
from liftcard_testing.wait import wait_for
from liftcard_tools import demo
from liftcard_tools.accountbook import share_cost
from liftcard_tools.compound import cli, pages
from liftcard_tools.compound.funds import share_by_floor
from liftcard_tools.compound.population import elevators_per_building, make_compound
from liftcard_tools.compound.reconcile import reconcile, yuan
from liftcard_tools.compound.schedule import ACTIVE_S, Clock, hm, start_epoch_for
from liftcard_tools.compound.script import MAINTENANCE_FEN, make_script

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)

SMALL = ["--buildings", "2", "--elevators", "3", "--households", "3", "--days", "2", "--speed", "9000"]


def _args(argv):
    a = cli.build_parser().parse_args(argv)
    cli.check_args(a)
    return a


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = io.StringIO()
    d = tmp_path_factory.mktemp("compound") / "work"
    outcome = cli.run(_args([*SMALL, "--seed", "7", "--dir", str(d)]), out)
    return outcome, out.getvalue()


def test_the_small_compound_reconciles(small):
    outcome, text = small
    assert outcome.code == 0, text
    assert outcome.report.ok, outcome.report.problems
    assert "RECONCILED" in text and "NOT RECONCILED" not in text
    ev = outcome.evidence
    n = sum(len(v) for v in ev.dumps.values())
    # Every tap of the script was played and logged, and is once at the gateway and once at the ledger.
    assert n == len(outcome.script.taps) == len(ev.played) == len(ev.gw_rows) == len(ev.ledger_rows)
    assert "rides: %d logged by the readers; the gateway holds %d, the ledger %d" % (n, n, n) in text
    # The ledger's own totals (its CLI) agree with the reader logs, per reader.
    assert sum(t["rides"] for t in ev.ledger_totals.values()) == n
    assert sum(t["fees_fen"] for t in ev.ledger_totals.values()) == sum(row["fee"] for row in ev.gw_rows)
    # The account book (double entry): each household debited its fees, each fund credited its building's, balanced.
    assert sum(ev.book.households.values()) == sum(ev.book.fund_in.values()) == sum(r["fee"] for r in ev.gw_rows)
    assert ev.book.unbalanced == []


def _ledger_shares(outcome) -> dict:
    """{cost id: (building, amount, {household: (floor, share)}, memo)} straight from the ledger's database."""
    con = sqlite3.connect(str(outcome.work / "ledger" / "ledger-data" / "ledger.db"))
    try:
        out = {
            cid: (b, amount, {}, memo)
            for cid, b, amount, memo in con.execute("SELECT id, building_id, amount, memo FROM costs")
        }
        for cid, hh, floor, share in con.execute("SELECT cost_id, household, floor, share FROM cost_shares"):
            out[cid][2][hh] = (floor, share)
        return out
    finally:
        con.close()


def test_the_funds_pay_maintenance_and_a_repair_shared_by_floor(small):
    outcome, text = small
    ev, script, compound = outcome.evidence, outcome.script, outcome.compound
    # The register came from the population: every household on its floor (the one moving in once it had).
    assert (
        "the bank imports its household register into the ledger: %d households"
        % (sum(not h.moves_in for h in compound.households()))
        in text
    )
    for b in compound.buildings:
        assert sorted(ev.book.register[b.building_id]) == sorted((h.household_id, h.floor) for h in b.households)
    mover = next(h for h in compound.households() if h.moves_in)
    # Entered as the run went, printed as they happened.
    assert "** the bank adds household %d to the household register" % mover.household_id in text
    assert "** the bank pays " in text and "elevator maintenance from each building's fund" in text
    shares = _ledger_shares(outcome)
    assert len(shares) == len(script.costs) == len(compound.buildings) + 1
    for cid, (b, amount, _, _) in shares.items():
        assert "ledger: cost %d: %d fen from fund:%d" % (cid, amount, b) in text
    for b in compound.buildings:
        bid = b.building_id
        assert sum(x[1] for x in shares.values() if x[0] == bid) == ev.book.fund_out[bid]
        assert MAINTENANCE_FEN * len(b.reader_ids) in [x[1] for x in shares.values() if x[0] == bid]
        fees = sum(r["fee"] for r in ev.ledger_rows if r["building_id"] == bid)
        assert ev.book.fund_in[bid] == fees
        assert ev.book.fund_closing[bid] == fees - ev.book.fund_out[bid]
        assert (
            "building %d: fund in %s yuan (fees), out %s (costs), balance %s"
            % (
                bid,
                yuan(fees),
                yuan(ev.book.fund_out[bid]),
                yuan(fees - ev.book.fund_out[bid]),
            )
            in text
        )
    for b, amount, by_hh, _ in shares.values():
        assert sum(s for _, s in by_hh.values()) == amount
        # The ledger's sharing is the population's floors under the rule of docs/ledger.md.
        floors = {h.household_id: h.floor for h in compound.building(b).households}
        assert all(floors[h] == f for h, (f, _) in by_hh.items())
        assert {h: s for h, (_, s) in by_hh.items()} == share_by_floor(amount, [(h, f) for h, (f, _) in by_hh.items()])
    # Frozen at entry: the maintenance before the family moved in left it out, the repair after it did not.
    maint = [x[2] for x in shares.values() if x[0] == mover.building_id and "maintenance" in x[3]]
    repair = [x for x in shares.values() if x[3] == script.costs[-1].memo]
    assert len(repair) == 1 and repair[0][0] == mover.building_id and mover.household_id in repair[0][2]
    assert maint and all(mover.household_id not in by for by in maint)


def test_a_buildings_statement_page_shows_floors_and_cost_shares(small):
    from liftcard_testing.browser import Browser, browser_missing

    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    outcome, text = small
    ev, compound = outcome.evidence, outcome.compound
    bid = outcome.script.costs[-1].building_id  # the building with a repair as well as its maintenance
    line = next(ln for ln in text.splitlines() if ln.startswith("statement of building %d for " % bid))
    page = Path(line.split(": ", 1)[1])
    shares = {cid: x[2] for cid, x in _ledger_shares(outcome).items() if x[0] == bid}
    assert len(shares) == 2
    with Browser() as b:
        b.open(page.as_uri())
        assert b.console_errors() == []
        for hh in compound.building(bid).households:
            row = 'tr.household[data-household="%d"] ' % hh.household_id
            assert b.text(row + "td.floor") == str(hh.floor)
            mine = sum(by.get(hh.household_id, (0, 0))[1] for by in shares.values())
            assert b.text(row + "td.share") == yuan(mine)
        assert b.count("section.cost") == 2
        for cid, by in shares.items():
            assert b.count('section.cost[data-cost="%d"] tr.share' % cid) == len(by)
            for hh, (floor, share) in by.items():
                row = 'section.cost[data-cost="%d"] tr.share[data-household="%d"] ' % (cid, hh)
                assert b.text(row + "td.share") == yuan(share)
                assert b.text(row + "td.floor") == str(floor)
        assert b.text("#fund-out") == yuan(ev.book.fund_out[bid])
        assert b.text("#fund-closing") == yuan(ev.book.fund_in[bid] - ev.book.fund_out[bid])


def test_each_buildings_statement_page_if_the_ledger_offers_one(small):
    outcome, text = small
    if not pages.offered():
        assert "statement of building" not in text
        return
    for b in outcome.compound.buildings:
        line = next(ln for ln in text.splitlines() if ln.startswith("statement of building %d for " % b.building_id))
        page = Path(line.split(": ", 1)[1])
        assert page.is_file() and "<html" in page.read_text().lower()


def test_every_fault_was_injected_and_shown(small):
    outcome, text = small
    for e in outcome.script.events:
        assert "** " + e.text in text
    # Progress: simulated time, rides per building and the readers' backlogs.
    assert "day 1 08:00  rides b1:" in text and "backlog 101:" in text
    # The network cut, the gateway kill and the bank link being down left rides waiting on flash at some point.
    backlogs = [ln for ln in text.splitlines() if "backlog" in ln]
    assert any(any(not part.endswith(":0") for part in ln.split("backlog ")[1].split()) for ln in backlogs)


def test_the_lost_card_is_refused_after_its_revocation_arrived(small):
    outcome, text = small
    lost = outcome.script.lost
    readers = outcome.compound.building(lost.building_id).reader_ids
    assert set(outcome.report.latency) == set(readers)
    for rid in readers:
        sim_s, real_s, _how = outcome.report.latency[rid]
        assert sim_s >= 0 and real_s >= 0
        arrival_n = None
        for p in outcome.evidence.played:
            if p.tap.reader_id == rid and p.tap.card_id == lost.card_id and p.tap.t >= lost.reported:
                if p.rec.result != Result.GRANTED and arrival_n is None:
                    arrival_n = p.n
                if arrival_n is not None:
                    assert p.rec.result == Result.LOST  # once refused, refused at every later tap
        assert arrival_n is not None, "the lost card was never refused at reader %d" % rid
        assert "reader %d: revocation in place" % rid in text


def test_free_class_and_visitors_in_the_logs(small):
    outcome, _ = small
    recs = [p.rec for p in outcome.evidence.played]
    assert any(r.result == Result.GRANTED and r.fee > 0 for r in recs)
    assert any(r.result == Result.GRANTED and r.flags & Flag.FREE_CLASS and r.fee == 0 for r in recs)  # an elder
    visitor = {p.card.card_id for p, _ in outcome.compound.visitors}
    played = outcome.evidence.played
    day_two = outcome.clock.at(1, 0)
    assert any(p.tap.card_id in visitor and p.rec.result == Result.GRANTED for p in played if p.tap.t < day_two)
    # The visitors' cards were valid on the first day only.
    late = [p for p in played if p.tap.card_id in visitor and p.tap.t >= day_two]
    assert late and all(p.rec.result == Result.EXPIRED for p in late)


def _broken(evidence, change):
    ev = copy.deepcopy(evidence)
    change(ev)
    return ev


def test_the_reconciliation_catches_each_kind_of_damage(small):
    outcome, _ = small
    ok = reconcile(outcome.evidence, outcome.script, outcome.compound, outcome.clock)
    assert ok.ok

    def check(change, words):
        rep = reconcile(_broken(outcome.evidence, change), outcome.script, outcome.compound, outcome.clock)
        assert not rep.ok
        assert any(words in p for p in rep.problems), rep.problems

    check(lambda ev: ev.ledger_rows.pop(), "the ledger is missing")
    check(lambda ev: ev.gw_rows.append(dict(ev.gw_rows[0])), "the gateway holds reader")

    def dearer(ev):
        row = next(r for r in ev.ledger_rows if r["fee"] > 0)
        row["fee"] += 1

    check(dearer, "differs from the reader's record")

    def granted_lost(ev):
        lost = outcome.script.lost
        i = max(
            i
            for i, p in enumerate(ev.played)
            if p.tap.card_id == lost.card_id and p.rec.result == Result.LOST and p.tap.t >= lost.reported
        )
        p = ev.played[i]
        ev.played[i] = dataclasses.replace(p, rec=dataclasses.replace(p.rec, result=int(Result.GRANTED)))

    check(granted_lost, "granted the lost card")

    def totals_off(ev):
        rid = next(iter(ev.ledger_totals))
        ev.ledger_totals[rid]["fees_fen"] += 1

    check(totals_off, "the ledger's totals for reader")

    # v3 changes only the lost card's building: a reader elsewhere shows it only in its STATUS.
    far = outcome.compound.buildings[-1].reader_ids[0]
    assert far not in outcome.compound.building(outcome.script.lost.building_id).reader_ids

    def update_lost(ev):
        ev.seen[:] = [x for x in ev.seen if not (x.reader_id == far and x.version >= 3)]

    check(update_lost, "reader %d never held whitelist v3" % far)

    def book_off(ev):
        key = next(k for k, v in ev.book.households.items() if v > 0)
        ev.book.households[key] -= 1

    check(book_off, "fees differ")

    def fund_off(ev):
        b = next(iter(ev.book.fund_in))
        ev.book.fund_in[b] += 10

    check(fund_off, "its fund took in")

    # The account book: a fund, a cost, a share, the register, the statement's floors.
    repair_b = outcome.script.costs[-1].building_id

    def cost_of(ev):
        return next(c for c in ev.book.costs[repair_b] if sum(1 for s in c.shares if s.share) > 1)

    def share_moved(ev):  # the same sum, not the floor rule's split
        c = cost_of(ev)
        i, j = [k for k, s in enumerate(c.shares) if s.share][:2]
        c.shares[i] = dataclasses.replace(c.shares[i], share=c.shares[i].share - 1)
        c.shares[j] = dataclasses.replace(c.shares[j], share=c.shares[j].share + 1)

    check(share_moved, "the floor rule gives")

    def share_short(ev):
        c = cost_of(ev)
        c.shares[-1] = dataclasses.replace(c.shares[-1], share=c.shares[-1].share + 1)

    check(share_short, "its shares sum to")

    def cost_lost(ev):
        c = cost_of(ev)
        ev.book.costs[repair_b].remove(c)
        ev.book.fund_out[repair_b] -= c.amount_fen
        ev.book.fund_closing[repair_b] += c.amount_fen

    check(cost_lost, "is not in the ledger")

    def paid_more(ev):
        ev.book.fund_out[repair_b] += 1

    check(paid_more, "its fund paid out")

    def balance_off(ev):
        ev.book.fund_closing[repair_b] -= 1

    check(balance_off, "its fund holds")

    def floor_moved(ev):
        c = cost_of(ev)
        s = next(s for s in c.shares if s.share)
        c.shares[c.shares.index(s)] = dataclasses.replace(s, floor=s.floor + 1, weight=s.weight + 1)

    check(floor_moved, "the register then held")

    def unregistered(ev):
        hh = outcome.compound.building(repair_b).households[0]
        key = (repair_b, hh.household_id)
        ev.book.floors[key] = None
        ev.book.register[repair_b] = [r for r in ev.book.register[repair_b] if r[0] != key[1]]

    check(unregistered, "its statement shows household")
    check(unregistered, "the ledger's register holds")


def test_a_ride_deleted_and_a_cost_share_changed_in_the_ledger_fail_the_run(tmp_path):
    deleted, moved = [], []

    def tamper(site):
        con = sqlite3.connect(str(site.ledger_db), timeout=30)
        try:
            with con:
                row = con.execute("SELECT reader_id, seq FROM rides ORDER BY rowid DESC LIMIT 1").fetchone()
                con.execute("DELETE FROM rides WHERE reader_id=? AND seq=?", row)
                # One fen from one household's share of the repair to another's: the cost still sums.
                cid, a, b = con.execute(
                    "SELECT s.cost_id, s.household, t.household FROM cost_shares s JOIN cost_shares t "
                    "ON t.cost_id = s.cost_id AND t.household > s.household WHERE s.share > 0 "
                    "ORDER BY s.cost_id DESC LIMIT 1"
                ).fetchone()
                con.execute("UPDATE cost_shares SET share = share - 1 WHERE cost_id=? AND household=?", (cid, a))
                con.execute("UPDATE cost_shares SET share = share + 1 WHERE cost_id=? AND household=?", (cid, b))
            deleted.append(row)
            moved.append((cid, a))
        finally:
            con.close()

    out = io.StringIO()
    argv = ["--buildings", "1", "--elevators", "1", "--households", "2", "--days", "1", "--speed", "8000"]
    outcome = cli.run(_args([*argv, "--dir", str(tmp_path / "w")]), out, tamper=tamper)
    text = out.getvalue()
    assert outcome.code == 1
    assert "NOT RECONCILED" in text
    assert "the ledger is missing reader %d seq %d" % deleted[0] in text
    assert "cost %d: household %d" % moved[0] in text and "the floor rule gives" in text
    # The ledger's own check is content with it (the shares still sum to the cost): the floor rule is not.
    assert "its shares sum to" not in text and "is shared as" not in text


def test_bad_options_are_one_line(capsys):
    assert demo.main(["--buildings", "3", "--elevators", "7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--elevators must be between --buildings and twice --buildings" in err
    assert demo.main(["--days", "0"]) == 2
    assert capsys.readouterr().err == "liftcard-demo: error: --days must be 1 .. 31\n"


def test_a_dir_that_is_not_a_compounds_is_left_alone(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    assert demo.main(["--buildings", "1", "--elevators", "1", "--dir", str(d)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty and not a compound's work dir" in err
    assert (d / "keep.txt").read_text() == "mine" and len(list(d.iterdir())) == 1


@given(
    st.integers(0, 10**9),
    st.lists(
        st.tuples(st.integers(1, 16777215), st.integers(0, 255)), min_size=1, max_size=40, unique_by=lambda x: x[0]
    ),
)
def test_the_floor_rule_recomputed_as_the_ledger_shares(amount, households):
    if not any(f for _, f in households):
        assert share_by_floor(amount, households) == {}
        return
    mine = share_by_floor(amount, households)
    assert sum(mine.values()) == amount
    total = sum(f for _, f in households)
    floor_of = dict(households)
    for h, s in mine.items():
        assert abs(s * total - amount * floor_of[h]) < total  # within one fen of the exact part
    for h1, s1 in mine.items():
        for h2, s2 in mine.items():
            if floor_of[h1] > floor_of[h2]:
                assert s1 >= s2  # a higher floor never pays less
    assert {s.household: s.share for s in share_cost(amount, households)} == mine


def test_the_script_pays_maintenance_each_month_and_moves_the_register():
    rng = random.Random(3)
    first = date_to_day(datetime.date(2026, 11, 26))  # ten days from the 26th: across a month's end
    c = make_compound(rng, 2, 3, 4, first)
    clock = Clock(start_epoch_for(first), 10, 4000)
    script = make_script(rng, clock, c)
    maint = [x for x in script.costs if "maintenance" in x.memo]
    assert len(maint) == 2 * len(c.buildings) and len({x.day[:7] for x in maint}) == 2
    assert all(x.amount_fen == MAINTENANCE_FEN * len(c.building(x.building_id).reader_ids) for x in maint)
    mover = next(h for h in c.households() if h.moves_in)
    before = script.register_at(mover.building_id, clock.at(0, hm(9)))
    after = script.register_at(mover.building_id, clock.at(0, hm(10)))
    assert (mover.household_id, mover.floor) in after and (mover.household_id, mover.floor) not in before
    assert len(after) == len(before) + 1


@given(st.integers(1, 9), st.data())
def test_elevators_one_or_two_per_building(b, data):
    e = data.draw(st.integers(b, 2 * b))
    per = elevators_per_building(b, e)
    assert len(per) == b and sum(per) == e and set(per) <= {1, 2}


@settings(max_examples=30)
@given(st.integers(1, 5), st.integers(1, 10), st.randoms(use_true_random=False))
def test_the_compound_is_well_formed(b, h, rng):
    c = make_compound(rng, b, b, h, 1000)
    ids = [p.card.card_id for hh in c.households() for p in hh.people] + [p.card.card_id for p, _ in c.visitors]
    assert len(ids) == len(set(ids))  # every card id once
    for bld in c.buildings:
        assert len(bld.households) == h
        for hh in bld.households:
            assert hh.reader_id in bld.reader_ids and 2 <= hh.floor <= 6
            assert all(p.card.household == hh.household_id for p in hh.people)
        assert any(p.role == "elder" for hh in bld.households for p in hh.people)


@given(st.integers(-(10**7), 10**7))
def test_yuan_is_exact(fen):
    y = yuan(fen)
    whole, cents = y.lstrip("-").split(".")
    assert (-1 if y.startswith("-") else 1) * (int(whole) * 100 + int(cents)) == fen


@given(st.integers(1, 5), st.integers(0, 5 * 86400 - 1), st.integers(0, 3600))
def test_the_clock_never_runs_backwards(days, t, dt):
    c = Clock(1_000_000, days, 4000)
    assert c.real(1_000_000 + t) <= c.real(1_000_000 + t + dt)
    assert c.real(c.end) == pytest.approx(days * ACTIVE_S / 4000)


def test_the_walkthrough_is_still_there(tmp_path, capsys):
    assert demo.main(["--walkthrough", "--quiet", "--dir", tmp_path / "w"]) == 0
    assert "Zhang" in capsys.readouterr().out


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--buildings", "--elevators", "--households", "--days", "--seed", "--walkthrough"):
        assert opt in text


# -- the bank side by hand ------------------------------------------------------------


def _setup(*args):
    return subprocess.run(
        [sys.executable, "-m", "liftcard_tools.demo", "bank-setup", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _commands(stdout):
    lines = [ln.strip() for ln in stdout.splitlines() if ln.startswith("  ")]
    return [ln for ln in lines if not ln.startswith("#")]


def test_bank_setup_starts_broker_and_ledger_from_its_output(tmp_path):
    port = free_port()
    d = tmp_path / "bank-side"
    r = _setup(d, "--port", port)
    assert r.returncode == 0, r.stderr
    assert "PRIVATE KEY" not in r.stdout + r.stderr
    for key in d.rglob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    cmds = [shlex.split(c) for c in _commands(r.stdout)]
    assert [c[0] for c in cmds] == [
        "mosquitto",
        "liftcard-ledger",
        "liftcard-bank",
        "liftcard-ledger",
        "liftcard-ledger",
    ]
    bindir = Path(sys.executable).parent

    def argv(c):
        return [find_tool("mosquitto") if c[0] == "mosquitto" else str(bindir / c[0]), *c[1:]]

    log = tmp_path / "ledger.log"
    broker = ledger = None
    try:
        with open(tmp_path / "broker.out", "ab") as out:
            broker = procs.spawn(argv(cmds[0]), stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        pki = d / "pki"

        def up():
            try:
                return tls_connack("127.0.0.1", port, pki / "ca.crt", pki / "probe.crt", pki / "probe.key") == 0
            except OSError:  # not listening yet
                return False

        wait_for(
            up,
            30,
            "the bank broker started from bank-setup's command",
        )
        with open(log, "ab") as out:
            ledger = procs.spawn(argv(cmds[1]), stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        wait_for(lambda: '"subscribed"' in log.read_text(), 30, "the ledger started from bank-setup's command")
        for c in cmds[2:]:  # sign a card update, publish it to the gateway's topic, the ledger's totals
            done = subprocess.run(argv(c), capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (c, done.stderr)
        assert (d / "bank" / "update-v1.bin").stat().st_size > 0
    finally:
        procs.stop(ledger)
        procs.stop(broker)
    # The gateway's side of the link, as written, is a config the gateway accepts.
    snippet = (d / "gateway" / "bank-link.toml").read_text()
    ident = tomllib.loads(snippet)["gateway"]
    cfg = write_gateway_config(
        tmp_path / "gw",
        BrokerLogin(),
        {7: bytes(32)},
        {7: 1},
        extra=snippet[snippet.index("[upstream]") :],
        gateway_id=ident["gateway_id"],
        compound_id=ident["compound_id"],
    )
    gw = load_config(cfg)
    assert gw.upstream.port == port and gw.cards is not None


def test_bank_setup_refuses_to_overwrite_and_bad_ids(tmp_path):
    d = tmp_path / "used"
    d.mkdir()
    (d / "bank.key").write_text("x")
    r = _setup(d)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not overwriting keys" in r.stderr
    assert [p.name for p in d.iterdir()] == ["bank.key"]
    r = _setup(tmp_path / "new", "--gateway", "ledger")
    assert r.returncode == 2 and "--gateway" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "new").exists()
