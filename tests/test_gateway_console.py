"""The web console (console.py) served by a real daemon on a real Mosquitto
with simulated readers: the page in headless chromium (screenshot, no console
error, the figures equal to `status --json`), /status.json exactly the
`status --json` object, /metrics parsed; loopback only unless allowed."""

import contextlib
import json
import secrets
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from liftcard_gateway import cli
from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import GatewayConfigError, load_config
from liftcard_gateway.console import render_page
from liftcard_gateway.daemon import Gateway
from liftcard_protocol import link
from liftcard_protocol.epoch import epoch_from_unix
from liftcard_testing.browser import Browser, browser_missing
from liftcard_testing.configs import write_gateway_config
from liftcard_testing.daemonrig import daemon_broker
from liftcard_testing.logcapture import EventLog
from liftcard_testing.simreader import SimReader
from liftcard_testing.wait import wait_for

READERS = {7: 12, 8: 12, 9: 13}
# The readers' figures the page carries, each checked against status --json.
FIGURES = (
    "building_id",
    "online",
    "last_seen",
    "backlog",
    "free_heap",
    "rssi",
    "fw_version",
    "wl_capacity",
    "clock_synced",
    "clock_drift_s",
    "wl_version",
    "legacy",
    "stored",
    "acked_seq",
    "open_gaps",
)
CONSOLE = '\n[console]\nlisten = "127.0.0.1:0"\nrefresh_s = 30\n'

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def broker():
    with daemon_broker(READERS) as b:
        yield b


@pytest.fixture(scope="module")
def keys():
    return {rid: secrets.token_bytes(32) for rid in READERS}


@contextlib.contextmanager
def gateway(workdir, broker, keys, extra=CONSOLE):
    cfg = load_config(write_gateway_config(workdir, broker, keys, READERS, extra=extra))
    log = EventLog()
    g = Gateway(cfg, log=log)
    g.memlog = log
    t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    made = []
    try:
        assert g.wait_ready(10)
        wait_for(
            lambda: g.console is not None or g.memlog.find(lambda x: x.get("where") == "console") or not t.is_alive(),
            10,
            "the console",
        )
        yield g, cfg, made
    finally:
        for r in made:
            r.close()
        g.stop()
        t.join(15)
    assert not t.is_alive()


