"""The ledger on PostgreSQL (a private server, liftcard_testing.postgres) and
several ledger workers sharing one stream through an MQTT 5 shared
subscription on the real TLS bank broker: every ride once, the books
balanced, each delivery handled by one worker. Also the config of both."""

import random
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from liftcard_gateway.broker import find_tool
from liftcard_gateway.pki import gateway_identity
from liftcard_protocol import upstream as uf
from liftcard_protocol.epoch import LIFTCARD_EPOCH
from liftcard_protocol.keys import load_public_key, load_signing_key
from liftcard_protocol.topics import upstream_topics
from liftcard_tools import accountbook as book
from liftcard_tools import ledger as L
from liftcard_tools.ledgerdb import LedgerDB
from liftcard_tools.statement import statement
from liftcard_testing.bankbroker import BankBroker, render_bank_acl
from liftcard_testing.configs import write_ledger_config
from liftcard_testing.devpki import make_dev_pki
from liftcard_testing.logcapture import EventLog
from liftcard_testing.postgres import PostgresInstance, postgres_missing
from liftcard_testing.wait import wait_for

REPO = Path(__file__).resolve().parents[1]
NOV = 90_000_000  # 2026-11-07 in liftcard-epoch seconds
WORKER2 = "ledger-2"


class FakeBank:
    host, port = "127.0.0.1", 1


@pytest.fixture(scope="module")
def pg():
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    with PostgresInstance() as p:
        yield p


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw1", "gw2"], others=(WORKER2,))


def ride(seq, household=None, fee=None, result=None):
    h = household if household is not None else 100 + seq % 7
    res = result if result is not None else (1 if seq % 11 == 0 else 0)
    f = fee if fee is not None else (0 if res or seq % 5 == 0 else 10 + seq % 40)
    return uf.UpRide(seq, NOV + seq * 60, seq, 0xAB00 + h, h if res != 1 else 0, 2 + seq % 4, f, res, 0, 1)


def stream(pki):
    """Batches of two gateways, three readers, as a gateway sends them and
    then some: every batch twice, overlapping resends under new ids, all
    shuffled. Returns (topic, payload) list and the distinct rides."""
    out, want = [], set()
    for gid, readers in (("gw1", (7, 8)), ("gw2", (7,))):
        k = load_signing_key(pki.gateways[gid]["signing_key"])
        bid = 0
        for reader in readers:
            for lo in range(1, 61, 10):
                bid += 1
                data = uf.build_batch(k, gid, bid, reader, 12, [ride(s) for s in range(lo, lo + 10)])
                out += [(gid, data), (gid, data)]
            bid += 1  # an overlapping resend of rides 5..24 under another id
            out.append((gid, uf.build_batch(k, gid, bid, reader, 12, [ride(s) for s in range(5, 25)])))
            want |= {(gid, reader, s) for s in range(1, 61)}
    random.Random(7).shuffle(out)
    return [(upstream_topics(g)["batches"], d) for g, d in out], want


def test_the_same_batches_give_the_same_book_on_both_databases(pg, pki, tmp_path):
    lite, post = LedgerDB(tmp_path / "ledger.db"), LedgerDB(pg.create_database())
    try:
        assert post.sql.postgres and not lite.sql.postgres
        msgs, want = stream(pki)
        keys = {g: load_public_key(pki.gateways[g]["public_key"]) for g in ("gw1", "gw2")}
        for topic, data in msgs:
            b = uf.parse_batch(keys[topic.split("/")[2]], data)
            assert lite.store(b) == post.store(b)
        for db in (lite, post):
            book.import_register(db.sql, [(12, h, h % 4) for h in range(100, 107)])
            book.enter_cost(db.sql, 12, 12345, "lift service", __import__("datetime").date(2026, 11, 9), 480)
            assert book.verify_books(db.sql) == []
            assert db.sql.one("SELECT count(*) FROM rides") == (len(want),)
        assert lite.totals() == post.totals()
        assert statement(lite, 12, "2026-11") == statement(post, 12, "2026-11")
        assert statement(lite, 12, "2026-11", household=103) == statement(post, 12, "2026-11", household=103)
        for gid, reader in (("gw1", 7), ("gw1", 8), ("gw2", 7)):
            assert lite.seqs_in_storage_order(gid, reader) == post.seqs_in_storage_order(gid, reader)
    finally:
        lite.close()
        post.close()


