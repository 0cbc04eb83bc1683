"""`liftcard-gateway readers add | remove | rotate-key | list` (docs/operations.md,
step 5): the reader registry, broker logins merged without anyone else's plain
password, the ACL, enrolment files in and out, and every refusal one line
with nothing changed and no secret shown."""

from __future__ import annotations

import io
import json
import os

import pytest

from liftcard_gateway.__main__ import main
from liftcard_gateway.broker import password_matches, read_passwd
from liftcard_gateway.config import load_config
from liftcard_protocol.enrolment import dumps_enrolment, enrolment_doc, loads_enrolment, parse_enrolment

TECH_KEY = bytes(range(100, 132))
TECH_PASSWORD = "technician-made-broker-pw"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def gw(tmp_path, capsys):
    """An initialised gateway: (config path, etc dir)."""
    etc = tmp_path / "etc"
    conf = etc / "gateway.toml"
    code, _, err = run(
        capsys,
        "init",
        "--config",
        conf,
        "--data-dir",
        tmp_path / "var",
        "--gateway-id",
        "gw-0001",
        "--listen",
        "10.0.0.2",
    )
    assert code == 0, err
    return conf, etc


def snapshot(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def secrets_of(etc) -> list[str]:
    """Every key and broker password on the Pi, as text."""
    out = [(etc / "broker.pass").read_text().strip()]
    for p in (etc / "readers").glob("*.key"):
        out.append(p.read_text().strip())
    for p in (etc / "enrolment").glob("*.json"):
        e = loads_enrolment(p.read_bytes())
        out += [e.key.hex(), e.password]
    return out


def tech_file(tmp_path, rid=7, bid=12, key=TECH_KEY, password=TECH_PASSWORD, name=None):
    p = tmp_path / (name or "tech-%d.json" % rid)
    p.write_bytes(dumps_enrolment(parse_enrolment(enrolment_doc(rid, bid, key, "10.0.0.2", password))))
    os.chmod(p, 0o600)
    return p


def test_add_registers_the_reader_its_login_its_acl_and_writes_its_enrolment_file(gw, capsys):
    conf, etc = gw
    code, out, err = run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)
    assert code == 0, err
    ef = etc / "enrolment" / "reader-7.json"
    assert ef.stat().st_mode & 0o777 == 0o600
    enr = loads_enrolment(ef.read_bytes())
    assert (enr.reader_id, enr.building_id, enr.username) == (7, 12, "reader-7")
    assert (enr.uplink["host"], enr.uplink["port"]) == ("10.0.0.2", 1883)  # [broker] reader_host and port
    cfg = load_config(conf)
    assert cfg.readers[7].building_id == 12 and cfg.readers[7].key.value == enr.key
    for p in (etc / "readers" / "reader-7.key", etc / "readers" / "reader-7.toml"):
        assert p.stat().st_mode & 0o777 == 0o600
    passwd = read_passwd(etc / "broker" / "passwd")
    assert password_matches(passwd["reader-7"], enr.password)
    assert password_matches(passwd["gateway"], (etc / "broker.pass").read_text().strip())
    acl = (etc / "broker" / "acl").read_text()
    assert "user reader-7\ntopic write lc/12/reader-7/up\ntopic write lc/12/reader-7/status\n" in acl
    assert "topic read lc/12/reader-7/down" in acl
    for s in secrets_of(etc):
        assert s not in out + err


def test_add_twice_changes_nothing(gw, capsys):
    conf, etc = gw
    assert run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)[0] == 0
    before = snapshot(etc)
    code, out, _ = run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)
    assert code == 0 and "nothing changed" in out
    assert snapshot(etc) == before


