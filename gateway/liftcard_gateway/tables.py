"""The status commands' tables (docs/gateway.md "Status and report",
docs/upstream.md, docs/cards.md): `liftcard-gateway status` (format_overview:
readers, open gaps, refused messages, the upstream, card updates, all from
overview.snapshot(), the figures `status --json` prints) and
`liftcard-gateway cards status`; `render_table` also draws the reference
ledger's totals and the report's. Plain text, columns padded to their widest
cell; never a card id or a key."""

from __future__ import annotations

import time

from liftcard_protocol.link import ST_CLOCK_SYNCED


def ago(t: float | None, now: float, none: str = "never") -> str:
    """How long ago t was: "42s ago", "5m ago", "3h ago"."""
    if t is None:
        return none
    d = max(0, int(now - t))
    return "%ds ago" % d if d < 120 else ("%dm ago" % (d // 60) if d < 7200 else "%dh ago" % (d // 3600))


def render_table(head, rows) -> str:
    """Columns padded to their widest cell, a dashed rule under the heading."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_status(rows: list[dict], now: float | None = None) -> str:
    """The readers table of `status`, from overview.snapshot()'s readers
    (store.Store.status_rows() rows draw the same table)."""
    now = time.time() if now is None else now

    def v(x):
        return "-" if x is None else str(x)

    def clock(r):  # from the last heartbeat's CLOCK_SYNCED flag
        synced = r.get("clock_synced")
        if synced is None and r.get("status_flags") is not None:
            synced = bool(r["status_flags"] & ST_CLOCK_SYNCED)
        if synced is None:
            return "-"
        return "synced" if synced else "unsynced"

    def drift(r):  # the reader's clock minus the gateway's, at the last STATUS
        d = r.get("clock_drift_s")
        return "-" if d is None else "%+ds" % d

    head = (
        "reader",
        "building",
        "online",
        "last seen",
        "acked seq",
        "stored",
        "backlog",
        "wl version",
        "free heap",
        "signal",
        "firmware",
        "wl capacity",
        "clock",
        "drift",
        "gaps",
        "legacy",
    )
    body = [
        (
            str(r["reader_id"]),
            str(r["building_id"]),
            "yes" if r["online"] else "no",
            ago(r["last_seen"], now),
            v(r["acked_seq"]),
            str(r["stored"]),
            v(r["backlog"]),
            v(r["wl_version"]),
            v(r["free_heap"]),
            "-" if r.get("rssi") is None else "%d dBm" % r["rssi"],
            v(r.get("fw_version")),
            v(r.get("wl_capacity")),
            clock(r),
            drift(r),
            str(r["open_gaps"]),
            str(r.get("legacy") or 0),
        )
        for r in rows
    ]
    return render_table(head, body)


def format_upstream_status(rows: list[dict], now: float | None = None) -> str:
    """The upstream table of `status`, from overview.snapshot()'s upstream
    readers (upstream.upstream_status() rows draw the same table)."""
    now = time.time() if now is None else now
    head = ("reader", "stored", "ledger acked", "backlog", "in flight", "last ack")
    body = [
        (
            str(r["reader_id"]),
            str(r["stored"]),
            str(r["ledger_acked"]),
            str(r["backlog"]),
            "-" if r["inflight_batch"] is None else "batch %d" % r["inflight_batch"],
            ago(r["last_ack_at"], now),
        )
        for r in rows
    ]
    return render_table(head, body)


def format_cards_status(db, cfg, held: dict, now: float | None = None) -> str:
    """`cards status`: the card database (a carddb.CardDB), cards per building,
    and each configured reader's held version (`held`: reader_id -> version
    from its last heartbeat) against the database's."""
    now = time.time() if now is None else now
    ver = db.version()
    ups = db.updates(1)
    out = []
    if ver == 0:
        out.append("card database: empty (version 0): import a snapshot")
    else:
        u = ups[0] if ups else {}
        out.append(
            "card database: version %d (last update: %s, applied %s); deltas from version %d on"
            % (ver, u.get("kind", "?"), ago(u.get("applied_at"), now, "-"), db.history_floor())
        )
    counts = db.counts()
    buildings = sorted(set(counts) | {r.building_id for r in cfg.readers.values()})
    out.append("")
    out.append(render_table(["building", "cards"], [[str(b), str(counts.get(b, 0))] for b in buildings]))
    sends = db.sends()
    # Full lists cardservice.py held back for their size (overview.py reads the same table).
    too_big = {r[0] for r in db.conn.execute("SELECT reader_id FROM whitelist_refused")}
    rows = []
    for rid in sorted(cfg.readers):
        r = cfg.readers[rid]
        h = held.get(rid)
        if h is None:
            state = "unknown"
        elif ver == 0:
            state = "-"
        elif h == ver:
            state = "current"
        elif h > ver:
            state = "ahead"
        else:
            state = "too_big" if rid in too_big else "behind"
        s = sends.get(rid)
        last = (
            "-"
            if not s
            else "%s %d->%d %s" % (s["how"], s["from_version"], s["to_version"], ago(s["sent_at"], now, "-"))
        )
        rows.append([str(rid), str(r.building_id), "-" if h is None else str(h), str(ver), state, last])
    out.append("")
    out.append(render_table(["reader", "building", "held", "target", "state", "last sent"], rows))
    return "\n".join(out)


def format_overview(snap: dict, now: float | None = None) -> str:
    """`liftcard-gateway status`: an overview.snapshot() as text tables; the
    sections without anything to show (no gap, no refusal) are one line."""
    now = snap["generated_at"] if now is None else now
    out = [format_status(snap["readers"], now)]
    gaps = snap["gaps"]
    if gaps:
        out += ["", "open gaps:"]
        out.append(
            render_table(
                ("reader", "from seq", "to seq", "noticed"),
                [(str(g["reader_id"]), str(g["from_seq"]), str(g["to_seq"]), ago(g["noticed_at"], now)) for g in gaps],
            )
        )
    else:
        out += ["", "open gaps: none"]
    refused = snap["refusals"]
    if refused:
        out += ["", "refused messages:"]
        out.append(
            render_table(
                ("reader", "reason", "count", "last"),
                [
                    (str(x["reader_id"] or "not configured"), x["reason"], str(x["count"]), ago(x["last_at"], now))
                    for x in refused
                ],
            )
        )
    else:
        out += ["", "refused messages: none"]
    if snap["upstream"] is not None:  # docs/upstream.md
        out += ["", "upstream to the ledger:", format_upstream_status(snap["upstream"]["readers"], now)]
    cards = snap["cards"]
    if cards is not None:  # docs/cards.md; `cards status` has the detail
        states = [c["state"] for c in cards["readers"]]
        out += [
            "",
            "card updates: database version %d; readers current %d of %d, behind %d, too big %d, unknown %d"
            % (
                cards["version"],
                states.count("current"),
                len(states),
                states.count("behind"),
                states.count("too_big"),
                states.count("unknown"),
            ),
        ]
        big = [c for c in cards["readers"] if c["too_big"]]
        if big:  # cardservice.py holds these lists back: they would fail on the reader's flash
            out += ["", "whitelists not sent (more cards than the reader can hold):"]
            out.append(
                render_table(
                    ("reader", "cards", "capacity", "version", "refused"),
                    [
                        (
                            str(c["reader_id"]),
                            str(c["too_big"]["cards"]),
                            str(c["too_big"]["capacity"]),
                            str(c["too_big"]["to_version"]),
                            ago(c["too_big"]["refused_at"], now),
                        )
                        for c in big
                    ],
                )
            )
    return "\n".join(out)
