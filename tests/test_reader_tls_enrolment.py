"""The local link's TLS from the gateway to the reader (docs/operations.md,
step 4; docs/formats.md, "Reader enrolment file"): the enrolment file carries
uplink.tls and the CA certificate when the gateway's TLS listener has one in
its chain, `liftcard-provision configure` writes the CA file to the reader
beside its config, and the reader so configured links up over TLS.

Checked: the CA is the chain's self-signed certificate, a lone CA-issued one
names none (the plain listener then); tls_ca round trips and is refused
without uplink.tls or when it is not one certificate; the whole path on the
virtual serial board: `readers add` -> enrolment file -> `configure --file`
-> ca.der and config.json on the board's flash -> the reader up over TLS to a
real Mosquitto."""

import json

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from liftcard_gateway.__main__ import main as gateway_main
from liftcard_gateway.broker import find_tool
from liftcard_protocol.enrolment import enrolment_doc, loads_enrolment, parse_enrolment
from liftcard_protocol.errors import ConfigError
from liftcard_protocol.keys import write_private, write_public
from liftcard_protocol.readertls import trust_anchor
from liftcard_provisioning import boardlink, cli
from liftcard_testing.devpki import issue, make_ca
from liftcard_testing.mosquitto import MosquittoInstance, free_port
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard
from liftcard_testing.wait import wait_for

KEY = bytes(range(32))
SERVER_NAME = "gw.lift"


def _der(cert_pem: bytes) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def chain():
    ca = make_ca("liftcard local link CA")
    key, cert = issue(ca, "liftcard gateway", server_names=("127.0.0.1", SERVER_NAME), client=False)
    ca_pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    return {"key": key, "cert": cert, "ca_pem": ca_pem, "ca_der": _der(ca_pem)}


def test_the_ca_is_the_chains_self_signed_certificate(chain):
    assert trust_anchor(chain["cert"] + chain["ca_pem"]) == chain["ca_der"]
    assert trust_anchor(chain["cert"]) is None  # a lone CA-issued certificate names no CA
    assert trust_anchor(chain["ca_pem"]) == chain["ca_der"]
    assert trust_anchor(b"PEM") is None


@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=60))
def test_an_enrolment_with_tls_round_trips(chain, name):
    doc = enrolment_doc(
        7, 12, KEY, "10.0.7.1", "pw-123456", port=8884, tls={"server_name": name}, tls_ca=chain["ca_der"]
    )
    enr = parse_enrolment(json.loads(json.dumps(doc)))
    assert enr.tls_ca == chain["ca_der"]
    assert enr.uplink["tls"] == {"ca": "ca.der", "server_name": name} and enr.uplink["port"] == 8884
    assert parse_enrolment(enr.doc()) == enr
    assert "tls_ca" not in enrolment_doc(7, 12, KEY, "10.0.7.1", "pw-123456")


def test_tls_ca_is_refused_without_uplink_tls_or_when_not_one_certificate(chain):
    doc = enrolment_doc(7, 12, KEY, "10.0.7.1", "pw-123456")
    with pytest.raises(ConfigError) as e:
        parse_enrolment(dict(doc, tls_ca=chain["ca_pem"].decode()))
    assert e.value.key == "tls_ca" and "uplink.tls" in str(e.value)
    doc["uplink"]["tls"] = {}
    for bad in ("not a certificate", (chain["ca_pem"] * 2).decode(), 12, None):
        with pytest.raises(ConfigError) as e:
            parse_enrolment(dict(doc, tls_ca=bad))
        assert e.value.key == "tls_ca" and str(e.value).startswith("enrolment: tls_ca")
        assert "pw-123456" not in str(e.value)


