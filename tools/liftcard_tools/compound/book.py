"""The ledger's account book, read the way its statement reads it: what each
household's account was debited per month (liftcard_tools.statement's
`statement`, summed over the months of the run), what each building's fund
took in and paid out and what it holds at the end, each cost with the shares
it was split into, the household register (accountbook.register), and whether
the books balance (accountbook.verify_books). Read once the ledger has
stopped; None when the ledger keeps no account book."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liftcard_tools.accountbook import register, verify_books
from liftcard_tools.ledger import load_config
from liftcard_tools.ledgerdb import LedgerDB
from liftcard_tools.statement import statement


@dataclass
class Book:
    households: dict = field(default_factory=dict)  # (building, household) -> fen debited
    fund_in: dict = field(default_factory=dict)  # building -> fen credited to its fund
    fund_out: dict = field(default_factory=dict)  # building -> fen its fund paid (costs)
    fund_opening: dict = field(default_factory=dict)  # building -> its fund at the start of the run's first month
    fund_closing: dict = field(default_factory=dict)  # building -> its fund at the end of the run's last month
    costs: dict = field(default_factory=dict)  # building -> [statement.CostLine], in the order entered
    floors: dict = field(default_factory=dict)  # (building, household) -> the floor its statement shows (None: "-")
    register: dict = field(default_factory=dict)  # building -> [(household, floor)], the register at the end
    unbalanced: list = field(default_factory=list)  # verify_books' findings, one line each


def read_book(ledger_config: Path, buildings, months) -> Book:
    cfg = load_config(ledger_config)
    db = LedgerDB(cfg.db_path)
    try:
        book = Book()
        for b in buildings:
            book.fund_in[b] = book.fund_out[b] = 0
            book.costs[b] = []
            for i, m in enumerate(months):
                st = statement(db, b, m, utc_offset_min=cfg.utc_offset_min)
                for line in st.households:
                    key = (b, line.household)
                    book.households[key] = book.households.get(key, 0) + line.fees_fen
                    book.floors[key] = line.floor
                book.fund_in[b] += st.fund_in_fen
                book.fund_out[b] += st.fund_out_fen
                if i == 0:
                    book.fund_opening[b] = st.fund_opening_fen
                book.fund_closing[b] = st.fund_closing_fen
                book.costs[b] += st.costs
            book.register[b] = [tuple(r) for r in register(db.sql, b)]
        book.unbalanced = list(verify_books(db.sql))
        return book
    finally:
        db.close()
