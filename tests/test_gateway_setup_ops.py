"""The operator's guide after the set-up (docs/operations.md, steps 7 and 10):
the console and retention turned on by uncommenting init's skeleton, a
backup taken with the project's own command while the database is in use,
and a command run by a user the config's owner keeps out, told whose it is."""

from __future__ import annotations

import io
import os
import pwd
import sqlite3
import stat

from liftcard_gateway import cli
from liftcard_gateway.__main__ import main
from liftcard_gateway.config import load_config, valid_address
from liftcard_gateway.db import connect
from liftcard_gateway.store import Store
from liftcard_protocol.ride import RideRecord
from liftcard_testing.cards import card, write_cards_config
from liftcard_testing.cards import snapshot as card_snapshot


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def ride(seq, fee=40):
    return RideRecord(seq, 5000 + seq, seq, 0xABCDEF, 7, 3, fee, 0, 0, 1)


def initialised(tmp_path, capsys):
    conf = tmp_path / "etc" / "gateway.toml"
    code, _, err = run(capsys, "init", "--config", conf, "--data-dir", tmp_path / "var", "--gateway-id", "gw-0001")
    assert code == 0, err
    return conf


def uncomment(conf, section: str) -> None:
    """What the guide tells the operator to do with a commented section."""
    lines, inside = [], False
    for line in conf.read_text().splitlines():
        if line == "# [%s]" % section:
            inside = True
        elif inside and not line.startswith("# ") or line == "":
            inside = False
        lines.append(line[2:] if inside else line)
    conf.write_text("\n".join(lines) + "\n")


def test_the_skeleton_has_the_console_and_retention_to_uncomment(tmp_path, capsys):
    conf = initialised(tmp_path, capsys)
    cfg = load_config(conf)
    assert cfg.console is None and cfg.retention is None  # off until the operator says
    uncomment(conf, "console")
    uncomment(conf, "retention")
    cfg = load_config(conf)
    assert (cfg.console.host, cfg.console.port) == ("127.0.0.1", 8480)
    assert cfg.retention.acked_ride_days == 90


def stored(tmp_path, capsys, rides=3):
    conf = initialised(tmp_path, capsys)
    cfg = load_config(conf)
    st = Store(cfg.db_path)
    st.ensure_reader(7, 12)
    st.store_batch(7, 1, [ride(i) for i in range(1, rides + 1)])
    return conf, cfg, st


def test_backup_copies_the_database_while_it_is_open_into_a_private_file(tmp_path, capsys):
    conf, cfg, st = stored(tmp_path, capsys)
    try:
        out = tmp_path / "backup" / "gateway.db"
        out.parent.mkdir()
        old_umask = os.umask(0o022)  # a root shell's: the copy must not follow it
        try:
            code, text, err = run(capsys, "backup", out, "--config", conf)
        finally:
            os.umask(old_umask)
        assert code == 0, err
        assert "3 rides" in text and "encrypt" in text
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert sorted(p.name for p in out.parent.iterdir()) == ["gateway.db"]  # one file, no -wal beside it
        copy = sqlite3.connect(out)
        try:
            assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
            assert copy.execute("SELECT count(*) FROM rides").fetchone()[0] == 3
        finally:
            copy.close()
        # The daemon's store goes on writing.
        st.store_batch(7, 2, [ride(4)])
    finally:
        st.close()


def test_backup_never_replaces_a_file_and_needs_a_database(tmp_path, capsys):
    conf, cfg, st = stored(tmp_path, capsys)
    st.close()
    out = tmp_path / "old.db"
    out.write_bytes(b"an older backup")
    code, text, err = run(capsys, "backup", out, "--config", conf)
    assert code == 1 and text == ""
    assert err.count("\n") == 1 and "exists" in err and "Traceback" not in err
    assert out.read_bytes() == b"an older backup"

    cfg.db_path.unlink()
    for p in cfg.db_path.parent.glob("gateway.db-*"):
        p.unlink()
    code, text, err = run(capsys, "backup", tmp_path / "new.db", "--config", conf)
    assert code == 1 and "no database yet" in err and err.count("\n") == 1
    assert not (tmp_path / "new.db").exists()
    code, text, err = run(capsys, "backup", tmp_path / "nowhere" / "new.db", "--config", conf)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err


