"""The local web console (docs/gateway.md, "Web console"): the daemon serves,
from a thread, when the config has `[console] listen = "127.0.0.1:8480"`:

- `/`: one self-contained HTML page (inline CSS and SVG, no script, no
  external asset), reloading itself every refresh_s: readers' health, open
  gaps, refused messages, the upstream backlog, card-update propagation;
- `/status.json`: exactly what `liftcard-gateway status --json` prints
  (overview.snapshot);
- `/metrics`: the Prometheus text (metrics.py).

Read-only: every request reads gateway.db through its own read-only SQLite
connection (db.connect(readonly=True)), so the console can neither change
nor lock out the daemon's writes; only GET and HEAD are answered. It has no
login: config.py refuses a listen address other than loopback unless
`allow_remote = true`. Never a card id or a key on a page.
"""

from __future__ import annotations

import html
import json
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import metrics, overview
from .db import connect
from .logs import events
from .tables import ago

LOGGER = "liftcard.console"
# No script, no outside request: the page works, and stays safe, with nothing but itself.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#1b1f24;background:#f6f7f9}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.4em 0 .4em}
.meta{color:#57606a;font-size:.9em}
.tiles{display:flex;flex-wrap:wrap;gap:.6em;margin:.8em 0}
.tile{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.5em .9em;min-width:9em}
.tile b{display:block;font-size:1.5em}.tile.bad{border-color:#cf222e;color:#cf222e}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de}
th,td{padding:.25em .6em;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{background:#eaeef2;text-align:center}td:first-child,th:first-child{text-align:left}
.no{color:#cf222e;font-weight:600}.yes{color:#1a7f37}.none{color:#57606a}
"""


# Card states the page marks red: the reader lacks cards the database has.
_LATE = ("behind", "too_big")


def _e(x) -> str:
    return html.escape("-" if x is None else str(x), quote=True)


def _cell(key: str, value, shown=None, cls: str = "") -> str:
    """A table cell carrying its raw figure (data-v) beside what it shows."""
    raw = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    c = ' class="%s"' % cls if cls else ""
    return '<td data-k="%s" data-v="%s"%s>%s</td>' % (key, _e(raw), c, _e(value if shown is None else shown))


def _table(tid: str, head, rows: list[str], empty: str) -> str:
    if not rows:
        return '<p id="%s" class="none">%s</p>' % (tid, _e(empty))
    th = "".join("<th>%s</th>" % _e(h) for h in head)
    return '<table id="%s"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (tid, th, "".join(rows))


def _bars(values: list[tuple[str, int]], title: str) -> str:
    """An inline SVG bar chart (no script, no outside asset)."""
    if not values:
        return ""
    top = max(v for _, v in values) or 1
    h = 22 * len(values) + 8
    out = [
        '<svg id="chart" role="img" width="420" height="%d" viewBox="0 0 420 %d"><title>%s</title>' % (h, h, _e(title))
    ]
    for i, (label, v) in enumerate(values):
        y = 4 + 22 * i
        w = max(1, int(260 * v / top)) if v else 0
        out.append(
            '<text x="0" y="%d" font-size="12">%s</text><rect x="90" y="%d" width="%d" height="16" fill="#0969da"/>'
            '<text x="%d" y="%d" font-size="12">%d</text>' % (y + 13, _e(label), y, w, 96 + w, y + 13, v)
        )
    out.append("</svg>")
    return "".join(out)


def render_page(snap: dict, refresh_s: int = 10) -> str:
    """The console's HTML page for an overview.snapshot()."""
    now = snap["generated_at"]
    readers = snap["readers"]
    up = snap["upstream"]
    cards = snap["cards"]
    card_of = {c["reader_id"]: c for c in (cards or {}).get("readers", [])}
    n_online = sum(1 for r in readers if r["online"])
    n_ref = sum(x["count"] for x in snap["refusals"])
    tiles = [
        ("readers-online", "readers online", "%d/%d" % (n_online, len(readers)), n_online < len(readers)),
        ("gaps-open", "open gaps", len(snap["gaps"]), bool(snap["gaps"])),
        ("refusals-total", "refused messages", n_ref, n_ref > 0),
    ]
    if up is not None:
        tiles.append(("upstream-backlog", "upstream backlog", up["backlog"], False))
    if cards is not None:
        behind = sum(1 for c in cards["readers"] if c["state"] != "current")
        tiles.append(("card-version", "card database version", cards["version"], False))
        tiles.append(("cards-behind", "readers not current", behind, behind > 0))
    tiles.append(("db-size", "database size (bytes)", snap["database"]["bytes"], False))
    tile_html = "".join(
        '<div class="tile%s"><span>%s</span><b id="%s">%s</b></div>' % (" bad" if bad else "", _e(t), i, _e(v))
        for i, t, v, bad in tiles
    )

    rrows = []
    for r in readers:
        c = card_of.get(r["reader_id"], {})
        drift = r["clock_drift_s"]
        rrows.append(
            '<tr data-reader="%d">' % r["reader_id"]
            + "".join(
                (
                    _cell("reader_id", r["reader_id"]),
                    _cell("building_id", r["building_id"]),
                    _cell("online", r["online"], "yes" if r["online"] else "no", "yes" if r["online"] else "no"),
                    _cell("last_seen", r["last_seen"], ago(r["last_seen"], now)),
                    _cell("backlog", r["backlog"]),
                    _cell("free_heap", r["free_heap"]),
                    _cell("rssi", r["rssi"], None if r["rssi"] is None else "%d dBm" % r["rssi"]),
                    _cell("fw_version", r["fw_version"]),
                    _cell(
                        "clock_synced",
                        r["clock_synced"],
                        "-" if r["clock_synced"] is None else ("synced" if r["clock_synced"] else "unsynced"),
                    ),
                    _cell("clock_drift_s", drift, None if drift is None else "%+ds" % drift),
                    _cell("wl_version", r["wl_version"]),
                    _cell("wl_capacity", r["wl_capacity"]),
                    _cell("card_state", c.get("state"), cls="no" if c.get("state") in _LATE else ""),
                    _cell("legacy", r["legacy"], cls="no" if r["legacy"] else ""),
                    _cell("stored", r["stored"]),
                    _cell("acked_seq", r["acked_seq"]),
                    _cell("open_gaps", r["open_gaps"], cls="no" if r["open_gaps"] else ""),
                )
            )
            + "</tr>"
        )
    readers_html = _table(
        "readers",
        (
            "reader",
            "building",
            "online",
            "last seen",
            "backlog",
            "free heap",
            "signal",
            "firmware",
            "clock",
            "clock offset",
            "whitelist",
            "list capacity",
            "cards",
            "legacy rides",
            "stored",
            "acked seq",
            "gaps",
        ),
        rrows,
        "no reader configured",
    )
    grows = [
        "<tr>%s%s%s%s</tr>"
        % (
            _cell("reader_id", g["reader_id"]),
            _cell("from_seq", g["from_seq"]),
            _cell("to_seq", g["to_seq"]),
            _cell("noticed_at", g["noticed_at"], ago(g["noticed_at"], now)),
        )
        for g in snap["gaps"]
    ]
    frows = [
        "<tr>%s%s%s%s</tr>"
        % (
            _cell("reader_id", x["reader_id"], x["reader_id"] or "not configured"),
            _cell("reason", x["reason"]),
            _cell("count", x["count"]),
            _cell("last_at", x["last_at"], ago(x["last_at"], now)),
        )
        for x in snap["refusals"]
    ]
    parts = [
        "<h2>Readers</h2>",
        readers_html,
        '<p class="meta">Signal, firmware and list capacity (the cards its whitelist can hold) are what '
        "the reader's last heartbeat said (docs/uplink.md, STATUS); - when it did not say.</p>",
        "<h2>Open gaps</h2>",
        _table("gaps", ("reader", "from seq", "to seq", "noticed"), grows, "no open gap"),
        "<h2>Refused messages</h2>",
        _table("refusals", ("reader", "reason", "count", "last"), frows, "none refused"),
    ]
    if up is not None:
        urows = [
            "<tr>%s%s%s%s%s%s</tr>"
            % (
                _cell("reader_id", u["reader_id"]),
                _cell("stored", u["stored"]),
                _cell("ledger_acked", u["ledger_acked"]),
                _cell("backlog", u["backlog"]),
                _cell("inflight_batch", u["inflight_batch"]),
                _cell("last_ack_at", u["last_ack_at"], ago(u["last_ack_at"], now)),
            )
            for u in up["readers"]
        ]
        parts += [
            "<h2>Upstream to the ledger</h2>",
            _table(
                "upstream", ("reader", "stored", "ledger acked", "backlog", "batch in flight", "last ack"), urows, "-"
            ),
            _bars([("reader %d" % u["reader_id"], u["backlog"]) for u in up["readers"]], "upstream backlog per reader"),
        ]
    if cards is not None:
        crows = [
            "<tr>%s%s%s%s%s%s%s</tr>"
            % (
                _cell("reader_id", c["reader_id"]),
                _cell("held", c["held"]),
                _cell("target", c["target"]),
                _cell("state", c["state"], cls="no" if c["state"] in _LATE else ""),
                _cell("lag", c["lag"]),
                _cell("capacity", c["capacity"]),
                _cell(
                    "too_big",
                    None if c["too_big"] is None else c["too_big"]["cards"],
                    None if c["too_big"] is None else "%d cards: not sent" % c["too_big"]["cards"],
                    "no" if c["too_big"] else "",
                ),
            )
            for c in cards["readers"]
        ]
        parts += [
            "<h2>Card updates</h2>",
            _table(
                "cards",
                ("reader", "held", "target", "state", "versions behind", "list capacity", "list too big"),
                crows,
                "-",
            ),
        ]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="refresh" content="%d">'
        '<link rel="icon" href="data:,">'
        "<title>liftcard gateway</title><style>%s</style></head><body>"
        "<h1>liftcard gateway</h1>"
        '<p class="meta">as of <span id="generated">%s</span>; reloads every %d s; '
        '<a href="status.json">status.json</a> · <a href="metrics">metrics</a></p>'
        '<div class="tiles">%s</div>%s</body></html>'
        % (refresh_s, _CSS, _e(stamp), refresh_s, tile_html, "".join(parts))
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Console:
    """The console's HTTP server thread. conf: config.ConsoleConf; cfg: the
    GatewayConfig (db_path, which sections exist)."""

    def __init__(self, conf, cfg, log=None):
        self.conf = conf
        self.cfg = cfg
        self.log = events(log or LOGGER)
        self.registry = metrics.registry_for(
            cfg.db_path, cfg.upstream is not None, cfg.cards is not None, lambda: set(self.cfg.readers)
        )
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict:
        conn = connect(self.cfg.db_path, readonly=True)
        try:
            return overview.for_config(conn, self.cfg)
        finally:
            conn.close()

    def start(self) -> "Console":
        cls = _Server6 if ":" in self.conf.host else _Server
        self.server = cls((self.conf.host, self.conf.port), self._handler())
        self._thread = threading.Thread(target=self.server.serve_forever, name="console", daemon=True)
        self._thread.start()
        self.log("console_started", url=self.url)
        return self

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        host = "[%s]" % self.conf.host if ":" in self.conf.host else self.conf.host
        return "http://%s:%d/" % (host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def _handler(self):
        console = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "liftcard-console"
            sys_version = ""

            def log_message(self, *a):  # http.server writes to stderr: the daemon's journal is JSON
                pass

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", CSP)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        return self._send(200, metrics.CONTENT_TYPE, metrics.render(console.registry))
                    if path == "/status.json":
                        body = json.dumps(console.snapshot(), indent=1).encode()
                        return self._send(200, "application/json", body)
                    if path in ("/", "/index.html"):
                        page = render_page(console.snapshot(), console.conf.refresh_s)
                        return self._send(200, "text/html; charset=utf-8", page.encode())
                    if path == "/favicon.ico":
                        return self._send(204, "text/plain", b"")
                    return self._send(404, "text/plain; charset=utf-8", b"not found\n")
                except (OSError, sqlite3.Error) as e:
                    console.log("error", where="console", error=type(e).__name__, message=str(e))
                    return self._send(503, "text/plain; charset=utf-8", b"the gateway database cannot be read\n")

            do_HEAD = do_GET

        return Handler
