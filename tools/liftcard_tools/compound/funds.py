"""The elevator funds in the ledger's account book, checked against what the
run did: each building's fund took in the fees its readers charged, paid out
exactly the costs the bank entered, and holds the difference; each cost was
split among the households the register held when it was entered, by the
floor rule of docs/ledger.md, to the fen; the register and the statement's
floors are the population's.

The shares are recomputed here from the rule as docs/ledger.md states it,
with exact fractions, not with the ledger's own `share_cost`: a ledger that
shared a cost some other way, or a share changed in its database, shows up.
"""

from __future__ import annotations

import collections
from fractions import Fraction

from liftcard_tools.statement import yuan


def share_by_floor(amount: int, households) -> dict:
    """{household: fen} for `amount` fen over [(household, floor), ...]: a
    household's weight is its storeys above the ground floor; each gets the
    whole fen of its exact part, and the fen left over go one each to the
    largest fractional parts, ties to the lower household number."""
    total = sum(f for _, f in households)
    if total <= 0:
        return {}
    exact = {h: Fraction(amount * f, total) for h, f in households}
    out = {h: int(x) for h, x in exact.items()}
    left = amount - sum(out.values())
    for h in sorted(exact, key=lambda h: (-(exact[h] - out[h]), h))[:left]:
        out[h] += 1
    return out


def check_funds(book, script, compound, charged: dict, report) -> None:
    """charged: building -> the fen its readers charged. Adds problems and the
    summary lines (report.funds) to `report`."""
    for b in compound.buildings:
        bid = b.building_id
        entered = [c for c in script.costs if c.building_id == bid]
        held = book.costs.get(bid, [])
        paid = sum(c.amount_fen for c in entered)
        fin, fout = book.fund_in.get(bid, 0), book.fund_out.get(bid, 0)
        closing = book.fund_closing.get(bid, 0)
        report.funds.append(
            "building %d: fund in %s yuan (fees), out %s (costs), balance %s"
            % (bid, yuan(fin), yuan(fout), yuan(closing))
        )
        if fout != sum(c.amount_fen for c in held) or fout != paid:
            report.problem(
                "building %d: its fund paid out %s, its costs in the ledger come to %s, the bank entered %s"
                % (bid, yuan(fout), yuan(sum(c.amount_fen for c in held)), yuan(paid))
            )
        want = charged.get(bid, 0) - paid
        if book.fund_opening.get(bid, 0) != 0 or closing != fin - fout or closing != want:
            report.problem(
                "building %d: its fund holds %s (opening %s), but fees %s - costs %s = %s"
                % (
                    bid,
                    yuan(closing),
                    yuan(book.fund_opening.get(bid, 0)),
                    yuan(charged.get(bid, 0)),
                    yuan(paid),
                    yuan(want),
                )
            )
        _check_costs(bid, entered, held, script, report)
        final = script.register_at(bid, script.registers[-1][0]) if script.registers else []
        if sorted(book.register.get(bid, [])) != final:
            report.problem(
                "building %d: the ledger's register holds %d households, the bank's %d (or their floors differ)"
                % (bid, len(book.register.get(bid, [])), len(final))
            )
        for hh in b.households:
            shown = book.floors.get((bid, hh.household_id))
            if shown != hh.floor:
                report.problem(
                    "building %d: its statement shows household %d on floor %s, the register on %d"
                    % (bid, hh.household_id, "-" if shown is None else shown, hh.floor)
                )


def _key(c) -> tuple:
    """A cost as both the bank and the ledger know it (a script.Cost or a statement.CostLine)."""
    return (c.day, c.memo, c.amount_fen)


def _check_costs(bid: int, entered: list, held: list, script, report) -> None:
    key = _key
    want = collections.Counter(key(c) for c in entered)
    got = collections.Counter(key(c) for c in held)
    for day, memo, amount in sorted((want - got).elements()):
        report.problem(
            "building %d: the cost %r of %s yuan on %s is not in the ledger" % (bid, memo, yuan(amount), day)
        )
    for day, memo, amount in sorted((got - want).elements()):
        report.problem(
            "building %d: the ledger holds a cost %r of %s yuan on %s the bank never entered"
            % (bid, memo, yuan(amount), day)
        )
    when = {key(c): c.t for c in entered}
    for c in held:
        shares = sorted(c.shares, key=lambda s: s.household)
        total = sum(s.share for s in shares)
        report.funds.append(
            "  cost %d, %s, %s: %s yuan shared by floor among %d households"
            % (c.cost_id, c.day, c.memo, yuan(c.amount_fen), sum(1 for s in shares if s.share))
        )
        by_floor = collections.defaultdict(list)
        for s in shares:
            by_floor[s.floor].append(s)
        for f in sorted(by_floor):
            ss = by_floor[f]
            report.funds.append(
                "    floor %d (weight %d): %s = %s"
                % (f, f, ", ".join("%d %s" % (s.household, yuan(s.share)) for s in ss), yuan(sum(s.share for s in ss)))
            )
        if total != c.amount_fen:
            report.problem(
                "building %d cost %d: its shares sum to %s yuan, not its %s"
                % (bid, c.cost_id, yuan(total), yuan(c.amount_fen))
            )
        if key(c) not in when:
            continue
        reg = script.register_at(bid, when[key(c)])
        if [(s.household, s.floor) for s in shares] != reg:
            report.problem(
                "building %d cost %d: shared among %d households, the register then held %d (or their floors differ)"
                % (bid, c.cost_id, len(shares), len(reg))
            )
            continue
        rule = share_by_floor(c.amount_fen, reg)
        for s in shares:
            if s.share != rule[s.household] or s.weight != s.floor:
                report.problem(
                    "building %d cost %d: household %d (floor %d) has a share of %d fen, the floor rule gives %d"
                    % (bid, c.cost_id, s.household, s.floor, s.share, rule[s.household])
                )