def test_a_reader_is_added_without_the_other_readers_passwords(gw, capsys):
    conf, etc = gw
    for rid in (7, 8):
        assert run(capsys, "readers", "add", rid, "--building", 12, "--config", conf)[0] == 0
        (etc / "enrolment" / ("reader-%d.json" % rid)).unlink()  # gone to the technician
    before = read_passwd(etc / "broker" / "passwd")
    assert run(capsys, "readers", "add", 9, "--building", 13, "--config", conf)[0] == 0
    after = read_passwd(etc / "broker" / "passwd")
    assert {u: after[u] for u in before} == before
    assert set(after) == {"gateway", "reader-7", "reader-8", "reader-9"}
    assert "topic write lc/13/reader-9/up" in (etc / "broker" / "acl").read_text()


def test_add_from_a_technicians_enrolment_file_and_its_idempotence(gw, tmp_path, capsys):
    conf, etc = gw
    f = tech_file(tmp_path)
    code, out, err = run(capsys, "readers", "add", "--from", f, "--config", conf)
    assert code == 0, err
    assert load_config(conf).readers[7].key.value == TECH_KEY
    assert password_matches(read_passwd(etc / "broker" / "passwd")["reader-7"], TECH_PASSWORD)
    assert not (etc / "enrolment" / "reader-7.json").exists()  # the technician has the file
    assert "note:" not in out  # it names this broker
    assert TECH_PASSWORD not in out + err and TECH_KEY.hex() not in out + err
    before = snapshot(etc)
    code, out, _ = run(capsys, "readers", "add", "--from", f, "--config", conf)
    assert code == 0 and "nothing changed" in out
    assert snapshot(etc) == before
    # the same reader with another key: refused, that is rotate-key's job
    other = tech_file(tmp_path, key=bytes(32), name="other.json")
    code, out, err = run(capsys, "readers", "add", "--from", other, "--config", conf)
    assert code == 1 and "rotate-key" in err and err.count("\n") == 1
    assert snapshot(etc) == before
    code, out, err = run(capsys, "readers", "rotate-key", 7, "--from", other, "--config", conf)
    assert code == 0, err
    assert load_config(conf).readers[7].key.value == bytes(32)
    assert read_passwd(etc / "broker" / "passwd")["reader-7"] == read_passwd_before(before)  # same password: same line


def read_passwd_before(snap) -> str:
    line = [ln for ln in snap["broker/passwd"].decode().splitlines() if ln.startswith("reader-7:")][0]
    return line.split(":", 1)[1]


def test_rotate_key_keeps_the_broker_password_and_writes_a_new_enrolment_file(gw, capsys):
    conf, etc = gw
    assert run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)[0] == 0
    ef = etc / "enrolment" / "reader-7.json"
    old = loads_enrolment(ef.read_bytes())
    line = read_passwd(etc / "broker" / "passwd")["reader-7"]
    code, out, err = run(capsys, "readers", "rotate-key", 7, "--config", conf)
    assert code == 0, err
    assert "broker password stays" in out
    # Under the old id a fresh board is refused as a replay (the gateway keeps its counters).
    assert "new board in its place needs a new reader id" in out
    new = loads_enrolment(ef.read_bytes())
    assert new.key != old.key and new.password == old.password
    assert load_config(conf).readers[7].key.value == new.key
    assert read_passwd(etc / "broker" / "passwd")["reader-7"] == line
    # Without the last enrolment file the password is not on the Pi any more: a new one.
    ef.unlink()
    assert run(capsys, "readers", "rotate-key", 7, "--config", conf)[0] == 0
    newer = loads_enrolment(ef.read_bytes())
    assert newer.password != old.password
    assert password_matches(read_passwd(etc / "broker" / "passwd")["reader-7"], newer.password)


