"""A building's monthly statement from the account book (docs/ledger.md, "The statement").

    st = statement(db, 12, "2026-11")              # db: a ledgerdb.LedgerDB (or its Sql)
    st = statement(db, 12, "2026-11", household=345, utc_offset_min=480)
    print(render_text(st))
    Path("b12.html").write_text(render_html(st))

What it holds, for the calendar month at the bank's local time
(`utc_offset_min`, the ledger's `[ledger] utc_offset_min`):

- taps split into rides (granted) -- charged (fee > 0) and free (fee 0: free
  class, capped to 0, debounced re-tap) -- and denied taps, apart;
- per household (the register's floor beside it) and per destination floor:
  rides, charged, free, denied, fees; rides by hour of day;
- the fund: its balance at the start of the month, its inflows (fees
  credited) and outflows (costs debited), its balance at the end;
- each cost of the month and how it is shared among the households.

Counts come from the rides, money from the postings (the household's fees
are what its account was debited); the two agree because a charged ride is
posted in its own transaction (accountbook.py). With `household` the
household's own lines only: its row, its rides by hour and floor, its share
of each cost; the building's fund figures stay (they are the households' in
common). Times are the gateway's corrected time where it made one.

The HTML page is one self-contained file: inline CSS, the two charts as
inline SVG, no script, nothing fetched. Every number has an element id or
class (`#fees-fen`, `tr.household[data-household="345"] td.fees`, ...),
so a test or a scraper reads the page as the ledger does.
"""

from __future__ import annotations

import datetime
import html
import re
from dataclasses import dataclass, field

from liftcard_protocol.epoch import LIFTCARD_EPOCH

from liftcard_gateway.tables import render_table

from .accountbook import BookError, Share, day_start, fund_account, household_account

MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass
class Counts:
    rides: int = 0  # granted
    charged: int = 0
    free: int = 0
    denied: int = 0
    fees_fen: int = 0

    def add(self, result: int, fee: int, n: int = 1, fees: int | None = None) -> None:
        if result != 0:
            self.denied += n
            return
        self.rides += n
        if fee > 0:
            self.charged += n
            self.fees_fen += fee * n if fees is None else fees
        else:
            self.free += n


@dataclass
class HouseholdLine:
    household: int
    floor: int | None  # storeys above ground in the register; None: not registered
    counts: Counts
    fees_fen: int  # what the household's account was debited in the month
    cost_share_fen: int


@dataclass
class FloorLine:
    floor: int  # destination floor index, as the readers number floors
    counts: Counts


@dataclass
class CostLine:
    cost_id: int
    day: str
    memo: str
    amount_fen: int
    shares: list[Share]


@dataclass
class Statement:
    building: int
    month: str
    utc_offset_min: int
    household: int | None
    totals: Counts
    households: list[HouseholdLine]
    floors: list[FloorLine]
    hours: list[int]  # rides (granted) by local hour of day, 24
    fund_opening_fen: int
    fund_in_fen: int
    fund_out_fen: int
    fund_closing_fen: int
    costs: list[CostLine] = field(default_factory=list)


def parse_month(month: str) -> tuple[int, int]:
    m = MONTH_RE.match(month or "")
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 2024:
        raise BookError("--month must be YYYY-MM (2024 or later), not %r" % (month or "")[:20])
    return int(m.group(1)), int(m.group(2))


def month_bounds(month: str, utc_offset_min: int) -> tuple[int, int]:
    """[start, end) of a local calendar month in Unix seconds."""
    y, m = parse_month(month)
    first = datetime.date(y, m, 1)
    nxt = datetime.date(y + (m == 12), m % 12 + 1, 1)
    return day_start(first, utc_offset_min), day_start(nxt, utc_offset_min)


