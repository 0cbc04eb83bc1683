"""liftcard-demo (the default): the whole compound, every process real, then
its reconciliation. See docs/demo.md.

    liftcard-demo [--buildings N] [--elevators N] [--households N] [--days N]
                  [--seed N] [--speed X] [--dir DIR]

Exit status 0 when everything reconciles, 1 when something does not (or the
run could not finish), 2 for bad options.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol.codes import RESULT_NAMES, Flag, Result
from liftcard_protocol.epoch import date_to_day, day_to_date, epoch_from_unix, local_day
from liftcard_protocol.ride import RideRecord
from liftcard_testing.compoundsite import CompoundSite
from liftcard_testing.paths import REPO

from . import pages
from .bankside import BankSide
from .book import read_book
from .play import DRAIN_TIMEOUT_S, Player
from .population import UTC_OFFSET_MIN, make_compound, reader_config
from .progress import Progress
from .reconcile import Evidence, reconcile, yuan
from .schedule import DAY_START_S, Clock, start_epoch_for
from .script import make_script

PROG = "liftcard-demo"
MARKER = ".liftcard-compound"  # a work dir this command made, and may empty again
HEARTBEAT_WAIT_S = 60.0


class RunError(Exception):
    """The run could not go on: one line for the user."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A whole compound on this computer: a private Mosquitto, the gateway daemon, the bank's TLS "
        "broker and ledger, one virtual reader (the real firmware under MicroPython) per elevator. Residents ride "
        "on a daily pattern in fast simulated time while cards are issued and lost and faults strike; then every "
        "ride and every fen is reconciled across readers, gateway, ledger and the fee model. "
        "--walkthrough runs the one-reader walk-through instead (liftcard-demo --walkthrough --help).",
    )
    p.add_argument("--buildings", type=int, default=3, help="buildings (1..9, default 3)")
    p.add_argument(
        "--elevators", type=int, help="elevators in all, one reader each: BUILDINGS .. 2*BUILDINGS (default 4 for 3)"
    )
    p.add_argument("--households", type=int, default=8, help="households per building (1..40, default 8)")
    p.add_argument("--days", type=int, default=2, help="simulated days (1..31, default 2)")
    p.add_argument("--seed", type=int, default=1, help="the compound and its traffic (default 1)")
    p.add_argument(
        "--speed", type=float, default=4000.0, help="simulated seconds per real second (500..20000, default 4000)"
    )
    p.add_argument("--dir", help="work dir (default var/compound under the repo; emptied at each run)")
    return p


def check_args(args) -> None:
    """Bad options: argparse-style one line, exit 2."""
    if args.elevators is None:
        args.elevators = args.buildings + args.buildings // 2
    rules = (
        (1 <= args.buildings <= 9, "--buildings must be 1 .. 9"),
        (
            args.buildings <= args.elevators <= 2 * args.buildings,
            "--elevators must be between --buildings and twice --buildings (each building has one or two)",
        ),
        (1 <= args.households <= 40, "--households must be 1 .. 40"),
        (1 <= args.days <= 31, "--days must be 1 .. 31"),
        (500 <= args.speed <= 20000, "--speed must be 500 .. 20000"),
    )
    for ok, text in rules:
        if not ok:
            raise ValueError(text)


def prepare_dir(d: Path) -> Path:
    d = d.absolute()
    if any(c in str(d) for c in " \t\n\"'#"):
        raise RunError("--dir: %s: the brokers' configs cannot take a path with spaces, quotes or #" % d)
    if d.exists():
        if not d.is_dir():
            raise RunError("--dir: %s is not a directory" % d)
        if (d / MARKER).exists():
            shutil.rmtree(d)
        elif any(d.iterdir()):
            raise RunError("--dir: %s is not empty and not a compound's work dir: not touching it" % d)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        (d / MARKER).write_text("made by liftcard-demo; emptied at its next run\n")
    except OSError as e:
        raise RunError("--dir: cannot create %s: %s" % (d, e.strerror)) from None
    return d