def test_workers_starting_together_migrate_once(pg):
    url = pg.create_database()
    opened, errors = [], []

    def open_one():
        try:
            opened.append(LedgerDB(url))
        except Exception as e:  # pragma: no cover - the failure is the assertion below
            errors.append(e)

    ts = [threading.Thread(target=open_one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    try:
        assert errors == [] and len(opened) == 4
        assert opened[0].sql.one("SELECT version FROM schema_version") == (len(L.MIGRATIONS),)
        assert opened[0].sql.one("SELECT count(*) FROM schema_version") == (1,)
    finally:
        for d in opened:
            d.close()


def worker_config(tmp_path, pki, bank, url, cert=None, key=None) -> Path:
    p = write_ledger_config(tmp_path, pki, bank, ["gw1", "gw2"])
    text = p.read_text().replace("[ledger]\n", '[ledger]\ndatabase = "%s"\n' % url, 1)
    text = text.replace("[broker]\n", '[broker]\nshared_group = "ledger"\n', 1)
    if cert is not None:
        text = text.replace(str(pki.ledger_cert), str(cert)).replace(str(pki.ledger_key), str(key))
    p.write_text(text)
    return p


def gateway_client(pki, bank, gid, acks):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-%s" % uuid.uuid4().hex[:8], protocol=mqtt.MQTTv311)
    g = pki.gateways[gid]
    c.tls_set(
        ca_certs=str(pki.ca_cert), certfile=str(g["cert"]), keyfile=str(g["key"]), tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = lambda _c, _u, m: acks.append((m.topic, bytes(m.payload)))
    c.connect(bank.host, bank.port)
    c.loop_start()
    c.subscribe(upstream_topics(gid)["acks"], qos=1)
    assert subscribed.wait(10)
    return c


def test_two_workers_share_one_stream_every_ride_once(pg, pki, tmp_path):
    try:
        find_tool("mosquitto")
    except Exception:
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    url = pg.create_database()
    with BankBroker(pki, ["gw1", "gw2"], ledger_workers=(WORKER2,)) as bank:
        w2 = pki.others[WORKER2]
        cfgs = [
            L.load_config(worker_config(tmp_path / "w1", pki, bank, url)),
            L.load_config(worker_config(tmp_path / "w2", pki, bank, url, w2["cert"], w2["key"])),
        ]
        assert all(c.shared_group == "ledger" and c.database == url for c in cfgs)
        logs = [EventLog(), EventLog()]
        workers = [L.Ledger(c, log=lg) for c, lg in zip(cfgs, logs)]
        gws = []
        try:
            for w in workers:
                w.mqtt.start()
            for w in workers:
                assert w.mqtt.wait_ready(20)
            acks = []
            gws = [gateway_client(pki, bank, g, acks) for g in ("gw1", "gw2")]
            msgs, want = stream(pki)
            for topic, data in msgs:
                gw = gws[0] if "/gw1/" in topic else gws[1]
                assert gw.publish(topic, data, qos=1).wait_for_publish(10) is None
            wait_for(lambda: len(acks) >= len(msgs), 60, "an ack for every delivery")
            time.sleep(0.5)  # nothing more may come: one delivery, one worker, one ack
            assert len(acks) == len(msgs)
        finally:
            for c in gws:
                c.disconnect()
                c.loop_stop()
            for w in workers:
                w.mqtt.stop()
                w.db.close()
        stored = [lg.events("stored") for lg in logs]
        # the shared subscription hands each delivery to ONE worker, and both work
        assert sum(len(s) for s in stored) == len(msgs)
        assert all(s for s in stored)
        assert sum(r["inserted"] for s in stored for r in s) == len(want)
        assert not any(lg.events("refused") or lg.events("error") for lg in logs)
        # acks are idempotent: a batch's ack is the same bytes every time, and names the batch
        lpub = load_public_key(pki.ledger_public_key)
        for topic, payload in acks:
            a = uf.parse_ack(lpub, payload, expect_gateway=topic.split("/")[2])
            assert a.count == a.last_seq - a.first_seq + 1
        assert len({p for _, p in acks}) == len({d for _, d in msgs})
    db = LedgerDB(url)
    try:
        rows = db.sql.all("SELECT gateway_id, reader_id, seq FROM rides")
        assert len(rows) == len(set(rows)) and set(rows) == want
        assert book.verify_books(db.sql) == []
        charged = [ride(s) for s in range(1, 61)]
        per_reader = sum(r.fee for r in charged if r.result == 0)
        assert db.sql.one("SELECT -sum(amount) FROM postings WHERE account='fund:12'") == (3 * per_reader,)
    finally:
        db.close()


def test_the_bank_acl_grants_ledger_workers_the_shared_subscription():
    acl = render_bank_acl(["gw1"], ledger_workers=["ledger-2"])
    for user in ("ledger", "ledger-2"):
        block = acl.split("user %s\n" % user)[1].split("\n\n")[0].splitlines()
        assert block == [
            "topic read liftcard/gw/+/batches",
            "topic read $share/+/liftcard/gw/+/batches",
            "topic write liftcard/gw/+/acks",
        ]
    assert "$share" not in acl.split("user %s\n" % gateway_identity("gw1"))[1].split("\n\n")[0]


# -- configuration ---------------------------------------------------------------------------


def cfg_with(tmp_path, pki, ledger_lines="", broker_lines=""):
    p = write_ledger_config(tmp_path, pki, FakeBank, ["gw1"])
    text = p.read_text().replace("[ledger]\n", "[ledger]\n" + ledger_lines, 1)
    p.write_text(text.replace("[broker]\n", "[broker]\n" + broker_lines, 1))
    return p


def run(*a):
    return subprocess.run(
        [sys.executable, "-m", "liftcard_tools.ledger", *a], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.mark.parametrize(
    "ledger_lines,broker_lines,msg",
    [
        ('database = "mysql://x/y"\n', "", "ledger.database: must be a postgresql:// URL"),
        (
            'database = "postgresql://ledger:hunter2@db/ledger"\n',
            "",
            "ledger.database: must not hold a password: put it in database_password_file",
        ),
        ('database_password_file = "pw"\n', "", "ledger.database_password_file: needs ledger.database"),
        ("utc_offset_min = 900\n", "", "ledger.utc_offset_min"),
        ("", 'shared_group = "a/b"\n', "broker.shared_group: must be 1 .. 64"),
    ],
)
def test_bad_database_and_sharing_settings_are_one_line(tmp_path, pki, ledger_lines, broker_lines, msg):
    r = run("totals", "--config", str(cfg_with(tmp_path, pki, ledger_lines, broker_lines)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr
    assert "hunter2" not in r.stderr


def test_the_database_password_comes_from_a_private_file(tmp_path, pki):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    pw.chmod(0o644)
    lines = 'database = "postgresql://ledger@/ledger?host=%s&port=1"\ndatabase_password_file = "pw"\n' % tmp_path
    r = run("totals", "--config", str(cfg_with(tmp_path, pki, lines)))
    assert r.returncode == 2 and "chmod 600" in r.stderr and r.stderr.count("\n") == 1
    pw.chmod(0o600)
    cfg = L.load_config(cfg_with(tmp_path, pki, lines))
    assert cfg.database_password.value == "s3cret-pw" and "s3cret" not in repr(cfg)
    # nobody listens there: one line, exit 1, no password, no traceback
    r = run("totals", "--config", str(cfg_with(tmp_path, pki, lines)))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot connect to PostgreSQL" in r.stderr
    assert "s3cret" not in r.stderr and "Traceback" not in r.stderr


def test_the_ledger_command_runs_on_postgresql(pg, pki, tmp_path):
    url = pg.create_database()
    p = cfg_with(tmp_path, pki, 'database = "%s"\n' % url)
    reg = tmp_path / "reg.csv"
    reg.write_text("building,household,floor\n12,1,1\n12,2,3\n")
    assert run("households", "import", str(reg), "--config", str(p)).returncode == 0
    r = run(
        "cost", "--config", str(p), "--building", "12", "--amount-fen", "401", "--memo", "rope", "--date", "2026-11-02"
    )
    assert r.returncode == 0, r.stderr
    assert [ln.split()[-1] for ln in r.stdout.splitlines()[3:]] == ["100", "301"]
    r = run("statement", "--config", str(p), "--building", "12", "--month", "2026-11")
    assert r.returncode == 0 and "fund: opening 0.00, in 0.00, out 4.01, closing -4.01 yuan" in r.stdout
    assert run("verify", "--config", str(p)).stdout.strip() == "the books balance"
    assert LIFTCARD_EPOCH  # the statement month above is in liftcard time


def test_a_worker_survives_a_database_restart(pg, pki, tmp_path):
    url = pg.create_database()
    db = LedgerDB(url)
    k = load_signing_key(pki.gateways["gw1"]["signing_key"])
    pub = load_public_key(pki.gateways["gw1"]["public_key"])
    try:
        assert db.store(uf.parse_batch(pub, uf.build_batch(k, "gw1", 1, 7, 12, [ride(1), ride(2)]))) == 2
        pg.stop()
        pg.start()
        # the broken connection is replaced and the batch goes in whole
        assert db.store(uf.parse_batch(pub, uf.build_batch(k, "gw1", 2, 7, 12, [ride(s) for s in range(2, 9)]))) == 6
        assert db.sql.one("SELECT count(*) FROM rides") == (8,)
        assert book.verify_books(db.sql) == []
    finally:
        db.close()
