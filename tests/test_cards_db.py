"""The gateway's card database (real SQLite), per-reader compilation and the
delta/full decision, the `liftcard-gateway cards` CLI and the `liftcard-bank` tool
(docs/cards.md)."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from liftcard_protocol import cardupdate as cu
from liftcard_protocol import link
from liftcard_gateway.carddb import CardDB
from liftcard_gateway.cardservice import CardService
from liftcard_gateway.config import GatewayConfigError, load_config
from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Status
from liftcard_protocol.delta import apply_ops, parse_delta
from liftcard_protocol import keys
from liftcard_testing.cards import BANK, OTHER, READERS, assemble, card, incremental, snapshot, write_cards_config
from liftcard_testing.logcapture import EventLog
from liftcard_tools import card_vectors


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Capture:
    """A send(make) for CardService.on_status: seals with a growing counter and
    opens each message as the reader would (link.parse, direction DOWN)."""

    def __init__(self, keys):
        self.keys = keys
        self.counter = 0
        self.msgs = []

    def sender(self, rid, bid):
        def send(make):
            self.counter += 1
            raw = make(self.counter)
            self.msgs.append(link.parse(self.keys[rid], raw, rid, bid, link.DOWN, self.counter - 1))

        return send

    def take(self):
        out, self.msgs = self.msgs, []
        return out


def dump(db_path):
    con = sqlite3.connect(str(db_path))
    try:
        return list(con.iterdump())
    finally:
        con.close()


@pytest.fixture
def svc(tmp_path):
    made = []

    def make(cards_extra="", readers=READERS):
        path, keys = write_cards_config(tmp_path / f"c{len(made)}", cards_extra=cards_extra, readers=readers)
        cfg = load_config(path)
        log, clock = EventLog(), Clock()
        s = CardService(cfg, log, clock=clock)
        made.append(s)
        return s, cfg, keys, log, clock

    yield make
    for s in made:
        s.close()


def building(s, bid):
    return {c.card_id: c for c in s.db.cards(bid)}


# -- applying updates ------------------------------------------------------------------


def test_vector_sequence_against_the_database(tmp_path):
    vec = card_vectors.load()
    db = CardDB(tmp_path / "gateway.db", bytes.fromhex(vec["public_key"]), vec["compound_id"])
    log = EventLog()
    try:
        from liftcard_gateway.cardservice import apply_and_log

        for case in vec["sequence"]:
            before = dump(db.path)
            res = apply_and_log(db, bytes.fromhex(case["hex"]), log)
            assert (res.reason or "applied") == case["result"], case["why"]
            assert db.version() == res.version == case["version"]
            if not res.applied:
                assert dump(db.path) == before, case["why"]  # refused: nothing changed
            got = {str(b): [c.to_fields() for c in db.cards(int(b))] for b in case["cards"]}
            assert got == case["cards"], case["why"]
            assert sum(db.counts().values()) == sum(len(v) for v in case["cards"].values())
    finally:
        db.close()
    refused = log.events("card_update_refused")
    assert sorted({r["reason"] for r in refused}) == ["compound", "forged", "gap", "stale"]
    assert len(log.events("card_update_applied")) == 3


@pytest.mark.parametrize(
    "make_bad, reason",
    [
        (lambda: snapshot(3, {12: [card(1)]}), "stale"),
        (lambda: snapshot(9, {12: [card(1)]}, key=OTHER), "forged"),
        (lambda: incremental(9, 4, [(12, card(5))]), "gap"),
        (lambda: snapshot(9, {12: [card(1)]})[:-3], "forged"),
        (lambda: snapshot(9, {12: [card(1)]})[:-70], "malformed"),
        (lambda: b"LCCU" + bytes(200), "forged"),
        (lambda: b"{\"cards\": []}" + bytes(100), "malformed"),
        (lambda: snapshot(9, {12: [card(1)]}, compound=2), "compound"),
    ],
)
def test_refused_update_changes_nothing_and_is_logged(svc, make_bad, reason):
    s, cfg, keys, log, clock = svc()
    secret_card = 0x0BADC0FFEE000001
    assert s.apply_update(snapshot(3, {12: [card(secret_card), card(2)], 13: [card(3)]}))
    before = dump(cfg.db_path)
    res = s.apply_update(make_bad())
    assert not res and res.reason == reason and res.version == 3
    assert "\n" not in res.message
    assert dump(cfg.db_path) == before
    rec = log.events("card_update_refused")[-1]
    assert rec["reason"] == reason
    assert "%x" % secret_card not in json.dumps(log.records)


def test_duplicate_redelivery_is_flagged(svc):
    s, cfg, keys, log, clock = svc()
    u = snapshot(2, {12: [card(1)]})
    assert s.apply_update(u).applied
    again = s.apply_update(u)
    assert not again and again.reason == "stale" and again.duplicate
    other = s.apply_update(snapshot(2, {12: [card(9)]}))
    assert other.reason == "stale" and not other.duplicate


def test_apply_is_one_transaction(svc, monkeypatch):
    """A failure in the middle of applying (after the cards were written) rolls everything back."""
    s, cfg, keys, log, clock = svc()
    assert s.apply_update(snapshot(1, {12: [card(1), card(2)]}))
    before = dump(cfg.db_path)

    def boom(*a, **k):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(s.db, "_prune", boom)
    with pytest.raises(sqlite3.OperationalError):
        s.db.apply(incremental(2, 1, [(12, card(3))], [(12, 1)]))
    assert dump(cfg.db_path) == before
    assert s.db.version() == 1


# -- the delta / full decision -------------------------------------------------------------


def test_delta_or_full(svc):
    s, cfg, keys, log, clock = svc()
    b12 = [card(i, hh=i) for i in range(1, 11)]
    assert s.apply_update(snapshot(1, {12: b12, 13: [card(100), card(101), card(102)]}))
    assert s.apply_update(incremental(2, 1, upserts=[(12, card(3, hh=333, status=Status.LOST))]))
    assert s.apply_update(incremental(3, 2, upserts=[(13, card(103))], removes=[(12, 4)]))
    db = s.db
    assert db.plan(12, 0).how == "full"  # holds nothing
    p = db.plan(12, 1)
    assert p.how == "delta" and (p.from_version, p.to_version) == (1, 3)
    assert [(k, getattr(a, "card_id", a)) for k, a in p.ops] == [("upsert", 3), ("remove", 4)]
    assert [a.household for k, a in p.ops if k == "upsert"] == [333]
    p = db.plan(12, 2)
    assert p.how == "delta" and [k for k, _ in p.ops] == ["remove"]
    assert db.plan(12, 3) is None  # current
    assert db.plan(12, 4) is None  # ahead
    p = db.plan(13, 2)
    assert p.how == "delta" and [a.card_id for _, a in p.ops] == [103]
    p = db.plan(13, 1)  # v2 did not touch building 13
    assert p.how == "delta" and len(p.ops) == 1
    # a version this database never had: the full list
    assert s.apply_update(snapshot(10, {12: b12}))
    assert s.apply_update(incremental(12, 10, upserts=[(12, card(50))]))
    assert db.plan(12, 11).how == "full"
    assert db.plan(12, 10).how == "delta"
    # the snapshot 10 dropped building 13 entirely: its readers get removes
    p = db.plan(13, 3)
    assert p.how == "delta" and {k for k, _ in p.ops} == {"remove"} and len(p.ops) == 4


def test_snapshot_after_snapshot_gives_a_minimal_delta(svc):
    s, cfg, keys, log, clock = svc()
    base = [card(i) for i in range(1, 200)]
    assert s.apply_update(snapshot(5, {12: base}))
    new = [c for c in base if c.card_id != 17] + [card(500)]
    new = [card(c.card_id, hh=999) if c.card_id == 30 else c for c in new]
    res = s.apply_update(snapshot(6, {12: new}))
    assert res.changed == 3
    p = s.db.plan(12, 5)
    assert p.how == "delta"
    old = s.db.cards(12)  # now the new state; check the ops turn the old list into it
    assert apply_ops(base, p.ops) == old == sorted(new)


def test_too_many_changes_or_beyond_history_is_a_full_list(svc):
    s, cfg, keys, log, clock = svc(cards_extra="full_list_after_ops = 5\nhistory_versions = 2")
    assert s.apply_update(snapshot(1, {12: [card(i) for i in range(1, 50)]}))
    assert s.apply_update(incremental(2, 1, upserts=[(12, card(i, hh=2)) for i in range(1, 6)]))  # 5 changes
    assert s.db.plan(12, 1, s.max_ops).how == "delta"
    assert s.apply_update(incremental(3, 2, upserts=[(12, card(i, hh=3)) for i in range(1, 7)]))  # 6 changes
    assert s.db.plan(12, 2, s.max_ops).how == "full"
    assert s.db.plan(12, 2, 238).how == "delta"
    # history kept for 2 versions: 3 and 4 are covered, from 2 on
    assert s.apply_update(incremental(4, 3, upserts=[(12, card(60))]))
    assert s.db.history_floor() == 2
    assert s.db.plan(12, 2, 238).how == "delta"
    assert s.db.plan(12, 1, 238).how == "full"  # before the history
    n = sqlite3.connect(str(cfg.db_path)).execute("SELECT count(*) FROM card_history WHERE version <= 2").fetchone()[0]
    assert n == 0  # pruned


def test_more_than_238_changes_never_make_a_delta(svc):
    s, cfg, keys, log, clock = svc()
    assert s.apply_update(snapshot(1, {12: []}))
    assert s.apply_update(incremental(2, 1, upserts=[(12, card(i)) for i in range(1, 240)]))  # 239
    assert s.db.plan(12, 1, 10_000).how == "full"
    assert s.apply_update(incremental(3, 2, upserts=[(12, card(i, hh=5)) for i in range(1, 239)]))  # 238
    p = s.db.plan(12, 2)
    assert p.how == "delta" and len(p.ops) == 238


# -- compiled per reader ----------------------------------------------------------------------


def test_compiled_full_list_and_delta_verify_under_the_readers_key(svc):
    s, cfg, keys, log, clock = svc()
    b12 = [card(0xFFFFFFFFFFFFFFFF - i * 7919, hh=i) for i in range(600)]  # 9,648 bytes: 3 chunks
    b13 = [card(i) for i in range(1, 4)]
    assert s.apply_update(snapshot(4, {12: b12, 13: b13}))
    cap = Capture(keys)
    plan = s.on_status(7, 12, 0, cap.sender(7, 12))
    assert plan.how == "full"
    msgs = cap.take()
    assert len(msgs) == 3
    wl = assemble(msgs, keys[7], 7, 12)
    assert wl.version == 4 and wl.cards == sorted(b12)
    with pytest.raises(Exception):  # another reader's key does not verify it
        assemble(msgs, keys[8], 7, 12)
    sent = log.events("whitelist_sent")[-1]
    assert sent == {
        "event": "whitelist_sent",
        "reader_id": 7,
        "from_version": 0,
        "to_version": 4,
        "how": "full",
        "bytes": sum(40 + 12 + len(m.chunk.data) for m in msgs),
    }
    # reader 9 of building 13 gets exactly building 13's cards
    s.on_status(9, 13, 0, cap.sender(9, 13))
    assert assemble(cap.take(), keys[9], 9, 13).cards == sorted(b13)
    # an incremental update: reader 7 at version 4 gets a DELTA that applies
    assert s.apply_update(incremental(5, 4, upserts=[(12, card(42)), (13, card(43))], removes=[(12, b12[10].card_id)]))
    plan = s.on_status(7, 12, 4, cap.sender(7, 12))
    assert plan.how == "delta"
    (m,) = cap.take()
    assert m.kind == link.DELTA
    d = parse_delta(keys[7], m.blob, 7, 12, held_version=4)
    assert (d.base_version, d.new_version) == (4, 5) and len(d.ops) == 2
    assert apply_ops(wl.cards, d.ops) == s.db.cards(12)
    ev = log.events("whitelist_sent")[-1]
    assert ev["how"] == "delta" and ev["bytes"] == 40 + 24 + 2 * 17 + 16
    assert "%x" % b12[10].card_id not in json.dumps(log.records)


def test_no_card_database_version_sends_nothing(svc):
    s, cfg, keys, log, clock = svc()
    cap = Capture(keys)
    assert s.on_status(7, 12, 0, cap.sender(7, 12)) is None
    assert cap.take() == []


def test_resend_only_after_the_timeout(svc):
    s, cfg, keys, log, clock = svc(cards_extra="resend_after_s = 120")
    cap = Capture(keys)
    assert s.apply_update(snapshot(1, {12: [card(1)]}))
    assert s.apply_update(incremental(2, 1, [(12, card(2))]))
    assert s.on_status(7, 12, 1, cap.sender(7, 12)).how == "delta"
    assert len(cap.take()) == 1
    clock.t += 60
    assert s.on_status(7, 12, 1, cap.sender(7, 12)) is None  # still the old version, not yet
    assert cap.take() == []
    clock.t += 61
    assert s.on_status(7, 12, 1, cap.sender(7, 12)).how == "delta"  # 121 s: resent
    assert len(cap.take()) == 1
    assert s.on_status(7, 12, 2, cap.sender(7, 12)) is None  # applied
    # a newer version right after a delta: sent at once (the old delta is outdated)
    assert s.apply_update(incremental(3, 2, [(12, card(3))]))
    assert s.on_status(7, 12, 2, cap.sender(7, 12)).to_version == 3
    assert s.apply_update(incremental(4, 3, [(12, card(4))]))
    p = s.on_status(7, 12, 2, cap.sender(7, 12))
    assert (p.how, p.from_version, p.to_version) == ("delta", 2, 4)
    cap.take()
    # a full list in flight: even a newer version waits for the timeout
    assert s.on_status(8, 12, 0, cap.sender(8, 12)).how == "full"
    assert s.apply_update(incremental(5, 4, [(12, card(5))]))
    assert s.on_status(8, 12, 0, cap.sender(8, 12)) is None
    p = s.on_status(8, 12, 4, cap.sender(8, 12))  # the list landed: delta 4->5 at once
    assert (p.how, p.from_version, p.to_version) == ("delta", 4, 5)
    assert [(r["reader_id"], r["how"]) for r in log.events("whitelist_sent")] == [
        (7, "delta"),
        (7, "delta"),
        (7, "delta"),
        (7, "delta"),
        (8, "full"),
        (8, "delta"),
    ]


def test_reader_ahead_is_logged_once(svc):
    s, cfg, keys, log, clock = svc()
    assert s.apply_update(snapshot(3, {12: [card(1)]}))
    cap = Capture(keys)
    for _ in range(3):
        assert s.on_status(7, 12, 9, cap.sender(7, 12)) is None
    assert cap.take() == []
    assert [(r["held_version"], r["version"]) for r in log.events("whitelist_ahead")] == [(9, 3)]


# -- config ------------------------------------------------------------------------------------


def test_config_cards_section(tmp_path):
    p, _ = write_cards_config(tmp_path)
    c = load_config(p).cards
    assert (c.compound_id, c.full_list_after_ops, c.resend_after_s, c.history_versions) == (1, 238, 120, 64)
    assert c.bank_public_key == keys.public_key_bytes(BANK.public_key())
    (tmp_path / "bank.pub").write_text(keys.public_key_bytes(OTHER.public_key()).hex())
    assert load_config(p).cards.bank_public_key == keys.public_key_bytes(OTHER.public_key())
    text = p.read_text()
    p.write_text(text.replace("[cards]\n", "[cards]\ncolour = 3\n"))
    with pytest.raises(GatewayConfigError, match="cards.colour"):
        load_config(p)
    p.write_text(text)
    (tmp_path / "bank.pub").write_text("not a key")
    with pytest.raises(GatewayConfigError, match="cards.bank_public_key_file") as ei:
        load_config(p)
    assert "\n" not in str(ei.value)
    p.write_text(text.split("[cards]")[0])
    assert load_config(p).cards is None


# -- CLI: liftcard-gateway cards -----------------------------------------------------------------


def gw_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "liftcard_gateway", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def bank_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "liftcard_tools.bank", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def one_line_error(out, *words):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_cli_import_status_and_bad_input(tmp_path):
    cfg_path, keys = write_cards_config(tmp_path)
    cfg = load_config(cfg_path)
    # an incremental before any snapshot: a gap, and no database is created
    inc = tmp_path / "inc.bin"
    inc.write_bytes(incremental(2, 1, [(12, card(5))]))
    one_line_error(gw_cli("cards", "import", inc, "--config", cfg_path), "gap")
    assert not cfg.db_path.exists()
    snap = tmp_path / "snap.bin"
    snap.write_bytes(snapshot(1, {12: [card(1), card(2)], 13: [card(3)]}))
    out = gw_cli("cards", "import", snap, "--config", cfg_path)
    assert out.returncode == 0, out.stderr
    assert "version 1" in out.stdout
    before = dump(cfg.db_path)
    # forged
    forged = tmp_path / "forged.bin"
    forged.write_bytes(snapshot(5, {12: [card(9)]}, key=OTHER))
    one_line_error(gw_cli("cards", "import", forged, "--config", cfg_path), "forged")
    # stale (the same file again)
    one_line_error(gw_cli("cards", "import", snap, "--config", cfg_path), "stale")
    # missing file
    one_line_error(gw_cli("cards", "import", tmp_path / "nope.bin", "--config", cfg_path), "nope.bin")
    # garbage
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    one_line_error(gw_cli("cards", "import", junk, "--config", cfg_path), "malformed")
    assert dump(cfg.db_path) == before
    out = gw_cli("cards", "import", inc, "--config", cfg_path)  # 1 -> 2 now follows
    assert out.returncode == 0 and "version 2" in out.stdout
    out = gw_cli("cards", "status", "--config", cfg_path)
    assert out.returncode == 0, out.stderr
    assert "version 2" in out.stdout
    rows = {ln.split()[0]: ln.split() for ln in out.stdout.splitlines() if ln.split()}
    assert rows["12"][:2] == ["12", "3"] and rows["13"][:2] == ["13", "1"]
    assert rows["7"][:5] == ["7", "12", "-", "2", "unknown"]  # no heartbeat yet
    # no [cards] section: a config error
    p2 = tmp_path / "nocards.toml"
    p2.write_text(cfg_path.read_text().split("[cards]")[0])
    out = gw_cli("cards", "status", "--config", p2)
    one_line_error(out, "[cards]")
    assert out.returncode == 2


# -- the bank tool -------------------------------------------------------------------------------


def test_bank_keygen_and_update_round_trip(tmp_path):
    out = bank_cli("keygen", "--key", tmp_path / "bank.key")
    assert out.returncode == 0, out.stderr
    assert os.stat(tmp_path / "bank.key").st_mode & 0o777 == 0o600
    priv_text = (tmp_path / "bank.key").read_text()
    assert "PRIVATE KEY" in priv_text and priv_text not in out.stdout + out.stderr
    one_line_error(bank_cli("keygen", "--key", tmp_path / "bank.key"), "already exists")
    assert (tmp_path / "bank.key").read_text() == priv_text
    pub = keys.public_key_bytes(keys.parse_public_key((tmp_path / "bank.pub").read_bytes()))
    (tmp_path / "cards.json").write_text(
        json.dumps(
            {
                "cards": [
                    {
                        "building_id": 12,
                        "card_id": "8000000000000000",
                        "household": 101,
                        "floors": [0, 5],
                        "status": "active",
                        "class": "exempt",
                        "valid_until": "2027-12-31",
                    },
                    {
                        "building_id": 12,
                        "card_id": "0000000000000001",
                        "household": 102,
                        "floors": 3,
                        "status": "suspended",
                        "class": "resident",
                        "valid_until": None,
                    },
                ]
            }
        )
    )
    out = bank_cli(
        "update",
        "--key",
        tmp_path / "bank.key",
        "--compound",
        4,
        "--version",
        7,
        "--from",
        tmp_path / "cards.json",
        "--out",
        tmp_path / "u7.bin",
    )
    assert out.returncode == 0, out.stderr
    u = cu.parse_update(pub, (tmp_path / "u7.bin").read_bytes())
    assert (u.kind, u.compound_id, u.version, u.base_version) == (cu.SNAPSHOT, 4, 7, 0)
    recs = {o.card_id: o.record for o in u.ops}
    assert recs[1] == CardRecord(1, 102, 3, 1, 0, 0xFFFF)
    assert recs[1 << 63] == CardRecord(1 << 63, 101, 0b100001, 0, 1, 1460)  # 2027-12-31 is day 1460
    (tmp_path / "changes.csv").write_text(
        "building_id,card_id,op,household,floors,status,class,valid_until\n"
        "12,0000000000000001,remove,,,,,\n"
        "13,00000000000000aa,upsert,7,0;3,lost,visitor,2026-01-31\n"
    )
    out = bank_cli(
        "update",
        "--key",
        tmp_path / "bank.key",
        "--compound",
        4,
        "--version",
        8,
        "--base",
        7,
        "--from",
        tmp_path / "changes.csv",
        "--out",
        tmp_path / "u8.bin",
    )
    assert out.returncode == 0, out.stderr
    u = cu.parse_update(pub, (tmp_path / "u8.bin").read_bytes())
    assert u.kind == cu.INCREMENTAL and u.base_version == 7
    assert [(o.op, o.building_id, o.card_id) for o in u.ops] == [("remove", 12, 1), ("upsert", 13, 0xAA)]
    assert u.ops[1].record == CardRecord(0xAA, 7, 0b1001, 2, 3, 761)


@pytest.mark.parametrize(
    "entries, words",
    [
        (
            [{"building_id": 12, "card_id": "123", "household": 1, "floors": 1, "status": "active", "class": "staff"}],
            ["entry 1", "card_id"],
        ),
        ([{"building_id": 12, "card_id": "0000000000000001", "op": "remove"}], ["entry 1", "snapshot"]),
        (
            [
                {
                    "building_id": 12,
                    "card_id": "0000000000000001",
                    "household": 1,
                    "floors": [16],
                    "status": "active",
                    "class": "staff",
                }
            ],
            ["entry 1", "floors"],
        ),
        (
            [
                {
                    "building_id": 12,
                    "card_id": "0000000000000001",
                    "household": 1,
                    "floors": 1,
                    "status": "gone",
                    "class": "staff",
                }
            ],
            ["entry 1", "status"],
        ),
        (
            [
                {
                    "building_id": 12,
                    "card_id": "0000000000000001",
                    "household": 1,
                    "floors": 1,
                    "status": "active",
                    "class": "staff",
                }
            ]
            * 2,
            ["entry 2", "twice"],
        ),
        ("not json", ["not valid JSON"]),
    ],
)
def test_bank_update_bad_input(tmp_path, entries, words):
    assert bank_cli("keygen", "--key", tmp_path / "bank.key").returncode == 0
    (tmp_path / "cards.json").write_text(entries if isinstance(entries, str) else json.dumps(entries))
    out = bank_cli(
        "update",
        "--key",
        tmp_path / "bank.key",
        "--compound",
        1,
        "--version",
        1,
        "--from",
        tmp_path / "cards.json",
        "--out",
        tmp_path / "u.bin",
    )
    one_line_error(out, *words)
    assert not (tmp_path / "u.bin").exists()


def test_bank_key_must_be_0600(tmp_path):
    assert bank_cli("keygen", "--key", tmp_path / "bank.key").returncode == 0
    (tmp_path / "cards.json").write_text("[]")
    os.chmod(tmp_path / "bank.key", 0o644)
    out = bank_cli(
        "update",
        "--key",
        tmp_path / "bank.key",
        "--compound",
        1,
        "--version",
        1,
        "--from",
        tmp_path / "cards.json",
        "--out",
        tmp_path / "u.bin",
    )
    one_line_error(out, "0600")
    assert not (tmp_path / "u.bin").exists()
    one_line_error(
        bank_cli(
            "update",
            "--key",
            tmp_path / "missing.key",
            "--compound",
            1,
            "--version",
            1,
            "--from",
            tmp_path / "cards.json",
            "--out",
            tmp_path / "u.bin",
        ),
        "not found",
    )