def statement(db, building: int, month: str, household: int | None = None, utc_offset_min: int = 480) -> Statement:
    """The statement of `building` for `month` ("YYYY-MM"); module docstring."""
    sql = getattr(db, "sql", db)
    start, end = month_bounds(month, utc_offset_min)
    rt = "COALESCE(time_corrected, time)"
    where = "building_id=? AND %s >= ? AND %s < ?" % (rt, rt)
    args = [building, start - LIFTCARD_EPOCH, end - LIFTCARD_EPOCH]
    if household is not None:
        known = sql.one("SELECT 1 FROM households WHERE building_id=? AND household=?", (building, household))
        if (
            known is None
            and sql.one("SELECT 1 FROM rides WHERE building_id=? AND household=?", (building, household)) is None
        ):
            raise BookError("household %d is not known in building %d" % (household, building))
        where += " AND household=?"
        args.append(household)

    totals = Counts()
    per_house: dict[int, Counts] = {}
    per_floor: dict[int, Counts] = {}
    for hh, fl, result, fee, n, fees in sql.all(
        "SELECT household, floor, result, fee, count(*), sum(fee) FROM rides WHERE %s "
        "GROUP BY household, floor, result, fee" % where,
        args,
    ):
        for c in (totals, per_house.setdefault(hh, Counts()), per_floor.setdefault(fl, Counts())):
            c.add(result, fee, n, fees)
    hours = [0] * 24
    off = utc_offset_min * 60
    for h, n in sql.all(
        "SELECT ((%s + ?) %% 86400 + 86400) %% 86400 / 3600, count(*) FROM rides WHERE %s AND result=0 GROUP BY 1"
        % (rt, where),
        [off, *args],
    ):
        hours[int(h)] = n

    posted = {
        acct: s
        for acct, s in sql.all(
            "SELECT account, sum(amount) FROM postings WHERE building_id=? AND at >= ? AND at < ? "
            "AND account LIKE 'household:%' GROUP BY account",
            (building, start, end),
        )
    }
    reg = dict(sql.all("SELECT household, floor FROM households WHERE building_id=?", (building,)))
    costs = []
    share_of: dict[int, int] = {}
    for cid, day, memo, amount in sql.all(
        "SELECT id, day, memo, amount FROM costs WHERE building_id=? AND at >= ? AND at < ? ORDER BY at, id",
        (building, start, end),
    ):
        shares = [
            Share(h, f, w, s)
            for h, f, w, s in sql.all(
                "SELECT household, floor, weight, share FROM cost_shares WHERE cost_id=? ORDER BY household", (cid,)
            )
            if household is None or h == household
        ]
        for s in shares:
            share_of[s.household] = share_of.get(s.household, 0) + s.share
        costs.append(CostLine(cid, day, memo, amount, shares))

    houses = set(per_house) | set(share_of) | (set(reg) if household is None else {household})
    lines = [
        HouseholdLine(
            h,
            reg.get(h),
            per_house.get(h, Counts()),
            posted.get(household_account(building, h), 0),
            share_of.get(h, 0),
        )
        for h in sorted(houses)
    ]

    fund = fund_account(building)
    (before,) = sql.one("SELECT COALESCE(sum(amount), 0) FROM postings WHERE account=? AND at < ?", (fund, start))
    fin, fout = sql.one(
        "SELECT COALESCE(sum(CASE WHEN amount < 0 THEN -amount ELSE 0 END), 0), "
        "COALESCE(sum(CASE WHEN amount > 0 THEN amount ELSE 0 END), 0) "
        "FROM postings WHERE account=? AND at >= ? AND at < ?",
        (fund, start, end),
    )
    opening = -before
    return Statement(
        building,
        month,
        utc_offset_min,
        household,
        totals,
        lines,
        [FloorLine(f, per_floor[f]) for f in sorted(per_floor)],
        hours,
        opening,
        fin,
        fout,
        opening + fin - fout,
        costs,
    )


# -- rendering ---------------------------------------------------------------------------


def yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals, exactly: 12345 -> "123.45"."""
    sign = "-" if fen < 0 else ""
    return "%s%d.%02d" % (sign, abs(fen) // 100, abs(fen) % 100)


def _floor_name(f: int | None) -> str:
    if f is None:
        return "-"
    return "ground" if f == 0 else str(f)


def _house_name(h: int) -> str:
    return "0 (unknown card)" if h == 0 else str(h)  # denials of cards not on the whitelist


def _dest_name(f: int) -> str:
    return "none" if f == 0xFF else str(f)  # a denial before the destination was known


def _title(st: Statement) -> str:
    t = "Elevator fund statement, building %d, %s" % (st.building, st.month)
    return t + (", household %d" % st.household if st.household is not None else "")


def render_text(st: Statement) -> str:
    """The statement as plain text tables (fen as yuan with two decimals)."""
    t = st.totals
    out = [
        _title(st),
        "",
        "rides %d (charged %d, free %d); denied taps %d; fees %s yuan"
        % (t.rides, t.charged, t.free, t.denied, yuan(t.fees_fen)),
        "fund: opening %s, in %s, out %s, closing %s yuan"
        % (yuan(st.fund_opening_fen), yuan(st.fund_in_fen), yuan(st.fund_out_fen), yuan(st.fund_closing_fen)),
        "",
        "Households",
        render_table(
            ("household", "floor", "rides", "charged", "free", "denied", "fees", "cost share"),
            [
                (
                    _house_name(h.household),
                    _floor_name(h.floor),
                    str(h.counts.rides),
                    str(h.counts.charged),
                    str(h.counts.free),
                    str(h.counts.denied),
                    yuan(h.fees_fen),
                    yuan(h.cost_share_fen),
                )
                for h in st.households
            ],
        ),
        "",
        "Floors (destination)",
        render_table(
            ("floor", "rides", "charged", "free", "denied", "fees"),
            [
                (_dest_name(f.floor), str(f.counts.rides), str(f.counts.charged), str(f.counts.free))
                + (str(f.counts.denied),)
                + (yuan(f.counts.fees_fen),)
                for f in st.floors
            ],
        ),
        "",
        "Rides by hour",
        "  ".join("%02d:%d" % (h, n) for h, n in enumerate(st.hours) if n) or "none",
    ]
    for c in st.costs:
        out += [
            "",
            "Cost %d, %s: %s, %s yuan, shared by floor" % (c.cost_id, c.day, c.memo, yuan(c.amount_fen)),
            render_table(
                ("household", "floor", "weight", "share"),
                [(str(s.household), _floor_name(s.floor), str(s.weight), yuan(s.share)) for s in c.shares],
            ),
        ]
    if not st.costs:
        out += ["", "No maintenance or repair costs this month."]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border-bottom:1px solid #ddd;padding:.25em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
dl{display:grid;grid-template-columns:max-content max-content;gap:.2em 1.2em}dd{margin:0;text-align:right}
svg{border:1px solid #eee;background:#fcfcfc}.bar{fill:#3b7dd8}.axis{font-size:10px;fill:#555}.value{font-size:10px;fill:#222}
"""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _bar_chart(chart_id: str, title: str, items: list[tuple[str, str, int, str]]) -> str:
    """An inline SVG bar chart; items: (key attribute, label, value, shown value)."""
    w, h, pad = 640, 200, 28
    n = max(1, len(items))
    slot = (w - 2 * pad) / n
    bw = min(slot - 2, 48)  # a few floors make no slabs
    top = max([v for _, _, v, _ in items] + [1])
    parts = [
        '<svg id="%s" role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d" '
        'xmlns="http://www.w3.org/2000/svg">' % (chart_id, _esc(title), w, h + 30, w, h + 30),
        "<title>%s</title>" % _esc(title),
    ]
    for i, (key, label, v, shown) in enumerate(items):
        bh = (h - pad) * v / top
        cx = pad + i * slot + slot / 2
        parts.append(
            '<rect class="bar" %s data-value="%d" x="%.1f" y="%.1f" width="%.1f" height="%.1f">'
            "<title>%s: %s</title></rect>" % (key, v, cx - bw / 2, h - bh, max(bw, 1), bh, _esc(label), _esc(shown))
        )
        if v:
            parts.append(
                '<text class="value" x="%.1f" y="%.1f" text-anchor="middle">%s</text>' % (cx, h - bh - 4, _esc(shown))
            )
        parts.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>' % (cx, h + 14, _esc(label)))
    parts.append("</svg>")
    return "".join(parts)


