"""The elevator-fund account book: double-entry postings in integer fen
(docs/ledger.md, "The account book").

Accounts, one per name:

- `household:<building>:<household>` -- what a household has been charged;
- `fund:<building>` -- the building's elevator fund;
- `cost:<building>` -- what the fund paid for maintenance and repairs.

A posting is (entry, account, amount): amount > 0 is a debit, < 0 a credit,
never 0. Every entry's postings sum to 0, so the whole book does too:

- a charged ride (granted, fee > 0), entry `ride:<gateway>:<reader>:<seq>`:
  debit the household `fee`, credit the fund `fee`;
- a granted ride with fee 0 (free class, capped to 0, debounced re-tap) and a
  denied tap post nothing; the statement counts them from the rides;
- a cost, entry `cost:<id>`: debit the fund `amount`, credit `cost:<building>`.
  The cost is also shared among the building's households by floor
  (`share_cost`): the shares, which sum exactly to the amount, are each
  household's part of what the fund paid, kept with the cost (`cost_shares`)
  and shown on the statement.

The fund's balance is its credits minus its debits (`-sum(amount)`): the
money the fund holds. Postings are written in the transaction that stores
their ride or cost (ledgerdb.LedgerDB.store, `enter_cost`), so a posting
never half-applies; `verify_books()` re-checks the whole book.

The household register (`households`): which households a building has and
on which floor, as the bank knows them; imported from CSV (`parse_register`,
`import_register`). Cost sharing uses only the register, never the floors
rides happened to go to.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import time
from dataclasses import dataclass

from liftcard_protocol.epoch import LIFTCARD_EPOCH

MAX_ID = (1 << 30) - 1
MAX_HOUSEHOLD = (1 << 24) - 1
MAX_FLOOR = 255
MAX_COST_FEN = 10**11  # a billion yuan: anything above is a typo
MAX_MEMO = 200


class BookError(ValueError):
    """A cost or register refused; str() is one line naming the problem."""


def household_account(building: int, household: int) -> str:
    return "household:%d:%d" % (building, household)


def fund_account(building: int) -> str:
    return "fund:%d" % building


def cost_account(building: int) -> str:
    return "cost:%d" % building


def ride_entry(gateway_id: str, reader_id: int, seq: int) -> str:
    return "ride:%s:%d:%d" % (gateway_id, reader_id, seq)


def cost_entry(cost_id: int) -> str:
    return "cost:%d" % cost_id


def ride_kind(result: int, fee: int) -> str:
    """'charged', 'free' (granted, fee 0: free class, capped, debounced) or 'denied'."""
    if result != 0:
        return "denied"
    return "charged" if fee > 0 else "free"


def ride_unix_time(time_: int, time_corrected: int | None) -> int:
    """A ride's Unix time: the gateway's correction if it made one, else the reader's clock."""
    return LIFTCARD_EPOCH + (time_ if time_corrected is None else time_corrected)


def ride_legs(building: int, household: int, result: int, fee: int) -> list[tuple[str, int]]:
    """The (account, amount) legs a ride posts: [] unless charged."""
    if ride_kind(result, fee) != "charged":
        return []
    return [(household_account(building, household), fee), (fund_account(building), -fee)]


POSTING_SQL = "INSERT INTO postings (entry, building_id, account, at, amount) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"


def posting_rows(entry: str, building: int, at: int, legs) -> list[tuple]:
    """The postings rows of one entry; refuses an entry that does not balance."""
    if sum(a for _, a in legs) != 0 or any(a == 0 for _, a in legs):
        raise BookError("entry %s does not balance" % entry)
    return [(entry, building, acct, at, amount) for acct, amount in legs]


# -- cost sharing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    household: int
    floor: int
    weight: int
    share: int  # fen


def floor_weight(floor: int) -> int:
    """The rule: a household's weight is its number of storeys above the ground
    floor; the ground floor (0) gets no lift and pays nothing."""
    return floor