def _gateway(capsys, tmp_path, chain, port, tls_port, with_ca=True):
    """`liftcard-gateway init`, the TLS listener's files in [broker], `readers add 1017`: its enrolment file."""
    conf = tmp_path / "etc" / "gateway.toml"
    argv = ["init", "--config", str(conf), "--data-dir", str(tmp_path / "var"), "--port", str(port)]
    code = gateway_main([*argv, "--gateway-id", "gw-0001"])
    assert code == 0, capsys.readouterr()
    etc = conf.parent
    write_public(etc / "local.crt", chain["cert"] + (chain["ca_pem"] if with_ca else b""))
    write_private(etc / "local.key", chain["key"])
    text = conf.read_text().replace(
        "\n[broker]\n",
        '\n[broker]\ntls_cert_file = "local.crt"\ntls_key_file = "local.key"\ntls_port = %d\n' % tls_port,
    )
    conf.write_text(text)
    code = gateway_main(["readers", "add", "1017", "--building", "12", "--config", str(conf)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return etc / "enrolment" / "reader-1017.json"


def test_without_a_ca_in_the_chain_the_enrolment_is_for_the_plain_listener(tmp_path, chain, capsys):
    port, tls_port = free_port(), free_port()
    enr = loads_enrolment(_gateway(capsys, tmp_path, chain, port, tls_port, with_ca=False).read_bytes())
    assert enr.tls_ca is None and "tls" not in enr.uplink and enr.uplink["port"] == port


TARIFF = ["--floors", "7", "--ground-floor", "0", "--fees", "0,0,10,20,30,40,50", "--free-classes", "exempt"]
TARIFF += ["--debounce", "30", "--monthly-cap", "3000"]


def test_readers_add_then_configure_puts_the_ca_on_the_reader_which_links_up_over_tls(tmp_path, chain, capsys):
    try:
        find_tool("mosquitto")
    except Exception:  # pragma: no cover
        pytest.skip("mosquitto not installed")
    port, tls_port = free_port(), free_port()
    path = _gateway(capsys, tmp_path / "gw", chain, port, tls_port)
    enr = loads_enrolment(path.read_bytes())
    assert enr.tls_ca == chain["ca_der"] and enr.uplink["port"] == tls_port
    assert enr.uplink["tls"] == {"ca": "ca.der", "server_name": "127.0.0.1"}  # broker.reader_host
    # The gateway's own broker, as `liftcard-gateway broker` renders it, is
    # replaced here by a private one with the enrolment's login and the same
    # certificate chain and key.
    etc = path.parent.parent
    broker = MosquittoInstance(
        readers={1017: 12},
        credentials={"reader-1017": enr.password},
        tls=(etc / "local.crt", etc / "local.key"),
        tls_port=tls_port,
    )
    with broker, VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as line:
        line.until("READY")
        assert cli.main(["configure", "--port", b.usb, "--file", str(path), *TARIFF]) == 0
        out, err = capsys.readouterr()
        assert "TLS to 127.0.0.1, CA ca.der" in out and enr.password not in out + err
        line.until("READY")
        wait_for(lambda: line.status()["uplink"] == "up", 30, "the uplink over TLS")
        assert line.status()["uplink_error"] is None
        with boardlink.connect(b.usb) as link:
            assert link.read_file("ca.der") == chain["ca_der"]
            assert link.read_file("ca.der.new") is None
            cfg = json.loads(link.read_file("config.json"))
        assert "tls_ca" not in cfg and cfg["uplink"]["tls"]["ca"] == "ca.der"


def _configure_args(path):
    return cli.build_parser().parse_args(["configure", "--file", str(path), *TARIFF])


def test_configure_takes_the_ca_from_the_enrolment_file_and_refuses_it_without_uplink_tls(tmp_path, chain):
    from liftcard_provisioning.boardlink import BoardError
    from liftcard_provisioning.configure import build_config

    doc = enrolment_doc(1017, 12, KEY, "10.0.7.1", "pw-123456", tls={}, tls_ca=chain["ca_der"])
    f = tmp_path / "reader-1017.json"
    f.write_text(json.dumps(doc))
    cfg = build_config(_configure_args(f), env={})
    assert cfg.ca_der == chain["ca_der"] and "tls_ca" not in cfg
    assert cfg["uplink"]["tls"] == {"ca": "ca.der", "server_name": "10.0.7.1"} and cfg["uplink"]["port"] == 8883
    for bad, why in (
        (dict(doc, uplink={k: v for k, v in doc["uplink"].items() if k != "tls"}), "tls_ca goes with uplink.tls"),
        (dict(doc, tls_ca="not a certificate"), "tls_ca must be exactly one PEM certificate"),
    ):
        f.write_text(json.dumps(bad))
        with pytest.raises(BoardError) as e:
            build_config(_configure_args(f), env={})
        msg = str(e.value)
        assert msg.startswith("refused, nothing written to the board: ") and why in msg, msg
        assert "pw-123456" not in msg and "\n" not in msg
