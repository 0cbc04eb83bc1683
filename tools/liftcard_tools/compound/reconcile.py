"""The end of the run: does everything add up?

1. Each reader's log (its DUMP) holds exactly the rides it answered the taps
   with, seqs 1..n without a gap, record for record.
2. The gateway's database and the ledger's hold every one of those rides
   exactly once, each field equal to the reader's record (and the ledger's
   building the reader's).
3. Each tap's decision and fee is the reference fee model's
   (liftcard_tools.feemodel) for the card list the reader held. When a card
   update was on its way, the reader may hold the old or the new list: the
   model follows the reader's STATUS and, when a tap fits only the newer list,
   takes that tap as the moment the list arrived.
4. Fees per household and per building: reader logs = gateway = ledger =
   model, to the fen; the ledger's own totals (its `totals --json`) per reader
   equal the reader logs.
5. Every card update the bank issued reached every reader.
6. The account book (funds.py): each building's fund took in its readers'
   fees, paid out exactly the costs the bank entered and holds the
   difference; each cost is shared by floor among the households registered
   when it was entered, to the fen, as docs/ledger.md's rule gives; the
   register and the statement's floors are the population's.
7. The lost card: at every reader of its building, from the moment the
   revocation arrived there (the first STATUS showing it, or the first tap
   refused because of it), every tap of the card was refused. The latency is
   issue time -> that arrival.

`reconcile()` is a pure function of what the run collected (`Evidence`), so
a broken piece of evidence makes it fail, whatever the cause.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.ride import RideRecord
from liftcard_tools.feemodel import FeeModel

from .funds import check_funds
from .population import reader_config

MODEL_FLAGS = int(Flag.DEBOUNCED | Flag.FREE_CLASS | Flag.CAPPED)
MAX_LISTED = 8
MODEL_KEY = (
    "00" * 32
)  # the fee model never sees a reader's key; its config check wants one  # problems listed per check; the count says how many there were


@dataclass
class Evidence:
    played: list  # play.Played, in the order they were played
    seen: list  # play.Seen
    issued: dict  # version -> (simulated time, real seconds into the play)
    dumps: dict  # reader_id -> [raw record, ...]
    gw_rows: list  # the gateway's rides table
    ledger_rows: list  # the ledger's rides of this gateway
    ledger_totals: dict | None  # reader_id -> {"rides": n, "fees_fen": f, ...}, from `liftcard-ledger totals --json`
    book: object = None  # book.Book: the ledger's account book; None if it keeps none
    bank_failures: list = field(default_factory=list)  # card updates the gateway never applied


@dataclass
class Report:
    problems: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    latency: dict = field(default_factory=dict)  # reader_id -> (simulated s, real s, what showed the arrival)
    lost_taps: dict = field(default_factory=dict)  # reader_id -> (granted after the report before arrival, tried after)
    funds: list = field(default_factory=list)  # the account book's summary: each fund, each cost's sharing by floor

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        self.problems.append(text)


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    y, f = divmod(abs(fen), 100)
    return "%s%d.%02d" % (sign, y, f)


def _by_key(rows, report: Report, where: str) -> dict:
    out = {}
    for row in rows:
        key = (row["reader_id"], row["seq"])
        if key in out:
            report.problem("%s holds reader %d seq %d twice" % (where, *key))
        out[key] = row
    return out


def _check_store(name: str, rows: dict, logs: dict, building_of: dict, report: Report) -> None:
    """rows: {(reader, seq): row} of the gateway or the ledger, against the readers' logs."""
    want = {(rid, RideRecord.unpack(raw).seq): raw for rid, raws in logs.items() for raw in raws}
    missing = sorted(set(want) - set(rows))
    extra = sorted(set(rows) - set(want))
    for key in missing[:MAX_LISTED]:
        report.problem("%s is missing reader %d seq %d" % (name, *key))
    if len(missing) > MAX_LISTED:
        report.problem("%s is missing %d rides in all" % (name, len(missing)))
    for key in extra[:MAX_LISTED]:
        report.problem("%s holds reader %d seq %d, which no reader logged" % (name, *key))
    differ = 0
    for key in set(want) & set(rows):
        row = rows[key]
        if RideRecord.from_fields(row).pack() != want[key] or (
            "building_id" in row and row["building_id"] != building_of.get(key[0])
        ):
            differ += 1
            if differ <= MAX_LISTED:
                report.problem("%s: reader %d seq %d differs from the reader's record" % (name, *key))


def _matches(d, rec: RideRecord) -> bool:
    return (d.result, d.fee, d.flags, d.floor, d.household) == (
        rec.result,
        rec.fee,
        rec.flags & MODEL_FLAGS,
        rec.floor,
        rec.household,
    )


