"""Faults on the upstream, with real processes: the gateway daemon (local
Mosquitto + [upstream]), the TLS bank broker and the reference ledger.
kill -9 of the gateway and of the ledger mid-drain, the bank broker stopped for
a while: the ledger still holds every ride exactly once, fees exact, in order.
Then a reader's live batch reaches the ledger through the daemon's wake."""

import contextlib
import os
import signal
import sqlite3
import time

import paho.mqtt.client as mqtt
import pytest

from liftcard_protocol import link
from liftcard_gateway.broker import find_tool, reader_topics
from liftcard_gateway.config import load_config
from liftcard_testing import configs, procs, rides
from liftcard_testing.bankbroker import BankBroker
from liftcard_testing.devpki import make_dev_pki
from liftcard_testing.mosquitto import MosquittoInstance
from liftcard_testing.programs import start_gateway, start_ledger
from liftcard_testing.wait import wait_for
from liftcard_tools.ledger import LedgerDB

READERS = {7: 12, 8: 12, 9: 13}
PER_READER = 1500

try:
    find_tool("mosquitto")
    find_tool("mosquitto_passwd")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)", allow_module_level=True)


def kill9(p):
    procs.kill(p)


def test_kill9_gateway_and_ledger_and_broker_outage_exactly_once(tmp_path):
    pki = make_dev_pki(tmp_path / "pki", ["gw1"])
    keys = {r: os.urandom(32) for r in READERS}
    with (
        MosquittoInstance(readers=READERS) as local,
        BankBroker(pki, ["gw1"]) as bank,
        contextlib.ExitStack() as started,
    ):
        # small batches, one in flight: a slow drain that the faults hit in the middle
        gcfg_path = configs.write_gateway_config(
            tmp_path / "gw",
            local,
            keys,
            READERS,
            gateway_id="gw1",
            extra=configs.upstream_section(
                pki, bank, batch_rides=10, max_inflight=1, ack_timeout_s=2, max_backoff_s=4, scan_interval_s=3600
            ),
        )
        cfg = load_config(gcfg_path)
        expected = rides.prefill(cfg.db_path, READERS, PER_READER)
        total = PER_READER * len(READERS)
        lcfg = configs.write_ledger_config(tmp_path / "ledger", pki, bank)
        ldb = tmp_path / "ledger" / "ledger-data" / "ledger.db"

        def n():
            return sum(v[0] for v in rides.ledger_counts(ldb).values())

        # Each ledger and gateway process ends with the with block, pass or fail.
        def started_ledger():
            return started.enter_context(procs.running(start_ledger(lcfg, tmp_path / "ledger.log"), 20))

        def started_gateway():
            return started.enter_context(procs.running(start_gateway(gcfg_path, tmp_path / "gw.log"), 20))

        led = started_ledger()
        wait_for(lambda: b'"subscribed"' in (tmp_path / "ledger.log").read_bytes(), 30, "the ledger")
        gw = started_gateway()
        # 1. kill -9 the gateway mid-drain; the batch in flight is resent identically
        wait_for(lambda: n() >= 600, 60, "600 rides")
        kill9(gw)
        con = sqlite3.connect(str(cfg.db_path))
        open_batch = con.execute(
            "SELECT batch_id, reader_id, first_seq, last_seq, rides FROM upstream_batches WHERE acked_at IS NULL"
        ).fetchone()
        con.close()
        assert n() < total
        gw = started_gateway()
        # 2. kill -9 the ledger mid-drain, restart it a moment later
        wait_for(lambda: n() >= 1600, 60, "1600 rides")
        kill9(led)
        assert n() < total
        time.sleep(1.0)
        led = started_ledger()
        # 3. the bank broker goes away for a while (SIGTERM: it keeps its sessions)
        wait_for(lambda: n() >= 2800, 60, "2800 rides")
        bank.stop()
        stalled = n()
        time.sleep(2.5)
        assert n() == stalled < total
        bank.start()
        wait_for(lambda: n() == total, 120, "the whole drain")
        if open_batch is not None:
            ldbc = sqlite3.connect(str(ldb))
            row = ldbc.execute(
                "SELECT reader_id, first_seq, last_seq, rides FROM batches WHERE gateway_id='gw1' AND batch_id=?",
                (open_batch[0],),
            ).fetchone()
            ldbc.close()
            assert row == open_batch[1:]  # same id, same rides after the restart
        assert rides.ledger_counts(ldb) == {("gw1", r): v for r, v in expected.items()}
        db = LedgerDB(ldb)
        for rid in READERS:
            assert db.seqs_in_storage_order("gw1", rid) == list(range(1, PER_READER + 1))
        db.close()

        # 4. live: a reader's batch reaches the ledger at once (wake; the periodic scan is 1 h)
        wait_for(lambda: b"upstream_acked" in (tmp_path / "gw.log").read_bytes(), 10, "gw log")
        r = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-7-faults", protocol=mqtt.MQTTv311)
        r.username_pw_set("reader-7", local.credentials["reader-7"])
        r.connect(local.host, local.port, 30)
        r.loop_start()
        recs = [rides.ride(s, 33) for s in range(PER_READER + 1, PER_READER + 11)]
        msg = link.build_rides(keys[7], 7, 12, link.counter_of(1000, 1), recs)
        r.publish(reader_topics(12, 7)["up"], msg, qos=1).wait_for_publish(10)
        wait_for(
            lambda: rides.ledger_counts(ldb).get(("gw1", 7), (0, 0))[0] == PER_READER + 10,
            15,
            "the live batch in the ledger",
        )
        r.disconnect()
        r.loop_stop()
        # SIGTERM: a clean stop
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
        log = (tmp_path / "gw.log").read_text()
        assert '"event":"upstream_stopped"' in log and "Traceback" not in log
        assert "PRIVATE KEY" not in log and "PRIVATE KEY" not in (tmp_path / "ledger.log").read_text()
