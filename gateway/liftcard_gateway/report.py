"""Rides and fees per building and per household, from the gateway's own
database (docs/gateway.md, "Status and report"): `liftcard-gateway report
[--building B] [--month YYYY-MM] [--utc-offset-min M] [--json]`.

Every tap is one ride record (docs/formats.md); only a GRANTED one (result 0)
is a ride. A ride is charged when its fee is above 0, free otherwise (a
debounced re-tap, a free class, a household past its cap); fees are integer
fen, summed in SQLite's integers. Denied taps (any other result) are counted
apart, never as rides. A ride's month is the month of its time (the corrected
time of an unsynced ride, docs/gateway.md "Clock") at the given UTC offset.

What retention pruned (retention.py) is no longer here: the report says how
many rides were pruned so a month that reaches past the horizon is not read
as complete.
"""

from __future__ import annotations

import datetime
import json
import re
import sqlite3
import sys

from liftcard_protocol.codes import Result
from liftcard_protocol.epoch import date_to_day

from .db import connect
from .tables import render_table

MONTH_RE = re.compile(r"(\d{4})-(\d{2})")
MAX_UTC_OFFSET_MIN = 14 * 60


class ReportError(ValueError):
    """A bad --month, --building or --utc-offset-min: str() is one line."""


def month_range(month: str, utc_offset_min: int = 0) -> tuple[int, int]:
    """[start, end) in liftcard-epoch seconds of the local calendar month "YYYY-MM"."""
    m = MONTH_RE.fullmatch(month or "")
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 2024:
        raise ReportError("--month %r: give a month as YYYY-MM, 2024-01 or later" % month)
    if not -MAX_UTC_OFFSET_MIN <= utc_offset_min <= MAX_UTC_OFFSET_MIN:
        raise ReportError("--utc-offset-min %d: must be within -840 .. 840" % utc_offset_min)
    y, mo = int(m.group(1)), int(m.group(2))
    first = datetime.date(y, mo, 1)
    nxt = datetime.date(y + mo // 12, mo % 12 + 1, 1)
    return (
        date_to_day(first) * 86400 - utc_offset_min * 60,
        date_to_day(nxt) * 86400 - utc_offset_min * 60,
    )


def _zero() -> dict:
    return {"rides": 0, "charged": 0, "free": 0, "fees_fen": 0, "denied": 0}


def report(conn, building: int | None = None, month: str | None = None, utc_offset_min: int = 0) -> dict:
    """The report as a dict (what --json prints): per building, its totals and
    its households'. Raises ReportError for a bad month or an unknown building."""
    where, args = [], []
    if month is not None:
        lo, hi = month_range(month, utc_offset_min)
        where.append("COALESCE(x.time_corrected, x.time) >= ? AND COALESCE(x.time_corrected, x.time) < ?")
        args += [lo, hi]
    if building is not None:
        if conn.execute("SELECT 1 FROM readers WHERE building_id=?", (building,)).fetchone() is None:
            raise ReportError("--building %d: no reader of this gateway is in that building" % building)
        where.append("r.building_id = ?")
        args.append(building)
    sql = (
        "SELECT r.building_id, x.household, "
        "sum(x.result = ?), sum(x.result = ? AND x.fee > 0), sum(x.result = ? AND x.fee = 0), "
        "COALESCE(sum(CASE WHEN x.result = ? THEN x.fee ELSE 0 END), 0), sum(x.result != ?) "
        "FROM rides x JOIN readers r ON r.reader_id = x.reader_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY r.building_id, x.household ORDER BY r.building_id, x.household"
    )
    g = int(Result.GRANTED)
    buildings: dict[int, dict] = {}
    conn.execute("BEGIN")
    try:
        for bid, hh, rides, charged, free, fees, denied in conn.execute(sql, [g, g, g, g, g] + args):
            b = buildings.setdefault(bid, dict(_zero(), building_id=bid, households=[]))
            row = {"rides": rides, "charged": charged, "free": free, "fees_fen": fees, "denied": denied}
            b["households"].append(dict(row, household=hh))
            for k, v in row.items():
                b[k] += v
        pruned = 0
        try:
            pruned = conn.execute("SELECT COALESCE(sum(rides), 0) FROM pruned_rides").fetchone()[0]
        except sqlite3.OperationalError:  # a database from before retention: nothing pruned
            pruned = 0
    finally:
        conn.execute("COMMIT")
    blist = [buildings[b] for b in sorted(buildings)]
    total = _zero()
    for b in blist:
        for k in total:
            total[k] += b[k]
    return {
        "building": building,
        "month": month,
        "utc_offset_min": utc_offset_min,
        "buildings": blist,
        "total": total,
        "pruned_taps": pruned,
    }


def format_report(rep: dict) -> str:
    """The report as text: one table per building (its households, then its
    total), then the grand total."""
    head = ("household", "rides", "charged", "free", "fees (fen)", "denied taps")

    def cells(name, r):
        return (name, str(r["rides"]), str(r["charged"]), str(r["free"]), str(r["fees_fen"]), str(r["denied"]))

    scope = "month %s (UTC%+d min)" % (rep["month"], rep["utc_offset_min"]) if rep["month"] else "every month held"
    out = ["rides and fees, %s" % scope]
    if not rep["buildings"]:
        out.append("no taps")
    for b in rep["buildings"]:
        body = [cells(str(h["household"]) if h["household"] else "0 (unknown card)", h) for h in b["households"]]
        body.append(cells("building total", b))
        out += ["", "building %d" % b["building_id"], render_table(head, body)]
    if len(rep["buildings"]) > 1:
        out += ["", render_table(head, [cells("all buildings", rep["total"])])]
    if rep["pruned_taps"]:
        out += ["", "(%d older taps, acknowledged by the ledger, were pruned and are not counted)" % rep["pruned_taps"]]
    return "\n".join(out)


def add_parser(sub) -> None:
    """The `report` command on cli.py's subparsers."""
    p = sub.add_parser("report", help="rides and fees per building and household, from the gateway's database")
    p.add_argument("--config", required=True, help="the gateway's TOML config")
    p.add_argument("--building", type=int, help="only this building")
    p.add_argument("--month", help="only this month, YYYY-MM (by the ride's time)")
    p.add_argument("--utc-offset-min", type=int, default=0, help="the months' time zone, minutes east of UTC")
    p.add_argument("--json", action="store_true", help="one JSON object for scripts")


def command(cfg, args) -> int:
    """`liftcard-gateway report`: 0 printed; 1 no database; 2 a bad option."""
    prog = "liftcard-gateway"
    if not cfg.db_path.exists():
        print("%s: no database yet at %s (run the daemon first)" % (prog, cfg.db_path), file=sys.stderr)
        return 1
    try:
        if args.month is not None:
            month_range(args.month, args.utc_offset_min)  # a bad month is refused before the database is opened
        conn = connect(cfg.db_path, readonly=True)
    except ReportError as e:
        print("%s: %s" % (prog, e), file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as e:
        print("%s: cannot open the database %s: %s" % (prog, cfg.db_path, e), file=sys.stderr)
        return 1
    try:
        rep = report(conn, args.building, args.month, args.utc_offset_min)
    except ReportError as e:
        print("%s: %s" % (prog, e), file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0
