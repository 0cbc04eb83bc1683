"""End to end over a REAL private Mosquitto: the gateway daemon brings a simulated
reader's whitelist up to date from the card database (docs/cards.md).

The reader (CPython, its own broker user) reports its whitelist version in
STATUS (link.build_status) and reads its down topic; it assembles WHITELIST
chunks and applies DELTAs with the formats' parsers, under its own key."""

import queue
import secrets
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from liftcard_protocol import link
from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import load_config
from liftcard_gateway.daemon import Gateway
from liftcard_protocol.delta import apply_ops, parse_delta
from liftcard_protocol.topics import reader_topics
from liftcard_testing.cards import assemble, card, incremental, snapshot, write_cards_config
from liftcard_testing.logcapture import EventLog
from liftcard_testing.mosquitto import MosquittoInstance

READERS = {7: 12, 8: 12}

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def broker():
    with MosquittoInstance(readers=READERS) as b:
        yield b


class Reader:
    """A reader on the real broker: STATUS up, every down message verified and queued."""

    def __init__(self, broker, rid, key):
        self.rid, self.bid, self.key = rid, READERS[rid], key
        self.topics = reader_topics(self.bid, rid)
        self.msgno = 0
        self.last_down = 0
        self.down = queue.Queue()
        self.errors = []
        self._sub = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{rid}-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311
        )
        c.username_pw_set(f"reader-{rid}", broker.credentials[f"reader-{rid}"])
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._sub.set()
        c.on_connect = lambda cl, *a: cl.subscribe(self.topics["down"], qos=1)
        c.connect(broker.host, broker.port, 30)
        c.loop_start()
        assert self._sub.wait(10)
        self.client = c

    def _on_message(self, client, userdata, msg):
        try:
            m = link.parse(self.key, msg.payload, self.rid, self.bid, link.DOWN, self.last_down)
        except Exception as e:  # the test fails on it below
            self.errors.append(repr(e))
            return
        self.last_down = m.counter
        if m.kind in (link.DELTA, link.WHITELIST):
            self.down.put(m)

    def status(self, wl_version):
        self.msgno += 1
        st = link.ReaderStatus(
            uptime=10 + self.msgno,
            free_heap=90000,
            backlog=0,
            wl_version=wl_version,
            flags=link.ST_CLOCK_SYNCED,
            boot=1,
        )
        msg = link.build_status(self.key, self.rid, self.bid, link.counter_of(1, self.msgno), st)
        self.client.publish(self.topics["status"], msg, qos=1).wait_for_publish(10)

    def get(self, timeout=10):
        return self.down.get(timeout=timeout)

    def nothing(self, wait):
        with pytest.raises(queue.Empty):
            self.down.get(timeout=wait)

    def whitelist(self, timeout=10):
        first = self.get(timeout)
        assert first.kind == link.WHITELIST
        msgs = [first]
        got = len(first.chunk.data)
        while got < first.chunk.total:
            m = self.get(timeout)
            msgs.append(m)
            got += len(m.chunk.data)
        return msgs

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_reader_gets_full_list_then_delta_without_resend_storm(tmp_path, broker):
    keys = {rid: secrets.token_bytes(32) for rid in READERS}
    cfg_path, _ = write_cards_config(
        tmp_path,
        broker_host=broker.host,
        broker_port=broker.port,
        broker_password=broker.credentials["gateway"],
        keys=keys,
        readers=READERS,
        client_id=f"gw-{uuid.uuid4().hex[:12]}",
        cards_extra="resend_after_s = 3",
    )
    cfg = load_config(cfg_path)
    b12 = [card(0x8000000000000000 + i * 104729, hh=i % 50) for i in range(700)]  # 11,248 bytes: 3 chunks
    (tmp_path / "snap.bin").write_bytes(snapshot(1, {12: b12, 13: [card(5)]}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "liftcard_gateway",
            "cards",
            "import",
            str(tmp_path / "snap.bin"),
            "--config",
            str(cfg_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr

    log = EventLog()
    g = Gateway(cfg, log=log)
    t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    r = None
    try:
        assert g.wait_ready(10)
        r = Reader(broker, 7, keys[7])
        # 1. a reader with no list: the full list in WHITELIST chunks, in offset order
        r.status(0)
        wl = assemble(r.whitelist(), keys[7], 7, 12)
        assert wl.version == 1 and wl.cards == sorted(b12)
        end = time.monotonic() + 10  # the log line follows the publishes on the gateway's thread
        while not any(x["event"] == "whitelist_sent" for x in log.records) and time.monotonic() < end:
            time.sleep(0.05)
        sent = [x for x in log.records if x["event"] == "whitelist_sent"]
        assert [(x["reader_id"], x["from_version"], x["to_version"], x["how"]) for x in sent] == [(7, 0, 1, "full")]
        # 2. it now holds version 1: nothing more
        r.status(1)
        r.nothing(1.0)
        # 3. the bank's incremental update imported by the CLI while the daemon runs
        (tmp_path / "inc.bin").write_bytes(
            incremental(2, 1, upserts=[(12, card(42, hh=7))], removes=[(12, b12[3].card_id)])
        )
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "liftcard_gateway",
                "cards",
                "import",
                str(tmp_path / "inc.bin"),
                "--config",
                str(cfg_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        t0 = time.monotonic()
        r.status(1)
        m = r.get()
        assert m.kind == link.DELTA
        d = parse_delta(keys[7], m.blob, 7, 12, held_version=1)
        assert (d.base_version, d.new_version, len(d.ops)) == (1, 2, 2)
        after = apply_ops(wl.cards, d.ops)
        assert 42 in {c.card_id for c in after} and b12[3].card_id not in {c.card_id for c in after}
        # 4. the next heartbeat still says 1 (say the delta is not applied yet): no resend before the timeout
        r.status(1)
        r.nothing(max(0.5, 2.5 - (time.monotonic() - t0)))
        # 5. after the timeout (3 s here), a heartbeat still at 1 gets it again
        time.sleep(max(0.0, 3.2 - (time.monotonic() - t0)))
        r.status(1)
        again = r.get()
        assert again.kind == link.DELTA and again.blob == m.blob
        # 6. applied: silence
        r.status(2)
        r.nothing(1.0)
        # 7. an update from the bank through the callable the upstream module uses
        res = g.cards.apply_update(incremental(3, 2, upserts=[(12, card(43))]))
        assert res.applied and res.version == 3
        r.status(2)
        d3 = parse_delta(keys[7], r.get().blob, 7, 12, held_version=2)
        assert [a.card_id for _, a in d3.ops] == [43]
        bad = g.cards.apply_update(incremental(3, 2, upserts=[(12, card(44))]))
        assert not bad and bad.reason == "stale"
        assert r.errors == []
        events = [x["event"] for x in log.records]
        assert "card_update_applied" in events and "card_update_refused" in events
        want = [(0, 1, "full"), (1, 2, "delta"), (1, 2, "delta"), (2, 3, "delta")]
        end = time.monotonic() + 10  # the log line follows the publish on the gateway's thread
        while True:
            hows = [
                (x["from_version"], x["to_version"], x["how"]) for x in log.records if x["event"] == "whitelist_sent"
            ]
            if hows == want or time.monotonic() > end:
                break
            time.sleep(0.05)
        assert hows == want
    finally:
        if r is not None:
            r.close()
        g.stop()
        t.join(10)
    assert not t.is_alive()
    # the status command shows the reader at the database's version
    out = subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", "cards", "status", "--config", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    row7 = [ln.split() for ln in out.stdout.splitlines() if ln.split()[:2] == ["7", "12"]][0]
    assert row7[2:5] == ["2", "3", "behind"]  # its last heartbeat said 2; the delta to 3 was sent
    assert "delta" in row7