def _model_fees(ev: Evidence, script, building_of: dict, report: Report) -> tuple:
    """Runs the fee model over every reader's taps; returns
    ({(reader, seq): model fee}, {(reader, version): the first tap that showed the reader held it})."""
    fees, arrived_by_tap = {}, {}
    versions = sorted(v.version for v in script.versions)
    wrong = 0
    for rid, bid in building_of.items():
        mine = [p for p in ev.played if p.tap.reader_id == rid]
        statuses = sorted((s for s in ev.seen if s.reader_id == rid), key=lambda s: s.n)
        held = 1
        model = FeeModel(dict(reader_config(rid, bid), key=MODEL_KEY), script.cards_at(held, bid))
        for i, p in enumerate(mine):
            while statuses and statuses[0].n < p.n:
                held = max(held, statuses.pop(0).version)
                model.cards = dict(script.cards_at(held, bid))
            before = copy.deepcopy(model)
            d = model.tap(p.tap.card_id, p.tap.floor, i * 1000, p.rec.time)
            if not _matches(d, p.rec):
                for v in (v for v in versions if v > held and v in ev.issued):
                    trial = copy.deepcopy(before)
                    trial.cards = dict(script.cards_at(v, bid))
                    d2 = trial.tap(p.tap.card_id, p.tap.floor, i * 1000, p.rec.time)
                    if _matches(d2, p.rec):
                        model, d, held = trial, d2, v
                        arrived_by_tap.setdefault((rid, v), p)
                        break
                else:
                    wrong += 1
                    if wrong <= MAX_LISTED:
                        report.problem(
                            "reader %d seq %d (%s): the reader decided %s fee %d, the fee model %s fee %d"
                            % (
                                rid,
                                p.rec.seq,
                                p.tap.who,
                                Result(p.rec.result).name,
                                p.rec.fee,
                                Result(d.result).name,
                                d.fee,
                            )
                        )
            fees[(rid, p.rec.seq)] = d.fee
    if wrong > MAX_LISTED:
        report.problem("%d taps in all differ from the fee model" % wrong)
    return fees, arrived_by_tap


def _lost_card(ev: Evidence, script, compound, clock, arrived_by_tap: dict, report: Report) -> None:
    lost = script.lost
    v = lost.version
    issued = ev.issued.get(v)
    if issued is None:
        report.problem("the lost card's revocation (v%d) was never issued" % v)
        return
    for rid in compound.building(lost.building_id).reader_ids:
        by_status = next((s for s in sorted(ev.seen, key=lambda s: s.n) if s.reader_id == rid and s.version >= v), None)
        by_tap = arrived_by_tap.get((rid, v))
        marks = [m for m in (by_status, by_tap) if m is not None]
        if not marks:
            report.problem("reader %d never received the revocation of the lost card (v%d)" % (rid, v))
            continue
        first = min(marks, key=lambda m: m.n)
        t = first.tap.t if first is by_tap else first.t
        report.latency[rid] = (t - issued[0], first.real - issued[1], "a refused tap" if first is by_tap else "STATUS")
        taps = [
            p
            for p in ev.played
            if p.tap.reader_id == rid and p.tap.card_id == lost.card_id and p.tap.t >= lost.reported
        ]
        before = [p for p in taps if p.n < first.n]
        after = [p for p in taps if p.n >= first.n]
        report.lost_taps[rid] = (sum(p.rec.result == Result.GRANTED for p in before), len(after))
        for p in after:
            if p.rec.result == Result.GRANTED:
                report.problem(
                    "reader %d granted the lost card at %s, after its revocation arrived (%s)"
                    % (rid, clock.text(p.tap.t), clock.text(t))
                )
        if not after:
            report.problem("reader %d: the lost card was never tried after its revocation arrived" % rid)


COLUMNS = ("readers", "gateway", "ledger", "book", "model")
_ROW = "%-9s %-10s %5s %6s" + " %10s" * len(COLUMNS) + "  %s"


