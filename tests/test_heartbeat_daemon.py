"""The gateway daemon on a real Mosquitto with simulated readers whose
heartbeats carry their whitelist capacity (docs/uplink.md, STATUS): a full
list larger than what the reader can hold is not sent (its chunks would fail
on the reader's flash); the refusal is one `whitelist_too_big` event with the
cards and the capacity, shown by `status` and `status --json`; a reader that
can hold it, or that reported no capacity (older firmware), gets it as before."""

import json
import queue
import secrets
import threading
import uuid

import pytest

from liftcard_gateway import cli
from liftcard_gateway.broker import find_tool
from liftcard_gateway.config import load_config
from liftcard_gateway.daemon import Gateway
from liftcard_protocol import link
from liftcard_testing.cards import assemble, card, snapshot, write_cards_config
from liftcard_testing.logcapture import EventLog
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.simreader import SimReader
from liftcard_testing.wait import wait_for

READERS = {7: 12, 8: 12, 9: 12}
CARDS = [card(0x8000000000000000 + i * 7919, hh=i % 40) for i in range(300)]  # 4,848 bytes: 2 chunks

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


class ListReader(SimReader):
    """A SimReader that keeps the WHITELIST chunks it is sent, and says in its
    heartbeat how many cards it can hold (None: a 36-byte heartbeat, as older
    firmware sends)."""

    def __init__(self, *a, **kw):
        self.chunks = queue.Queue()
        super().__init__(*a, **kw)

    def _on_message(self, client, userdata, msg):
        m = link.parse(self.key, msg.payload, self.rid, self.bid, link.DOWN, self.last_down)
        if m.kind in (link.WHITELIST, link.DELTA):
            self.last_down = m.counter
            self.chunks.put(m)
        else:
            super()._on_message(client, userdata, msg)

    def heartbeat(self, capacity, held=0):
        dev = {} if capacity is None else dict(rssi=-55, fw_version=(0, 1, 0), wl_capacity=capacity)
        st = link.ReaderStatus(60, 100000, 0, held, boot=self.boot, acked_seq=0, oldest_seq=1, **dev)
        self.publish(link.build_status(self.key, self.rid, self.bid, self.counter(), st), topic="status")

    def whitelist(self, timeout=10):
        first = self.chunks.get(timeout=timeout)
        msgs, got = [first], len(first.chunk.data)
        while got < first.chunk.total:
            m = self.chunks.get(timeout=timeout)
            msgs.append(m)
            got += len(m.chunk.data)
        return msgs

    def nothing(self, wait):
        with pytest.raises(queue.Empty):
            self.chunks.get(timeout=wait)


@pytest.fixture(scope="module")
def broker():
    with MosquittoInstance(readers=READERS) as b:
        yield b


def status(capsys, cfg, *more):
    assert cli.main(["status", "--config", str(cfg), *more]) == 0
    return capsys.readouterr().out


def test_a_list_that_cannot_fit_is_not_sent_and_the_refusal_is_shown(tmp_path, broker, capsys):
    keys = {rid: secrets.token_bytes(32) for rid in READERS}
    cfg_path, _ = write_cards_config(
        tmp_path,
        broker_host=broker.host,
        broker_port=broker.port,
        broker_password=broker.credentials["gateway"],
        keys=keys,
        readers=READERS,
        client_id="gw-%s" % uuid.uuid4().hex[:12],
        cards_extra="resend_after_s = 1",
    )
    (tmp_path / "snap.bin").write_bytes(snapshot(1, {12: CARDS}))
    assert cli.main(["cards", "import", str(tmp_path / "snap.bin"), "--config", str(cfg_path)]) == 0
    capsys.readouterr()
    cfg = load_config(cfg_path)
    log = EventLog()
    g = Gateway(cfg, log=log)
    t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    made = []
    try:
        assert g.wait_ready(10)
        small, exact, old = (ListReader(broker, rid, keys[rid]) for rid in (7, 8, 9))
        made += [small, exact, old]

        # Reader 7 holds at most 299 cards: nothing is sent, one event says why.
        small.heartbeat(299)
        ev = log.wait(lambda x: x["event"] == "whitelist_too_big")
        assert (ev["reader_id"], ev["cards"], ev["capacity"], ev["to_version"], ev["held_version"]) == (
            7,
            300,
            299,
            1,
            0,
        )
        assert "300 cards" in ev["reason"] and "at most 299" in ev["reason"]
        small.nothing(1.5)
        # Its next heartbeats (past resend_after_s) send nothing and log nothing more.
        small.heartbeat(299)
        small.heartbeat(299)
        wait_for(
            lambda: len([x for x in log.records if x["event"] == "status" and x["reader_id"] == 7]) == 3,
            10,
            "reader 7's three heartbeats handled",
        )
        small.nothing(1.5)
        assert len([x for x in log.records if x["event"] == "whitelist_too_big"]) == 1
        assert not [x for x in log.records if x["event"] == "whitelist_sent" and x["reader_id"] == 7]

        # Reader 8 holds exactly 300, reader 9 did not say (36-byte heartbeat): both get the list.
        exact.heartbeat(300)
        assert assemble(exact.whitelist(), keys[8], 8, 12).cards == sorted(CARDS)
        old.heartbeat(None)
        assert assemble(old.whitelist(), keys[9], 9, 12).cards == sorted(CARDS)

        snap = json.loads(status(capsys, cfg_path, "--json"))
        byr = {c["reader_id"]: c for c in snap["cards"]["readers"]}
        assert byr[7]["state"] == "too_big" and byr[7]["capacity"] == 299
        assert {k: byr[7]["too_big"][k] for k in ("cards", "capacity", "to_version")} == {
            "cards": 300,
            "capacity": 299,
            "to_version": 1,
        }
        assert byr[8]["too_big"] is None and byr[8]["capacity"] == 300 and byr[9]["capacity"] is None
        readers = {r["reader_id"]: r for r in snap["readers"]}
        assert (readers[7]["rssi"], readers[7]["fw_version"], readers[7]["wl_capacity"]) == (-55, "0.1.0", 299)
        assert readers[9]["rssi"] is None and readers[9]["wl_capacity"] is None
        text = status(capsys, cfg_path)
        assert "too big 1" in text and "whitelists not sent (more cards than the reader can hold):" in text
        row = [ln.split() for ln in text.splitlines() if ln.startswith("7 ") and "ago" in ln][-1]
        assert row[:4] == ["7", "300", "299", "1"]
        assert cli.main(["cards", "status", "--config", str(cfg_path)]) == 0
        states = {ln.split()[0]: ln.split()[4] for ln in capsys.readouterr().out.splitlines() if ln[:2] in ("7 ", "8 ")}
        assert states == {"7": "too_big", "8": "behind"}  # 8 got the list; its next heartbeat will say so

        # The reader's capacity grows (say its flash was replaced): the list goes, the refusal is gone.
        small.heartbeat(5000)
        assert assemble(small.whitelist(), keys[7], 7, 12).cards == sorted(CARDS)
        small.heartbeat(5000, held=1)
        log.wait(lambda x: x["event"] == "whitelist_sent" and x["reader_id"] == 7)
        snap = json.loads(status(capsys, cfg_path, "--json"))
        byr = {c["reader_id"]: c for c in snap["cards"]["readers"]}
        assert byr[7]["too_big"] is None and byr[7]["state"] in ("behind", "current")
    finally:
        for r in made:
            r.close()
        g.stop()
        t.join(15)
    assert not t.is_alive()
