"""The ledger's account book, read the way its statement reads it: what each
household's account was debited per month (liftcard_tools.statement's
`statement`, summed over the months of the run), what each building's fund
took in, and whether the books balance (accountbook.verify_books). Read once
the ledger has stopped; None when the ledger keeps no account book."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liftcard_tools.accountbook import verify_books
from liftcard_tools.ledger import load_config
from liftcard_tools.ledgerdb import LedgerDB
from liftcard_tools.statement import statement


@dataclass
class Book:
    households: dict = field(default_factory=dict)  # (building, household) -> fen debited
    fund_in: dict = field(default_factory=dict)  # building -> fen credited to its fund
    unbalanced: list = field(default_factory=list)  # verify_books' findings, one line each


def read_book(ledger_config: Path, buildings, months) -> Book:
    cfg = load_config(ledger_config)
    db = LedgerDB(cfg.db_path)
    try:
        book = Book()
        for b in buildings:
            for m in months:
                st = statement(db, b, m, utc_offset_min=cfg.utc_offset_min)
                for line in st.households:
                    key = (b, line.household)
                    book.households[key] = book.households.get(key, 0) + line.fees_fen
                book.fund_in[b] = book.fund_in.get(b, 0) + st.fund_in_fen
        book.unbalanced = list(verify_books(db.sql))
        return book
    finally:
        db.close()