def _fee_table(ev: Evidence, compound, building_of: dict, gw: dict, led: dict, model_fee: dict, report: Report) -> None:
    """One line per household and a total per building, each column a source of
    the same fees; a household (or a building's fund) whose columns differ is a problem."""
    book = ev.book
    sums: dict = {}  # (building, household) -> [rides, readers, gateway, ledger, book, model]

    def row_of(b, hh):
        return sums.setdefault((b, hh), [0] * (1 + len(COLUMNS)))

    capped = set()
    for rid, raws in ev.dumps.items():
        for raw in raws:
            rec = RideRecord.unpack(raw)
            row = row_of(building_of[rid], rec.household)
            row[0] += 1
            row[1] += rec.fee
            row[5] += model_fee.get((rid, rec.seq), 0)
            if rec.flags & Flag.CAPPED:
                capped.add((building_of[rid], rec.household))
    for col, rows in ((2, gw), (3, led)):
        for (rid, _), r in rows.items():
            if rid in building_of:
                row_of(building_of[rid], r["household"])[col] += r["fee"]
    if book is not None:
        for (b, hh), fen in book.households.items():
            if fen or (b, hh) in sums:
                row_of(b, hh)[4] += fen
    cols = [i for i, c in enumerate(COLUMNS, 1) if c != "book" or book is not None]

    def shown(row):
        return [yuan(row[i]) if i in cols else "-" for i in range(1, 1 + len(COLUMNS))]

    report.lines.append(_ROW % ("building", "household", "floor", "rides", *COLUMNS, ""))
    for b in compound.buildings:
        bid = b.building_id
        tot = [0] * (1 + len(COLUMNS))
        known = {h.household_id: h for h in b.households}
        for hid in [*known, *sorted(h for (bb, h) in sums if bb == bid and h not in known)]:
            row = sums.get((bid, hid))
            if row is None:
                continue
            tot = [x + y for x, y in zip(tot, row)]
            hh = known.get(hid)
            note = ""
            if len({row[i] for i in cols}) > 1:
                note = "MISMATCH"
                report.problem(
                    "building %d household %d: fees differ: %s"
                    % (bid, hid, ", ".join("%s %s" % (COLUMNS[i - 1], yuan(row[i])) for i in cols))
                )
            elif (bid, hid) in capped:
                note = "reached the monthly cap"
            elif hh and any(p.role == "elder" for p in hh.people):
                note = "an elder rides free"
            name = hid if hh else ("(unknown)" if hid == 0 else "%d?" % hid)
            report.lines.append(_ROW % (bid, name, hh.floor if hh else "", row[0], *shown(row), note))
        note = "" if len({tot[i] for i in cols}) == 1 else "MISMATCH"
        if book is not None and book.fund_in.get(bid, 0) != tot[1]:
            note = "MISMATCH"
            report.problem(
                "building %d: its fund took in %s, its readers charged %s"
                % (bid, yuan(book.fund_in.get(bid, 0)), yuan(tot[1]))
            )
        report.lines.append(_ROW % (bid, "all", "", tot[0], *shown(tot), note))
    if book is not None:
        for line in book.unbalanced:
            report.problem("the ledger's books do not balance: %s" % line)


def _ledger_totals(ev: Evidence, building_of: dict, report: Report) -> None:
    """The ledger's own per-reader totals against the reader's log."""
    if ev.ledger_totals is None:
        report.problem("the ledger's totals could not be read")
        return
    for rid in building_of:
        recs = [RideRecord.unpack(r) for r in ev.dumps.get(rid, [])]
        want = {
            "rides": len(recs),
            "charged": sum(r.result == Result.GRANTED and r.fee > 0 for r in recs),
            "free": sum(r.result == Result.GRANTED and r.fee == 0 for r in recs),
            "denied": sum(r.result != Result.GRANTED for r in recs),
            "fees_fen": sum(r.fee for r in recs),
        }
        got = ev.ledger_totals.get(rid, {})
        for k, v in want.items():
            if k in got and got[k] != v:
                report.problem("the ledger's totals for reader %d: %s %d, its log %d" % (rid, k, got[k], v))
        if "rides" not in got or "fees_fen" not in got:
            report.problem("the ledger's totals have no line for reader %d" % rid)


def reconcile(ev: Evidence, script, compound, clock) -> Report:
    report = Report()
    building_of = {r: b.building_id for b in compound.buildings for r in b.reader_ids}

    # 1. the readers' logs against what they answered
    for rid in building_of:
        raws = ev.dumps.get(rid, [])
        seqs = [RideRecord.unpack(raw).seq for raw in raws]
        if seqs != list(range(1, len(seqs) + 1)):
            report.problem("reader %d: its log's seqs are not 1..%d without a gap" % (rid, len(seqs)))
        answered = {p.rec.seq: p.raw for p in ev.played if p.tap.reader_id == rid}
        if answered != dict(zip(seqs, raws)):
            report.problem(
                "reader %d: its log (%d rides) is not the %d rides it answered the taps with"
                % (rid, len(raws), len(answered))
            )

    # 2. the gateway and the ledger, exactly once, field for field
    gw = _by_key(ev.gw_rows, report, "the gateway")
    led = _by_key(ev.ledger_rows, report, "the ledger")
    _check_store("the gateway", gw, ev.dumps, building_of, report)
    _check_store("the ledger", led, ev.dumps, building_of, report)

    # 3. the fee model
    model_fee, arrived_by_tap = _model_fees(ev, script, building_of, report)

    # 4. fees per household and per building: readers, gateway, ledger, account book, model
    _fee_table(ev, compound, building_of, gw, led, model_fee, report)
    _ledger_totals(ev, building_of, report)

    # 5. every card update the bank issued reached every reader
    for v in sorted(ev.issued):
        for rid in building_of:
            held = any(x.reader_id == rid and x.version >= v for x in ev.seen)
            if not held and not any(r == rid and w >= v for r, w in arrived_by_tap):
                report.problem("reader %d never held whitelist v%d" % (rid, v))
    for f in ev.bank_failures:
        report.problem("the bank: %s" % f)

    # 6. the funds: balances, costs and their sharing by floor
    if ev.book is not None:
        charged: dict = {}
        for rid, raws in ev.dumps.items():
            bid = building_of.get(rid)
            charged[bid] = charged.get(bid, 0) + sum(RideRecord.unpack(raw).fee for raw in raws)
        check_funds(ev.book, script, compound, charged, report)

    # 7. the lost card
    _lost_card(ev, script, compound, clock, arrived_by_tap, report)
    return report