def share_cost(amount: int, households) -> list[Share]:
    """Divide `amount` fen among `households` [(household, floor), ...] by
    floor_weight, in whole fen that sum exactly to `amount`: each gets the
    integer part of amount*w/W, and the fen left over go one each to the
    largest remainders, ties to the lower household number. Sorted by
    household. Refuses when no household has a weight."""
    hs = sorted(set(households))
    if len({h for h, _ in hs}) != len(hs):
        raise BookError("a household is listed twice with different floors")
    weights = [(h, f, floor_weight(f)) for h, f in hs]
    total = sum(w for _, _, w in weights)
    if amount < 0:
        raise BookError("a cost is a positive amount of fen")
    if total == 0:
        raise BookError("no household above the ground floor to share the cost")
    base = {h: amount * w // total for h, _, w in weights}
    rem = {h: amount * w % total for h, _, w in weights}
    left = amount - sum(base.values())
    for h, _, _ in sorted(weights, key=lambda x: (-rem[x[0]], x[0]))[:left]:
        base[h] += 1
    return [Share(h, f, w, base[h]) for h, f, w in weights]


# -- the household register ----------------------------------------------------------------

REGISTER_HEADER = ("building", "household", "floor")
DIGITS_RE = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def parse_register(text: str) -> list[tuple[int, int, int]]:
    """A register CSV: header `building,household,floor`, then one household a
    line (floor = storeys above the ground floor, 0 for the ground floor).
    Raises BookError naming the line."""
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or tuple(c.strip().lower() for c in rows[0]) != REGISTER_HEADER:
        raise BookError("line 1: the header must be building,household,floor")
    out, seen = [], {}
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != 3:
            raise BookError("line %d: needs 3 fields (building,household,floor), has %d" % (n, len(r)))
        vals = []
        for name, cell, hi in zip(REGISTER_HEADER, r, (MAX_ID, MAX_HOUSEHOLD, MAX_FLOOR)):
            cell = cell.strip()
            lo = 0 if name == "floor" else 1
            if not DIGITS_RE.fullmatch(cell) or not lo <= int(cell) <= hi:
                raise BookError("line %d: %s must be an integer %d .. %d, not %r" % (n, name, lo, hi, cell[:20]))
            vals.append(int(cell))
        b, h, f = vals
        if (b, h) in seen:
            raise BookError("line %d: household %d of building %d is already on line %d" % (n, h, b, seen[(b, h)]))
        seen[(b, h)] = n
        out.append((b, h, f))
    if not out:
        raise BookError("the register lists no household")
    return out


def import_register(sql, rows, now: float | None = None) -> dict:
    """Replace the register of every building in `rows` by `rows`, in one
    transaction (a building absent from the file is left as it was).
    Returns {building: households}."""
    now = time.time() if now is None else now
    buildings = sorted({b for b, _, _ in rows})

    def apply():
        for b in buildings:
            sql.execute("DELETE FROM households WHERE building_id=?", (b,))
        sql.executemany(
            "INSERT INTO households (building_id, household, floor, imported_at) VALUES (?,?,?,?)",
            [(b, h, f, now) for b, h, f in rows],
        )

    sql.run(apply)
    return {b: sum(1 for x in rows if x[0] == b) for b in buildings}


def register(sql, building: int) -> list[tuple[int, int]]:
    """[(household, floor)] of a building's register."""
    return sql.all("SELECT household, floor FROM households WHERE building_id=? ORDER BY household", (building,))


# -- costs ---------------------------------------------------------------------------------


def day_start(day: datetime.date, utc_offset_min: int) -> int:
    """Unix time of local midnight starting `day`."""
    midnight = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.timezone.utc)
    return int(midnight.timestamp()) - utc_offset_min * 60


def check_cost(building: int, amount: int, memo: str) -> None:
    if not 1 <= building <= MAX_ID:
        raise BookError("--building must be 1 .. %d" % MAX_ID)
    if not 1 <= amount <= MAX_COST_FEN:
        raise BookError("--amount-fen must be an integer 1 .. %d (fen)" % MAX_COST_FEN)
    if not memo.strip() or len(memo) > MAX_MEMO or not memo.isprintable():
        raise BookError("--memo must be 1 .. %d printable characters" % MAX_MEMO)


def enter_cost(sql, building: int, amount: int, memo: str, day: datetime.date, utc_offset_min: int, now=None):
    """Charge a maintenance or repair cost to the building's fund and share it
    among its registered households, in one transaction. Returns (cost id, [Share])."""
    check_cost(building, amount, memo)
    now = time.time() if now is None else now
    at = day_start(day, utc_offset_min)

    def apply():
        hs = register(sql, building)
        if not hs:
            raise BookError(
                "building %d has no household register: import it first (liftcard-ledger households import)" % building
            )
        shares = share_cost(amount, hs)
        (cid,) = sql.one(
            "INSERT INTO costs (building_id, day, at, amount, memo, entered_at) VALUES (?,?,?,?,?,?) RETURNING id",
            (building, day.isoformat(), at, amount, memo, now),
        )
        sql.executemany(
            "INSERT INTO cost_shares (cost_id, household, floor, weight, share) VALUES (?,?,?,?,?)",
            [(cid, s.household, s.floor, s.weight, s.share) for s in shares],
        )
        legs = [(fund_account(building), amount), (cost_account(building), -amount)]
        sql.executemany(POSTING_SQL, posting_rows(cost_entry(cid), building, at, legs))
        return cid, shares

    return sql.run(apply)


# -- checking the book -------------------------------------------------------------------------


def verify_books(sql) -> list[str]:
    """Every way the book could be wrong, one line each; [] when it balances:
    the postings sum to 0, so does each entry, each charged ride has exactly its
    two postings (and nothing else posts for a ride), and each cost's shares
    sum to its amount and it is posted."""
    problems = []
    (total,) = sql.one("SELECT COALESCE(sum(amount), 0) FROM postings")
    if total != 0:
        problems.append("the postings sum to %d fen, not 0" % total)
    for entry, s in sql.all("SELECT entry, sum(amount) FROM postings GROUP BY entry HAVING sum(amount) <> 0 LIMIT 20"):
        problems.append("entry %s sums to %d fen" % (entry, s))
    charged, fees = sql.one("SELECT count(*), COALESCE(sum(fee), 0) FROM rides WHERE result=0 AND fee>0")
    legs, debits = sql.one(
        "SELECT count(*), COALESCE(sum(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0) "
        "FROM postings WHERE entry LIKE 'ride:%'"
    )
    if legs != 2 * charged or debits != fees:
        problems.append(
            "%d charged rides (%d fen) but %d ride postings debiting %d fen" % (charged, fees, legs, debits)
        )
    for cid, amount, shared in sql.all(
        "SELECT c.id, c.amount, COALESCE(sum(s.share), 0) FROM costs c "
        "LEFT JOIN cost_shares s ON s.cost_id = c.id GROUP BY c.id, c.amount HAVING COALESCE(sum(s.share), 0) <> c.amount"
    ):
        problems.append("cost %d of %d fen is shared as %d fen" % (cid, amount, shared))
    (unposted,) = sql.one(
        "SELECT count(*) FROM costs c WHERE NOT EXISTS "
        "(SELECT 1 FROM postings p WHERE p.entry = 'cost:' || CAST(c.id AS TEXT))"
    )
    if unposted:
        problems.append("%d costs have no postings" % unposted)
    return problems