def render_html(st: Statement) -> str:
    """The statement as one self-contained HTML page (module docstring)."""
    t = st.totals

    def cell(cls: str, text, fen: int | None = None) -> str:
        extra = ' data-fen="%d"' % fen if fen is not None else ""
        return '<td class="%s"%s>%s</td>' % (cls, extra, _esc(text))

    rows = []
    for hl in st.households:
        c = hl.counts
        rows.append(
            '<tr class="household" data-household="%d"><td class="household-id">%s</td>%s%s%s%s%s%s%s</tr>'
            % (
                hl.household,
                _esc(_house_name(hl.household)),
                cell("floor", _floor_name(hl.floor)),
                cell("rides", c.rides),
                cell("charged", c.charged),
                cell("free", c.free),
                cell("denied", c.denied),
                cell("fees", yuan(hl.fees_fen), hl.fees_fen),
                cell("share", yuan(hl.cost_share_fen), hl.cost_share_fen),
            )
        )
    frows = [
        '<tr class="floor" data-floor="%d"><td class="floor-id">%s</td>%s%s%s%s%s</tr>'
        % (
            f.floor,
            _dest_name(f.floor),
            cell("rides", f.counts.rides),
            cell("charged", f.counts.charged),
            cell("free", f.counts.free),
            cell("denied", f.counts.denied),
            cell("fees", yuan(f.counts.fees_fen), f.counts.fees_fen),
        )
        for f in st.floors
    ]
    costs = []
    for c in st.costs:
        srows = "".join(
            '<tr class="share" data-household="%d"><td>%d</td>%s%s%s</tr>'
            % (
                s.household,
                s.household,
                cell("floor", _floor_name(s.floor)),
                cell("weight", s.weight),
                cell("share", yuan(s.share), s.share),
            )
            for s in c.shares
        )
        costs.append(
            '<section class="cost" data-cost="%d"><h3><span class="day">%s</span> '
            '<span class="memo">%s</span>: <span class="amount" data-fen="%d">%s</span> yuan</h3>'
            "<table><tr><th>household</th><th>floor</th><th>weight</th><th>share (yuan)</th></tr>%s</table></section>"
            % (c.cost_id, _esc(c.day), _esc(c.memo), c.amount_fen, yuan(c.amount_fen), srows)
        )
    hours = _bar_chart(
        "chart-hours",
        "rides by hour of day",
        [('data-hour="%d"' % h, "%02d" % h, n, str(n)) for h, n in enumerate(st.hours)],
    )
    fees = _bar_chart(
        "chart-floors",
        "fees by destination floor (fen)",
        [
            ('data-floor="%d"' % f.floor, _dest_name(f.floor), f.counts.fees_fen, yuan(f.counts.fees_fen))
            for f in st.floors
        ],
    )

    def dd(id_, text, fen=None):
        extra = ' data-fen="%d"' % fen if fen is not None else ""
        return '<dd id="%s"%s>%s</dd>' % (id_, extra, _esc(text))

    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>%s</title>' % _esc(_title(st)),
        '<meta name="viewport" content="width=device-width">',
        "<style>%s</style></head><body>" % _CSS,
        '<h1>Elevator fund statement, building <span id="building">%d</span>, <span id="month">%s</span>%s</h1>'
        % (
            st.building,
            _esc(st.month),
            ', household <span id="household">%d</span>' % st.household if st.household is not None else "",
        ),
        "<p>Amounts in yuan (integer fen in the ledger). Local time UTC%+d:%02d.</p>"
        % (
            st.utc_offset_min // 60 if st.utc_offset_min >= 0 else -(-st.utc_offset_min // 60),
            abs(st.utc_offset_min) % 60,
        ),
        "<h2>Rides</h2><dl>",
        "<dt>rides</dt>" + dd("rides", t.rides),
        "<dt>charged rides</dt>" + dd("charged-rides", t.charged),
        "<dt>free rides</dt>" + dd("free-rides", t.free),
        "<dt>denied taps</dt>" + dd("denied-taps", t.denied),
        "<dt>fees</dt>" + dd("fees-fen", yuan(t.fees_fen), t.fees_fen),
        "</dl><h2>Fund</h2><dl>",
        "<dt>opening balance</dt>" + dd("fund-opening", yuan(st.fund_opening_fen), st.fund_opening_fen),
        "<dt>inflows (fees)</dt>" + dd("fund-in", yuan(st.fund_in_fen), st.fund_in_fen),
        "<dt>outflows (costs)</dt>" + dd("fund-out", yuan(st.fund_out_fen), st.fund_out_fen),
        "<dt>closing balance</dt>" + dd("fund-closing", yuan(st.fund_closing_fen), st.fund_closing_fen),
        "</dl>",
        "<h2>Households</h2>",
        '<table id="households"><tr><th>household</th><th>floor</th><th>rides</th><th>charged</th><th>free</th>'
        "<th>denied</th><th>fees</th><th>cost share</th></tr>%s</table>" % "".join(rows),
        "<h2>Floors</h2>",
        '<table id="floors"><tr><th>floor</th><th>rides</th><th>charged</th><th>free</th><th>denied</th>'
        "<th>fees</th></tr>%s</table>" % "".join(frows),
        "<h2>Rides by hour of day</h2>",
        hours,
        "<h2>Fees by floor</h2>",
        fees,
        "<h2>Maintenance and repair costs</h2>",
        '<div id="costs">%s</div>' % ("".join(costs) or "<p>None this month.</p>"),
        "</body></html>",
    ]
    return "\n".join(body) + "\n"
