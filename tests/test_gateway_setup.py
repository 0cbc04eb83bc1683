"""`liftcard-gateway init` and `broker` (docs/operations.md, steps 2 and 4), the
gateway's one identity (`[gateway] gateway_id`, `compound_id`; the certificate
CN equal to the id), and a command whose reader goes away (`| head -1`)."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from liftcard_gateway.__main__ import main
from liftcard_gateway.broker import find_tool, password_matches, read_passwd
from liftcard_gateway.config import GatewayConfigError, load_config
from liftcard_gateway.store import Store
from liftcard_protocol.enrolment import loads_enrolment
from liftcard_protocol.keys import load_signing_key
from liftcard_testing import procs
from liftcard_testing.bankbroker import render_bank_acl
from liftcard_testing.devpki import make_dev_pki
from liftcard_testing.mosquitto import free_port
from liftcard_testing.mqttprobe import connack
from liftcard_testing.wait import wait_for


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def init(capsys, tmp_path, *extra):
    conf = tmp_path / "etc" / "gateway.toml"
    code, out, err = run(capsys, "init", "--config", conf, "--data-dir", tmp_path / "var", *extra)
    return conf, code, out, err


def snapshot(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def cn(path) -> str:
    csr = x509.load_pem_x509_csr(path.read_bytes())
    return csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# -- init -------------------------------------------------------------------------------------


def test_init_makes_the_config_the_broker_password_and_the_bank_keys(tmp_path, capsys):
    conf, code, out, err = init(capsys, tmp_path, "--gateway-id", "gw-0001")
    assert code == 0, err
    etc = conf.parent
    cfg = load_config(conf)
    assert (cfg.gateway_id, cfg.compound_id) == ("gw-0001", 1)  # the compound is the id's number
    assert cfg.data_dir == tmp_path / "var" and cfg.data_dir.is_dir()
    assert (cfg.readers_dir, cfg.enrolment_dir, cfg.broker.dir) == (etc / "readers", etc / "enrolment", etc / "broker")
    assert (cfg.broker.listen, cfg.broker.host, cfg.broker.reader_host) == ("127.0.0.1",) * 3  # loopback by default
    for secret in ("broker.pass", "upstream/signing.key", "upstream/gw.key"):
        assert (etc / secret).stat().st_mode & 0o777 == 0o600
    for d in (etc, tmp_path / "var", etc / "upstream", etc / "readers", etc / "enrolment"):
        assert d.stat().st_mode & 0o777 == 0o700
    assert len(cfg.broker.password.value) >= 32
    load_signing_key(etc / "upstream" / "signing.key")
    assert cn(etc / "upstream" / "gw.csr") == "gw-0001"  # exactly the id: no gw-gw-0001
    csr = x509.load_pem_x509_csr((etc / "upstream" / "gw.csr").read_bytes())
    assert csr.is_signature_valid
    for s in (cfg.broker.password.value, (etc / "upstream" / "signing.key").read_text()):
        assert s not in out + err


def test_init_again_keeps_everything_and_says_so(tmp_path, capsys):
    conf, code, _, _ = init(capsys, tmp_path, "--gateway-id", "gw-0001")
    assert code == 0
    before = snapshot(conf.parent)
    conf, code, out, err = init(capsys, tmp_path)  # the id is the config's
    assert code == 0, err
    assert snapshot(conf.parent) == before
    assert [ln.split()[0] for ln in out.splitlines()] == ["kept"] * 4


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "--gateway-id is needed"),
        (["--gateway-id", "gw/1"], "--gateway-id must be"),
        (["--gateway-id", "ledger"], "--gateway-id must be"),
        (["--gateway-id", "north"], "--compound-id is needed"),
        (["--gateway-id", "gw-1", "--compound-id", "0"], "--compound-id must be"),
        (["--gateway-id", "gw-1", "--listen", "a b"], "--listen must be"),
        (["--gateway-id", "gw-1", "--port", "70000"], "--port must be"),
        (["--gateway-id", "gw-1", "--port", "http"], "--port must be"),
        (["--gateway-id", "gw-1", "--compound-id", "x"], "--compound-id must be"),
    ],
)
def test_init_bad_input_one_line_nothing_written(tmp_path, capsys, args, words):
    conf, code, out, err = init(capsys, tmp_path, *args)
    assert code == 2 and words in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "etc").exists() and not (tmp_path / "var").exists()


def test_init_refuses_a_second_identity_for_a_config(tmp_path, capsys):
    conf, code, _, _ = init(capsys, tmp_path, "--gateway-id", "gw-0001")
    before = snapshot(conf.parent)
    conf, code, out, err = init(capsys, tmp_path, "--gateway-id", "gw-0002")
    assert code == 1 and "is gateway gw-0001 already, not gw-0002" in err and err.count("\n") == 1
    assert snapshot(conf.parent) == before


def test_init_compound_id_given(tmp_path, capsys):
    conf, code, _, err = init(capsys, tmp_path, "--gateway-id", "north", "--compound-id", "77")
    assert code == 0, err
    assert (load_config(conf).gateway_id, load_config(conf).compound_id) == ("north", 77)


# -- one identity ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "pki", ["gw-0001"])


def test_a_gateways_certificate_cn_is_its_gateway_id(pki):
    cert = x509.load_pem_x509_certificate(pki.gateways["gw-0001"]["cert"].read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-0001"
    acl = render_bank_acl(["gw-0001"])
    assert "user gw-0001\ntopic write liftcard/gw/gw-0001/batches\n" in acl


def write_conf(tmp_path, pki, gateway: str, sections: str):
    pw = tmp_path / "broker.pass"
    pw.write_text("x" * 20)
    os.chmod(pw, 0o600)
    bank = tmp_path / "bank.pub"
    bank.write_bytes(pki.ledger_public_key.read_bytes())
    g = pki.gateways["gw-0001"]
    up = (
        '[upstream]\nhost = "127.0.0.1"\nca_file = "%s"\ncert_file = "%s"\nkey_file = "%s"\n'
        'signing_key_file = "%s"\nledger_public_key_file = "%s"\n'
        % (pki.ca_cert, g["cert"], g["key"], g["signing_key"], pki.ledger_public_key)
    )
    text = '[gateway]\ndata_dir = "data"\n%s\n[broker]\npassword_file = "broker.pass"\n' % gateway
    p = tmp_path / "gw.toml"
    p.write_text(
        text + sections.replace("UPSTREAM", up).replace("CARDS", '[cards]\nbank_public_key_file = "bank.pub"\n')
    )
    return p


def test_the_identity_lives_in_gateway_and_everything_derives_from_it(tmp_path, pki):
    cfg = load_config(write_conf(tmp_path, pki, 'gateway_id = "gw-0001"\ncompound_id = 9', "UPSTREAM\nCARDS"))
    assert cfg.upstream.gateway_id == "gw-0001" and cfg.cards.compound_id == 9
    assert cfg.upstream.client_id == "liftcard-gw-0001"  # the id once, as everywhere


@pytest.mark.parametrize(
    "gateway, sections, key, words",
    [
        (
            'gateway_id = "gw-0001"',
            'UPSTREAM\ngateway_id = "gw-0001"',
            "upstream.gateway_id",
            'moved: write gateway_id = "gw-0001" in [gateway] instead',
        ),
        ("compound_id = 3", "CARDS\ncompound_id = 3", "cards.compound_id", "moved: write compound_id = 3 in [gateway]"),
        ("", "UPSTREAM", "gateway.gateway_id", "[upstream] needs the gateway's identity in [gateway]"),
        ("", "CARDS", "gateway.compound_id", "[cards] needs the compound's number in [gateway]"),
        ('gateway_id = "cards"', "", "gateway.gateway_id", "the bank's own identities"),
        ('gateway_id = "gw 1"', "", "gateway.gateway_id", "must be 1 .. 64"),
    ],
)
def test_identity_refusals_say_what_to_write(tmp_path, pki, gateway, sections, key, words):
    with pytest.raises(GatewayConfigError) as ei:
        load_config(write_conf(tmp_path, pki, gateway, sections))
    assert ei.value.key == key and words in str(ei.value) and "\n" not in str(ei.value)


# -- broker -------------------------------------------------------------------------------------


@pytest.fixture
def gw(tmp_path, capsys):
    conf, code, _, err = init(capsys, tmp_path, "--gateway-id", "gw-0001", "--listen", "10.1.2.3", "--port", "1884")
    assert code == 0, err
    assert run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)[0] == 0
    return conf, conf.parent / "broker"


def test_broker_renders_the_listener_from_the_config_and_a_pid_file(gw, capsys):
    conf, bdir = gw
    text = (bdir / "mosquitto.conf").read_text()
    assert "listener 1884 10.1.2.3\n" in text
    assert "pid_file %s\n" % (bdir / "mosquitto.pid") in text
    assert "allow_anonymous false" in text and "certfile" not in text
    before = snapshot(bdir)
    code, out, _ = run(capsys, "broker", "--config", conf)
    assert code == 0 and "unchanged" in out and "no Mosquitto is running" in out
    assert snapshot(bdir) == before


def test_broker_tls_listener_when_configured(gw, capsys):
    conf, bdir = gw
    etc = conf.parent
    for name in ("local.crt", "local.key"):
        (etc / name).write_text("PEM")
        os.chmod(etc / name, 0o600)
    text = conf.read_text().replace("[broker]\n", '[broker]\ntls_cert_file = "local.crt"\ntls_key_file = "local.key"\n')
    conf.write_text(text)
    code, out, err = run(capsys, "broker", "--config", conf)
    assert code == 0, err
    lines = (bdir / "mosquitto.conf").read_text().splitlines()
    i = lines.index("listener 8883 10.1.2.3")
    assert lines[i + 1 : i + 5] == [
        "protocol mqtt",
        "certfile %s" % (etc / "local.crt"),
        "keyfile %s" % (etc / "local.key"),
        "tls_version tlsv1.2",
    ]
    assert "listener 1884 10.1.2.3" in lines  # the readers' plain listener stays


def test_broker_takes_a_new_gateway_password_and_keeps_the_readers_lines(gw, capsys):
    conf, bdir = gw
    old = read_passwd(bdir / "passwd")
    (conf.parent / "broker.pass").write_text("a-new-gateway-password\n")
    code, out, err = run(capsys, "broker", "--config", conf)
    assert code == 0, err
    new = read_passwd(bdir / "passwd")
    assert password_matches(new["gateway"], "a-new-gateway-password") and new["reader-7"] == old["reader-7"]
    assert "a-new-gateway-password" not in out + err


def test_a_stale_pid_file_is_never_signalled(gw, capsys):
    conf, bdir = gw
    with procs.running(procs.spawn(["sleep", "60"])) as other:
        (bdir / "mosquitto.pid").write_text("%d\n" % other.pid)
        (bdir / "acl").unlink()  # something to write, so a reload is due
        code, out, _ = run(capsys, "broker", "--config", conf)
        assert code == 0 and "no Mosquitto is running" in out
        assert other.poll() is None  # not sent SIGHUP (which would have ended it)


def test_broker_without_a_broker_dir_one_line(tmp_path, capsys):
    pw = tmp_path / "broker.pass"
    pw.write_text("x" * 20)
    os.chmod(pw, 0o600)
    conf = tmp_path / "gw.toml"
    conf.write_text('[gateway]\ndata_dir = "data"\n[broker]\npassword_file = "broker.pass"\n')
    code, _, err = run(capsys, "broker", "--config", conf)
    assert code == 2 and "broker.dir is not set" in err and err.count("\n") == 1


# -- a reader of the output that goes away ----------------------------------------------------


@pytest.mark.parametrize("cmd", [["status"], ["readers", "list"], ["readers", "list", "--json"]])
def test_output_to_a_closed_pipe_ends_quietly(gw, cmd):
    conf, _ = gw
    Store(load_config(conf).db_path).close()  # a database to show
    rfd, wfd = os.pipe()
    os.close(rfd)  # `| head -1` that has already gone: every write fails with EPIPE
    try:
        p = subprocess.run(
            [sys.executable, "-m", "liftcard_gateway", *cmd, "--config", str(conf)],
            stdout=wfd,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(wfd)
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr and "Exception ignored" not in p.stderr
    assert p.stderr == "" and p.returncode == 141


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_root_is_told_to_run_as_the_gateways_user(tmp_path, capsys):
    etc = tmp_path / "etc"
    etc.mkdir()
    os.chown(etc, 65534, 65534)  # as `install -d -o liftcard /etc/liftcard` leaves it
    conf, code, out, err = init(capsys, tmp_path, "--gateway-id", "gw-0001")
    assert code == 1 and "run this as" in err and "sudo -u" in err and err.count("\n") == 1
    assert list(etc.iterdir()) == [] and not (tmp_path / "var").exists()


def test_init_again_takes_the_paths_from_the_config(tmp_path, capsys):
    conf, code, _, _ = init(capsys, tmp_path, "--gateway-id", "gw-0001")
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "init", "--config", conf)  # no --data-dir: the config's, not the default
    assert code == 0, err
    assert "made" not in out and snapshot(tmp_path) == before
    code, out, err = run(capsys, "init", "--config", conf, "--data-dir", tmp_path / "elsewhere")
    assert code == 1 and "keeps its data in %s" % (tmp_path / "var") in err
    assert snapshot(tmp_path) == before and not (tmp_path / "elsewhere").exists()


def test_a_tls_listener_takes_a_reader_over_tls_with_its_password(tmp_path, pki, capsys):
    """The option of docs/operations.md step 4, against the real Mosquitto: the
    rendered TLS listener starts, a reader logs in over TLS with the password
    of its enrolment file, and a wrong password is refused there too."""
    port, tls_port = free_port(), free_port()
    conf, code, _, err = init(capsys, tmp_path, "--gateway-id", "gw-0001", "--port", port)
    assert code == 0, err
    text = conf.read_text().replace(
        "\n[broker]\n",
        '\n[broker]\ntls_cert_file = "%s"\ntls_key_file = "%s"\ntls_port = %d\n'
        % (pki.server_cert, pki.server_key, tls_port),
    )
    conf.write_text(text)
    assert run(capsys, "readers", "add", 7, "--building", 12, "--config", conf)[0] == 0
    enr = loads_enrolment((conf.parent / "enrolment" / "reader-7.json").read_bytes())
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with procs.running(procs.spawn([find_tool("mosquitto"), "-c", conf.parent / "broker" / "mosquitto.conf"])) as m:

        def up():
            assert m.poll() is None, (conf.parent / "broker" / "mosquitto.log").read_text()
            with contextlib.suppress(OSError):
                return connack("127.0.0.1", tls_port, "reader-7", enr.password, tls=ctx) == 0
            return False

        wait_for(up, 30, "the TLS listener")
        assert connack("127.0.0.1", tls_port, "reader-7", "not-its-password", tls=ctx) != 0
        assert connack("127.0.0.1", port, "reader-7", enr.password) == 0  # the plain listener stays