def get(url) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def status_json(capsys, cfg) -> dict:
    assert cli.main(["status", "--config", str(cfg.path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def settle(snap: dict) -> dict:
    """Without what moves by itself between two readings (the clock, the WAL's size)."""
    s = json.loads(json.dumps(snap))
    s.pop("generated_at")
    s["database"].pop("bytes")
    return s


def load_site(g, cfg, made, broker, keys):
    """Reader 7: rides 1..5 and a heartbeat with its signal, firmware version
    and list capacity; reader 8: rides 1..3 then 6..7 (a gap), a heartbeat of
    older firmware (28 bytes: those unknown) and a forged message; reader 9:
    never seen."""
    r7 = SimReader(broker, 7, keys[7])
    r8 = SimReader(broker, 8, keys[8])
    made += [r7, r8]
    r7.send(range(1, 6))
    assert r7.ack() == 5
    now = epoch_from_unix(int(time.time()))
    st = link.ReaderStatus(
        3600,
        61234,
        0,
        0,
        flags=link.ST_CLOCK_SYNCED,
        boot=1,
        time=now,
        acked_seq=5,
        oldest_seq=6,
        rssi=-61,
        fw_version=(0, 1, 0),
        wl_capacity=36279,
    )
    r7.publish(link.build_status(keys[7], 7, 12, r7.counter(), st), topic="status")
    old = link.ReaderStatus(60, 50000, 0, 0, boot=1)
    r8.publish(link.build_status(keys[8], 8, 12, r8.counter(), old), topic="status")
    r8.send([1, 2, 3])
    assert r8.ack() == 3
    r8.send([6, 7])
    assert r8.ack() == 3
    r8.publish(b"\x00" * 40)  # garbage on its own topic: refused, counted
    g.memlog.wait(lambda x: x["event"] == "refused")
    g.memlog.wait(lambda x: x["event"] == "status" and x["reader_id"] == 7)
    g.memlog.wait(lambda x: x["event"] == "status" and x["reader_id"] == 8)


def test_console_page_json_and_metrics_show_status(tmp_path, broker, keys, capsys):
    with gateway(tmp_path / "gw", broker, keys) as (g, cfg, made):
        assert g.console is not None, g.memlog.records
        base = g.console.url
        assert base.startswith("http://127.0.0.1:")
        load_site(g, cfg, made, broker, keys)
        want = status_json(capsys, cfg)

        code, ctype, body = get(base + "status.json")
        assert code == 200 and ctype == "application/json"
        assert settle(json.loads(body)) == settle(want)  # exactly the status --json object

        r = {x["reader_id"]: x for x in want["readers"]}
        assert (r[7]["stored"], r[7]["free_heap"], r[7]["clock_synced"]) == (5, 61234, True)
        assert (r[8]["stored"], r[8]["open_gaps"]) == (5, 1)
        assert (r[7]["rssi"], r[7]["fw_version"], r[7]["wl_capacity"]) == (-61, "0.1.0", 36279)
        assert (r[8]["rssi"], r[8]["fw_version"], r[8]["wl_capacity"]) == (None, None, None)  # older firmware
        assert r[9]["online"] is False and r[9]["last_seen"] is None
        assert [(x["reader_id"], x["reason"], x["count"]) for x in want["refusals"]] == [
            (8, want["refusals"][0]["reason"], 1)
        ]

        code, ctype, body = get(base + "metrics")
        assert code == 200 and ctype.startswith("text/plain")
        stored = {
            s.labels["reader"]: s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples
            if s.name == "liftcard_rides_stored"
        }
        assert stored == {"7": 5.0, "8": 5.0, "9": 0.0}
        rssi = {
            s.labels["reader"]: s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples
            if s.name == "liftcard_reader_rssi_dbm"
        }
        assert rssi == {"7": -61.0}

        code, _, _ = get(base + "nothing-here")
        assert code == 404
        req = urllib.request.Request(base + "status.json", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 501  # read-only: GET and HEAD only

        reason = browser_missing()
        if reason:
            pytest.skip(reason)
        with Browser() as b:
            b.open(base)
            b.screenshot(tmp_path / "console.png")
            assert (tmp_path / "console.png").stat().st_size > 1000
            assert b.console_errors() == []
            assert b.text("#readers-online") == "%d/%d" % (sum(x["online"] for x in want["readers"]), 3)
            assert b.text("#gaps-open") == str(len(want["gaps"]))
            assert b.text("#refusals-total") == str(sum(x["count"] for x in want["refusals"]))
            cells = b.script(
                "const out = {};"
                "document.querySelectorAll('#readers tbody tr').forEach(tr => {"
                "  const row = {}; tr.querySelectorAll('td').forEach(td => row[td.dataset.k] = td.dataset.v);"
                "  out[tr.dataset.reader] = row; });"
                "return out;"
            )
            shown = {int(k): {f: v[f] for f in FIGURES} for k, v in cells.items()}

            def s(x):
                return "" if x is None else (str(x).lower() if isinstance(x, bool) else str(x))

            assert shown == {x["reader_id"]: {f: s(x[f]) for f in FIGURES} for x in want["readers"]}
            seen = b.script(
                "return Array.from(document.querySelectorAll('#readers tbody tr[data-reader=\"7\"] td'))"
                ".filter(td => td.dataset.k === 'rssi' || td.dataset.k === 'fw_version').map(td => td.textContent);"
            )
            assert seen == ["-61 dBm", "0.1.0"]  # what the page shows, not only its data
            gaps = b.texts("#gaps tbody td")
            assert gaps[:3] == ["8", "4", "5"]
            assert (
                b.script("return document.querySelectorAll('script, link[rel=stylesheet], img[src^=http]').length") == 0
            )


def test_console_on_a_later_page_load_sees_new_rides(tmp_path, broker, keys):
    with gateway(tmp_path / "gw", broker, keys) as (g, cfg, made):
        r7 = SimReader(broker, 7, keys[7])
        made.append(r7)
        r7.send([1])
        assert r7.ack() == 1
        first = json.loads(get(g.console.url + "status.json")[2])
        r7.send([2, 3])
        assert r7.ack() == 3
        again = json.loads(get(g.console.url + "status.json")[2])
        stored = [{x["reader_id"]: x["stored"] for x in s["readers"]}[7] for s in (first, again)]
        assert stored == [1, 3]


def test_page_escapes_and_carries_no_outside_asset():
    snap = {
        "generated_at": time.time(),
        "database": {"bytes": 1, "pages": 1, "free_pages": 0, "page_size": 4096, "schema_version": 5},
        "readers": [],
        "gaps": [],
        "refusals": [{"reader_id": 0, "reason": "<script>x</script>", "count": 1, "first_at": 1.0, "last_at": 1.0}],
        "upstream": None,
        "cards": None,
    }
    page = render_page(snap, 10)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'http-equiv="refresh" content="10"' in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.parametrize(
    "section, ok",
    [
        ('listen = "127.0.0.1:8480"', True),
        ('listen = "[::1]:8480"', True),
        ('listen = "localhost:8480"', True),
        ('listen = "0.0.0.0:8480"', False),
        ('listen = "192.168.4.1:8480"', False),
        ('listen = "192.168.4.1:8480"\nallow_remote = true', True),
        ('listen = "127.0.0.1"', False),
        ('listen = "127.0.0.1:99999"', False),
    ],
)
def test_console_listen_is_loopback_unless_allowed(tmp_path, section, ok, broker, keys):
    path = write_gateway_config(tmp_path / "gw", broker, keys, READERS, extra="\n[console]\n%s\n" % section)
    if ok:
        assert load_config(path).console is not None
    else:
        with pytest.raises(GatewayConfigError) as e:
            load_config(path)
        assert str(e.value).startswith("console.listen") and "\n" not in str(e.value)


def test_page_with_upstream_and_cards_in_a_browser(tmp_path):
    """The upstream and card-update sections (a gateway with [upstream] and
    [cards]) from a database made by the store: the page as a file."""
    from liftcard_gateway import overview
    from liftcard_gateway.db import transaction
    from liftcard_gateway.store import Store
    from liftcard_protocol.ride import RideRecord

    st = Store(tmp_path / "gateway.db")
    for rid in (7, 8):
        st.ensure_reader(rid, 12)
    st.store_batch(7, 1, [RideRecord(s, 5000 + s, s, 0xABC, 7, 3, 40, 0, 0, 1) for s in range(1, 9)])
    st.store_batch(8, 1, [RideRecord(s, 5000 + s, s, 0xABC, 7, 3, 40, 0, 0, 1) for s in range(1, 4)])
    st.store_status(7, 2, link.ReaderStatus(60, 50000, 0, 6))
    st.store_status(
        8,
        2,
        link.ReaderStatus(60, 50000, 0, 5, acked_seq=3, oldest_seq=4, rssi=-70, fw_version=(0, 1, 0), wl_capacity=4),
    )
    with transaction(st.conn):
        st.conn.execute("INSERT INTO card_meta (key, value) VALUES ('version', 7)")
        # cardservice.py held reader 8's full list back: 9 cards, it holds 4.
        st.conn.execute(
            "INSERT INTO whitelist_refused (reader_id, building_id, held_version, to_version, cards, capacity, "
            "refused_at) VALUES (8, 12, 5, 7, 9, 4, ?)",
            (time.time() - 5,),
        )
        st.conn.execute(
            "INSERT INTO upstream_readers (reader_id, sent_rowid, acked_rowid, acked_rides, acked_batches, "
            "last_ack_at) VALUES (7, 5, 5, 5, 1, ?)",
            (time.time() - 30,),
        )
    snap = overview.snapshot(st.conn, upstream=True, cards=True)
    st.close()
    page = tmp_path / "console.html"
    page.write_text(render_page(snap, 60))
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    with Browser() as b:
        b.open(page.as_uri())
        b.screenshot(tmp_path / "console-upstream.png")
        assert b.console_errors() == []
        assert b.text("#upstream-backlog") == str(snap["upstream"]["backlog"]) == "6"
        assert b.text("#card-version") == "7"
        up = b.texts("#upstream tbody td")
        assert up[:4] == ["7", "8", "5", "3"] and up[6:10] == ["8", "3", "0", "3"]
        cards = b.texts("#cards tbody td")
        assert cards[:7] == ["7", "6", "7", "behind", "1", "-", "-"]
        assert cards[7:14] == ["8", "5", "7", "too_big", "2", "4", "9 cards: not sent"]
        assert b.count("#chart rect") == 2


def test_a_taken_port_is_logged_and_the_daemon_runs_on(tmp_path, broker, keys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        extra = '\n[console]\nlisten = "127.0.0.1:%d"\n' % port
        with gateway(tmp_path / "gw", broker, keys, extra=extra) as (g, cfg, made):
            ev = g.memlog.wait(lambda x: x["event"] == "error" and x.get("where") == "console")
            assert ev["error"] in ("OSError", "PermissionError") or "Address" in ev["message"]
            assert g.console is None
            r7 = SimReader(broker, 7, keys[7])
            made.append(r7)
            r7.send([1, 2])
            assert r7.ack() == 2  # rides still stored and acknowledged