def test_remove_takes_key_login_acl_and_enrolment_file_away(gw, capsys):
    conf, etc = gw
    for rid in (7, 8):
        assert run(capsys, "readers", "add", rid, "--building", 12, "--config", conf)[0] == 0
    code, out, err = run(capsys, "readers", "remove", 7, "--config", conf)
    assert code == 0, err
    assert sorted(load_config(conf).readers) == [8]
    assert not any(
        (etc / p).exists() for p in ("readers/reader-7.key", "readers/reader-7.toml", "enrolment/reader-7.json")
    )
    assert set(read_passwd(etc / "broker" / "passwd")) == {"gateway", "reader-8"}
    assert "reader-7" not in (etc / "broker" / "acl").read_text()
    before = snapshot(etc)
    code, out, _ = run(capsys, "readers", "remove", 7, "--config", conf)
    assert code == 0 and "not registered" in out and snapshot(etc) == before


def test_list_table_and_json_never_a_key(gw, capsys):
    conf, etc = gw
    for rid in (7, 8):
        assert run(capsys, "readers", "add", rid, "--building", 12, "--config", conf)[0] == 0
    code, out, _ = run(capsys, "readers", "list", "--config", conf)
    assert code == 0
    rows = [ln.split() for ln in out.splitlines()[2:]]
    assert [r[:4] for r in rows] == [["7", "12", "reader-7", "yes"], ["8", "12", "reader-8", "yes"]]
    code, out, _ = run(capsys, "readers", "list", "--json", "--config", conf)
    doc = json.loads(out)
    assert [(d["reader_id"], d["building_id"], d["broker_login"]) for d in doc] == [(7, 12, True), (8, 12, True)]
    for s in secrets_of(etc):
        assert s not in out


def test_hand_listed_readers_still_load_and_are_not_taken_over(gw, capsys):
    conf, etc = gw
    kf = etc / "keys" / "reader-5.key"
    kf.parent.mkdir()
    kf.write_text("ab" * 32)
    os.chmod(kf, 0o600)
    with open(conf, "a") as f:
        f.write('\n[[readers]]\nreader_id = 5\nbuilding_id = 12\nkey_file = "%s"\n' % kf)
    assert run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)[0] == 0
    cfg = load_config(conf)
    assert sorted(cfg.readers) == [5, 7] and cfg.readers[5].key.value == bytes.fromhex("ab" * 32)
    before = snapshot(etc)
    code, _, err = run(capsys, "readers", "add", 5, "--building", 12, "--config", conf)
    assert code == 1 and "[[readers]]" in err and snapshot(etc) == before
    code, out, _ = run(capsys, "broker", "--config", conf)
    assert "reader 5 has no broker login" in out


def bad_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    return p


def bad_key(tmp_path):
    p = tmp_path / "badkey.json"
    doc = enrolment_doc(7, 12, TECH_KEY, "10.0.0.2", TECH_PASSWORD)
    doc["key"] = "zz" + doc["key"][2:]
    p.write_text(json.dumps(doc))
    return p


def extra_key(tmp_path):
    p = tmp_path / "whole-config.json"
    p.write_text(json.dumps(dict(enrolment_doc(7, 12, TECH_KEY, "10.0.0.2", TECH_PASSWORD), floors=7)))
    return p


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["readers", "add", "0", "--building", "12"], 2, "READER_ID"),
        (["readers", "add", "seven", "--building", "12"], 2, "READER_ID"),
        (["readers", "add", "7"], 2, "--building"),
        (["readers", "add", "7", "--building", "x"], 2, "--building"),
        (["readers", "add", "--from", bad_json], 2, "not valid JSON"),
        (["readers", "add", "--from", bad_key], 2, "key must be exactly 64 hex digits"),
        (["readers", "add", "--from", extra_key], 2, "unknown key floors"),
        (["readers", "add", "--from", "missing.json"], 1, "cannot read"),
        (["readers", "add", "8", "--from", tech_file], 2, "is for reader 7"),
        (["readers", "add", "--from", tech_file, "--building", "13"], 2, "is for building 12"),
        (["readers", "rotate-key", "99"], 1, "not registered"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(gw, tmp_path, capsys, args, code, words):
    conf, etc = gw
    assert run(capsys, "readers", "add", 3, "--building", 12, "--config", conf)[0] == 0
    args = [a(tmp_path) if callable(a) else a for a in args]
    before = snapshot(etc)
    got, out, err = run(capsys, *args, "--config", conf)
    assert got == code and words in err, err
    assert err.count("\n") == 1 and err.startswith("liftcard-gateway: ") and "Traceback" not in err
    assert snapshot(etc) == before
    for s in secrets_of(etc) + [TECH_KEY.hex(), TECH_PASSWORD]:
        assert s not in out + err


def test_without_a_readers_dir_add_says_what_to_set(tmp_path, capsys):
    conf = tmp_path / "gw.toml"
    pw = tmp_path / "broker.pass"
    pw.write_text("x" * 20)
    os.chmod(pw, 0o600)
    conf.write_text('[gateway]\ndata_dir = "data"\n[broker]\npassword_file = "broker.pass"\n')
    code, _, err = run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)
    assert code == 2 and "gateway.readers_dir is not set" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broker.pass", "gw.toml"]