def ledger_totals(config: Path) -> dict | None:
    """reader_id -> {"rides": n, "fees_fen": f, ...}, from the ledger's own `totals --json`."""
    r = subprocess.run(
        [sys.executable, "-m", "liftcard_tools.ledger", "totals", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        return None
    out = {}
    for ln in r.stdout.splitlines():
        t = json.loads(ln)
        out[t["reader_id"]] = {k: v for k, v in t.items() if isinstance(v, int) and k != "reader_id"}
    return out


@dataclass
class Outcome:
    """What a run found: its exit status, the reconciliation and what it was made from."""

    code: int
    report: object  # reconcile.Report
    evidence: Evidence
    script: object  # script.Script
    compound: object  # population.Compound
    clock: Clock
    work: Path


def first_day_of_run() -> int:
    """The 10th of this month (local): a run of a few days stays in one month,
    so the monthly cap is seen to bite rather than reset halfway."""
    today = day_to_date(local_day(epoch_from_unix(int(time.time())), UTC_OFFSET_MIN))
    return date_to_day(today.replace(day=10))


def run(args, out=None, tamper=None) -> Outcome:
    """The whole run. tamper(site), if given, is called once every process has
    stopped and before the databases are read (the tests break the evidence with it)."""
    out = out or sys.stdout

    def say(text=""):
        print(text, file=out, flush=True)

    rng = random.Random(args.seed)
    first_day = first_day_of_run()
    clock = Clock(start_epoch_for(first_day), args.days, args.speed)
    compound = make_compound(rng, args.buildings, args.elevators, args.households, first_day)
    script = make_script(rng, clock, compound)
    work = prepare_dir(Path(args.dir) if args.dir else REPO / "var" / "compound")
    people = sum(len(h.people) for h in compound.households())
    say(
        "liftcard compound: %d buildings, %d elevators (readers %s), %d households, %d residents, %d visitors"
        % (
            len(compound.buildings),
            len(compound.reader_ids),
            " ".join(map(str, compound.reader_ids)),
            len(compound.households()),
            people,
            len(compound.visitors),
        )
    )
    say(
        "%d simulated days from %s (UTC+8), %g simulated seconds per real second: about %d s of play, %d taps"
        % (args.days, day_to_date(first_day), args.speed, clock.real_duration(), len(script.taps))
    )
    say("work dir %s" % work)
    say(
        "starting: local Mosquitto, dev PKI, bank broker (TLS), ledger, gateway, %d readers ..."
        % len(compound.reader_ids)
    )
    buildings = {b.building_id: b.reader_ids for b in compound.buildings}
    site = CompoundSite(
        work, buildings, reader_config, cuttable=[script.cut_reader], start_time=clock.at(0, DAY_START_S)
    )
    building_of = site.building_of
    try:
        progress = Progress(clock, site, building_of, out)
        bank = BankSide(site, progress.line)
        player = Player(site, script, clock, progress, bank)
        _wait_heartbeats(site)
        bank.issue(script.versions[0], wait=True)
        rows = script.registers[0][1]
        say(
            "the bank imports its household register into the ledger: %d households of %d buildings, by floor"
            % (len(rows), len({r[0] for r in rows}))
        )
        bank.import_register(rows, wait=True)
        if bank.failures:
            raise RunError(bank.failures[0])
        player.wait_whitelists(1)
        say(
            "every reader holds whitelist v1 (%d cards); the play begins"
            % sum(len(c) for c in script.cards[1].values())
        )
        player.run()
        say(
            "the play is over: %d taps; draining (every log acknowledged, every ride at the ledger) ..."
            % len(player.played)
        )
        if not player.drain():
            say("not drained within %d s: the reconciliation shows what is missing" % DRAIN_TIMEOUT_S)
        for f in bank.failures:
            say("bank: %s" % f)
        dumps = {rid: site.dump(rid) for rid in site.readers}
    finally:
        site.close()
    # Every process has stopped: what the databases hold now is final.
    if tamper is not None:
        tamper(site)
    months = sorted(
        {day_to_date(local_day(clock.at(d, 0), UTC_OFFSET_MIN)).strftime("%Y-%m") for d in range(args.days)}
    )
    ev = Evidence(
        player.played,
        player.seen,
        player.issued,
        dumps,
        site.gw_rides(),
        site.ledger_rides(),
        ledger_totals(site.ledger_cfg),
        read_book(site.ledger_cfg, buildings, months),
        list(bank.failures),
    )
    report = reconcile(ev, script, compound, clock)
    _print_report(say, report, ev, script, clock, compound)
    if pages.offered():
        for b, m, page, err in pages.write_statements(site.ledger_cfg, buildings, months, work / "statements"):
            say("statement of building %d for %s: %s" % (b, m, page if page else "not written (%s)" % err))
    say("logs of every process: %s" % (work / "logs"))
    return Outcome(0 if report.ok else 1, report, ev, script, compound, clock, work)


def _wait_heartbeats(site) -> None:
    """Until the gateway has heard every reader (so a card update goes to each at once)."""
    end = time.monotonic() + HEARTBEAT_WAIT_S
    while time.monotonic() < end:
        rows = site.gw_readers()
        if all(rows.get(rid, {}).get("wl_version") is not None for rid in site.readers):
            return
        time.sleep(0.1)
    raise RunError("the gateway never heard from every reader")


def _print_report(say, report, ev, script, clock, compound) -> None:
    n = sum(len(v) for v in ev.dumps.values())
    say()
    say("Reconciliation")
    say(
        "rides: %d logged by the readers; the gateway holds %d, the ledger %d"
        % (n, len(ev.gw_rows), len(ev.ledger_rows))
    )
    recs = [RideRecord.unpack(raw) for raws in ev.dumps.values() for raw in raws]
    granted = [r for r in recs if r.result == Result.GRANTED]
    denied = collections.Counter(RESULT_NAMES.get(r.result, str(r.result)).lower() for r in recs if r.result)
    say(
        "taps: %d granted (%d charged, %d free: %d on the free class, %d past the monthly cap), %d refused (%s)"
        % (
            len(granted),
            sum(r.fee > 0 for r in granted),
            sum(r.fee == 0 for r in granted),
            sum(bool(r.flags & Flag.FREE_CLASS) for r in granted),
            sum(bool(r.flags & Flag.CAPPED) and r.fee == 0 for r in granted),
            sum(denied.values()),
            ", ".join("%s %d" % kv for kv in sorted(denied.items())) or "none",
        )
    )
    say("fees per household and building (yuan): as the readers logged them, as the gateway and the ledger stored")
    say("them, as the ledger's account book debited the household (the fund's intake for 'all'), and as the")
    say("reference fee model computed them:")
    for ln in report.lines:
        say("  " + ln)
    if report.funds:
        say("the elevator funds in the ledger's account book (inflows, outflows, balance) and each cost's sharing")
        say("by floor (a household's weight is its storeys above the ground floor):")
        for ln in report.funds:
            say("  " + ln)
    lost = script.lost
    say(
        "lost card of %s (household %d), reported at %s, revoked by card update v%d:"
        % (lost.holder, lost.household_id, clock.text(lost.reported), lost.version)
    )
    for rid in compound.building(lost.building_id).reader_ids:
        if rid in report.latency:
            sim_s, real_s, how = report.latency[rid]
            granted, tried = report.lost_taps.get(rid, (0, 0))
            say(
                "  reader %d: revocation in place %d simulated min (%.2f s real) after issue (first shown by %s); "
                "taps of the card between report and arrival granted: %d; after arrival: %d, all refused"
                % (rid, sim_s // 60, real_s, how, granted, tried)
            )
    if report.ok:
        say(
            "RECONCILED: every ride once everywhere, every fee equal to the fen, each fund's balance its fees less "
            "its costs, each cost shared by floor to the fen, the lost card refused after arrival"
        )
    else:
        say("NOT RECONCILED: %d problems" % len(report.problems))
        for p in report.problems:
            say("  - " + p)
    total = sum(row["fee"] for row in ev.ledger_rows)
    say("ledger total: %s yuan" % yuan(total))


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(None if argv is None else [str(a) for a in argv])
    try:
        check_args(args)
    except ValueError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 2
    try:
        return run(args).code
    except RunError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    except (AssertionError, RuntimeError, OSError) as e:
        # A process of the compound failed to start or died: its own log has the detail.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print("%s: error: the run stopped: %s (logs in the work dir)" % (PROG, first), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