def test_a_failed_copy_leaves_no_file(tmp_path, capsys, monkeypatch):
    conf, cfg, st = stored(tmp_path, capsys)
    st.close()

    def broken(path, readonly=False, **kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("liftcard_gateway.backup.connect", broken)
    out = tmp_path / "copy.db"
    code, text, err = run(capsys, "backup", out, "--config", conf)
    assert code == 1 and "disk I/O error" in err
    assert not out.exists()


def test_the_backup_is_a_database_the_daemon_opens(tmp_path, capsys):
    conf, cfg, st = stored(tmp_path, capsys, rides=5)
    st.close()
    out = tmp_path / "copy.db"
    assert run(capsys, "backup", out, "--config", conf)[0] == 0
    again = Store(out)
    try:
        assert again.conn.execute("SELECT max(seq) FROM rides WHERE reader_id=7").fetchone()[0] == 5
    finally:
        again.close()
    conn = connect(out, readonly=True)
    conn.close()


def test_a_config_kept_from_this_user_names_its_owner(tmp_path, capsys, monkeypatch):
    """The guide's /etc/liftcard is 0700 of the liftcard user: an operator's
    plain `liftcard-gateway status` is refused; the line says whose it is."""
    conf = initialised(tmp_path, capsys)
    os.chown(conf, 65534, 65534)  # the daemon's user, here nobody
    owner = pwd.getpwuid(65534).pw_name
    real_access = os.access
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # the operator
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(conf) else real_access(p, mode))
    hint = cli._owner_hint(conf)
    assert "belongs to %s" % owner in hint and "sudo -u %s liftcard-gateway" % owner in hint
    monkeypatch.setattr(os, "access", real_access)
    assert cli._owner_hint(conf) == ""  # readable: nothing to add


def test_a_card_update_on_stdin(tmp_path, capsys, monkeypatch):
    """`sudo -u liftcard liftcard-gateway cards import - < update.bin`: the
    bank's file in the operator's home, which the liftcard user cannot read."""
    cfg_path, _ = write_cards_config(tmp_path)

    class Stdin:
        buffer = io.BytesIO(card_snapshot(1, {12: [card(1), card(2)]}))

    monkeypatch.setattr("sys.stdin", Stdin)
    code, out, err = run(capsys, "cards", "import", "-", "--config", cfg_path)
    assert code == 0, err
    assert "card database at version 1" in out

    real_open = open

    def denied(path, *a, **kw):
        if str(path) == "/home/op/update.bin":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", denied)
    code, out, err = run(capsys, "cards", "import", "/home/op/update.bin", "--config", cfg_path)
    monkeypatch.setattr("builtins.open", real_open)
    assert code == 1 and err.count("\n") == 1 and "cards import - < /home/op/update.bin" in err


def test_init_without_its_directory_says_to_make_it(tmp_path, capsys, monkeypatch):
    """Run as liftcard before the guide's `install -d`: the parent (/etc) is
    root's. The line names the command that makes the directory, not a user
    to become (it is run as the right one)."""
    etc = tmp_path / "etc-root"
    etc.mkdir()
    conf = etc / "liftcard" / "gateway.toml"
    real_access = os.access
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(etc) else real_access(p, mode))
    code, out, err = run(capsys, "init", "--config", conf, "--data-dir", tmp_path / "var", "--gateway-id", "gw-0001")
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "does not exist" in err and "install -d" in err and str(etc / "liftcard") in err
    assert not (etc / "liftcard").exists()


def test_init_again_with_another_listener_says_where_to_change_it(tmp_path, capsys):
    """Run again with --listen (the Pi's Wi-Fi address, forgotten the first
    time): it kept the old listener and said nothing; now it says where."""
    conf = initialised(tmp_path, capsys)
    before = conf.read_bytes()
    for opt, value, key in (("--listen", "192.168.4.1", "listen"), ("--port", "1884", "port")):
        code, out, err = run(capsys, "init", "--config", conf, "--gateway-id", "gw-0001", opt, value)
        assert code == 1 and err.count("\n") == 1, err
        assert "[broker] %s" % key in err and "`broker`" in err
    assert conf.read_bytes() == before
    # the same values as the config's: kept, as any run again
    code, out, err = run(capsys, "init", "--config", conf, "--listen", "127.0.0.1", "--port", "1883")
    assert code == 0, err
    assert "kept" in out


def test_an_ipv4_look_alike_is_no_address(tmp_path, capsys):
    code, out, err = run(
        capsys, "init", "--config", tmp_path / "gateway.toml", "--gateway-id", "gw-0001", "--listen", "999.1.1.1"
    )
    assert code == 2 and "--listen must be a host name or an IP address" in err
    assert not (tmp_path / "gateway.toml").exists()
    for ok_ in ("192.168.4.1", "0.0.0.0", "::1", "pi.local", "gateway-1"):
        assert valid_address(ok_), ok_
    for bad in ("999.1.1.1", "1.2.3", "192.168.4.256", "a b", "fe80::zz"):
        assert not valid_address(bad), bad