def test_a_loopback_reader_host_is_pointed_out(gw, capsys):
    conf, _ = gw
    code, out, _ = run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)
    assert code == 0 and "note:" not in out  # the fixture's reader_host is the Pi's address
    conf.write_text(conf.read_text().replace('reader_host = "10.0.0.2"', 'reader_host = "127.0.0.1"'))
    code, out, _ = run(capsys, "readers", "add", 8, "--building", 12, "--config", conf)
    assert code == 0 and "note: it sends the reader to 127.0.0.1 (broker.reader_host)" in out


def test_a_technicians_file_for_another_address_is_pointed_out(gw, tmp_path, capsys):
    conf, _ = gw
    f = tmp_path / "elsewhere.json"
    f.write_bytes(dumps_enrolment(parse_enrolment(enrolment_doc(7, 12, TECH_KEY, "10.9.9.9", TECH_PASSWORD))))
    code, out, _ = run(capsys, "readers", "add", "--from", f, "--config", conf)
    assert code == 0 and "sends the reader to 10.9.9.9:1883, this broker is 10.0.0.2:1883" in out


def test_the_technicians_file_on_stdin(gw, tmp_path, capsys, monkeypatch):
    """The file sits in the operator's home, which the liftcard user the
    command runs as cannot read: the operator's shell hands it over
    (`--from - < reader-7.json`); a file it cannot open says so."""
    conf, etc = gw
    f = tech_file(tmp_path)

    class Stdin:
        buffer = open(f, "rb")

    monkeypatch.setattr("sys.stdin", Stdin)
    try:
        code, out, err = run(capsys, "readers", "add", "--from", "-", "--config", conf)
    finally:
        Stdin.buffer.close()
    assert code == 0, err
    assert load_config(conf).readers[7].key.value == TECH_KEY
    assert TECH_PASSWORD not in out + err and TECH_KEY.hex() not in out + err

    class Garbage:
        buffer = io.BytesIO(b"{not json")

    monkeypatch.setattr("sys.stdin", Garbage)
    code, out, err = run(capsys, "readers", "rotate-key", 7, "--from", "-", "--config", conf)
    assert code == 2 and "the enrolment file on stdin" in err and err.count("\n") == 1


def test_an_unreadable_technicians_file_says_to_use_stdin(gw, tmp_path, capsys, monkeypatch):
    conf, etc = gw
    f = tech_file(tmp_path)
    real_open = open

    def denied(path, *a, **kw):
        if str(path) == str(f):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", denied)
    before = snapshot(etc)
    code, out, err = run(capsys, "readers", "add", "--from", f, "--config", conf)
    monkeypatch.setattr("builtins.open", real_open)
    assert code == 1 and err.count("\n") == 1
    assert "Permission denied" in err and "--from - < %s" % f in err
    assert snapshot(etc) == before
