"""liftcard-provision register against the virtual serial board and the
gateway's own `liftcard-gateway readers add` (a gateway set up by
`liftcard-gateway init`, no broker running: the command says so and goes on).
The other direction too: the enrolment file the gateway writes, given to
`configure --file` with the floors and tariff as options."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("mpremote")

from liftcard_protocol.enrolment import dumps_enrolment, loads_enrolment
from liftcard_protocol.fields import ID_MAX
from liftcard_protocol.readerconfig import validate_config
from liftcard_provisioning import boardlink, register
from liftcard_testing import procs
from liftcard_testing.reader import BUILDING, CONFIG, KEY, READER
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

BROKER_PW = "broker-pw-Qv83xk"


def run(*argv, module="liftcard_provisioning.cli", cwd=None, env=None):
    p = procs.spawn(
        [sys.executable, "-m", module, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    try:
        out, err = p.communicate(timeout=300)
    finally:
        procs.stop(p)
    return p.returncode, out.decode(), err.decode()


def no_secret(text: str) -> None:
    for secret in (KEY.hex(), KEY.hex().upper(), BROKER_PW):
        assert secret not in text


@pytest.fixture
def board(tmp_path):
    """A reader with the firmware deployed and no config: (rig, test port)."""
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        yield b, port


def configure(b, tmp_path, uplink=True):
    cfg = dict(CONFIG)
    if uplink:
        cfg["uplink"] = {"host": "127.0.0.1", "port": 1883, "password": BROKER_PW}
    f = tmp_path / "reader-cfg.json"
    f.write_text(json.dumps(cfg))
    rc, out, err = run("configure", "--port", b.usb, "--file", f)
    assert rc == 0, err
    f.unlink()


@pytest.fixture
def gateway(tmp_path):
    """A gateway set up as an operator does (`liftcard-gateway init`): its config path."""
    gw = tmp_path / "gw" / "gw.toml"
    rc, out, err = run(
        "init",
        "--config",
        gw,
        "--data-dir",
        tmp_path / "gw" / "data",
        "--gateway-id",
        "gw-0001",
        module="liftcard_gateway",
    )
    assert rc == 0, err
    return gw


def readers(gw) -> dict:
    rc, out, err = run("readers", "list", "--json", "--config", gw, module="liftcard_gateway")
    assert rc == 0, err
    return {r["reader_id"]: r for r in json.loads(out)}


def test_register_writes_the_enrolment_file_for_the_operator(board, tmp_path):
    b, port = board
    configure(b, tmp_path)
    rc, out, err = run("register", "--port", b.usb, cwd=tmp_path)
    assert rc == 0, err
    f = tmp_path / ("reader-%d.json" % READER)
    assert "wrote reader-%d.json (0600)" % READER in out
    assert "readers add --from reader-%d.json" % READER in out
    no_secret(out + err)
    assert os.stat(f).st_mode & 0o777 == 0o600
    e = loads_enrolment(f.read_bytes())
    assert (e.reader_id, e.building_id, e.key) == (READER, BUILDING, KEY)
    assert e.uplink == {
        "host": "127.0.0.1",
        "port": 1883,
        "username": "reader-%d" % READER,
        "password": BROKER_PW,
        "keepalive_s": 60,
    }
    port.until("READY")  # the reader was restarted

    rc, out, err = run("register", "--port", b.usb, cwd=tmp_path)  # never overwrites one
    assert rc == 2 and err.count("\n") == 1 and "reader-%d.json exists" % READER in err


def test_register_with_the_gateway_in_one_step(board, tmp_path, gateway):
    b, port = board
    configure(b, tmp_path)
    assert READER not in readers(gateway)
    rc, out, err = run("register", "--port", b.usb, "--gateway-config", gateway, cwd=tmp_path)
    assert rc == 0, err
    assert "registered reader %d (building %d, broker user reader-%d)" % (READER, BUILDING, READER) in out
    assert "added reader %d" % READER in err  # the gateway's own lines, passed on
    no_secret(out + err)
    assert list(tmp_path.glob("reader-*.json")) == []  # the temporary file is gone
    assert readers(gateway)[READER]["building_id"] == BUILDING
    # The broker login went into the gateway's broker files, not its password.
    passwd = (gateway.parent / "broker" / "passwd").read_text()
    assert passwd.count("reader-%d:" % READER) == 1 and BROKER_PW not in passwd

    rc, out, err = run("register", "--port", b.usb, "--gateway-config", gateway)
    assert rc == 0, err
    assert "registered already" in err  # the same key: nothing changed


def test_register_refusals_are_one_line(board, tmp_path, gateway):
    b, port = board
    rc, out, err = run("register", "--port", b.usb, "--gateway-config", gateway)
    assert rc == 2 and err.count("\n") == 1
    assert "has no config.json: deploy and configure it first" in err

    configure(b, tmp_path, uplink=False)
    rc, out, err = run("register", "--port", b.usb, "--gateway-config", gateway)
    assert rc == 2 and err.count("\n") == 1
    assert "no uplink in its config.json" in err and "nothing to register with" in err
    no_secret(err)

    # The gateway knows this reader in another building: its refusal, passed through.
    configure(b, tmp_path)
    rc, out, err = run(
        "readers", "add", READER, "--building", BUILDING + 1, "--config", gateway, module="liftcard_gateway"
    )
    assert rc == 0, err
    rc, out, err = run("register", "--port", b.usb, "--gateway-config", gateway)
    assert rc != 0
    lines = err.strip().splitlines()
    assert lines[-1].startswith("liftcard-provision: the gateway refused the reader: ")
    assert "building %d" % (BUILDING + 1) in lines[-1]
    no_secret(out + err)
    assert readers(gateway)[READER]["building_id"] == BUILDING + 1  # unchanged

    rc, out, err = run("register", "--port", b.usb, "--gateway-config", tmp_path / "none.toml")
    assert rc == 2 and err.count("\n") == 1 and "none.toml does not exist" in err


def test_configure_takes_the_gateways_enrolment_file_with_options(board, tmp_path, gateway):
    """The other direction: the operator adds the reader first, the technician
    configures the board from the file the gateway wrote, adding the floors
    and the tariff as options."""
    b, port = board
    enrol = tmp_path / "reader-7.json"
    rc, out, err = run(
        "readers", "add", "7", "--building", "12", "--out", enrol, "--config", gateway, module="liftcard_gateway"
    )
    assert rc == 0, err
    e = loads_enrolment(enrol.read_bytes())
    rc, out, err = run(
        "configure",
        "--port",
        b.usb,
        "--file",
        enrol,
        "--floors",
        "3",
        "--ground-floor",
        "0",
        "--free-classes",
        "exempt",
        "--debounce",
        "30",
        "--fees",
        "0,10,20",
        "--monthly-cap",
        "500",
    )
    assert rc == 0, err
    assert e.key.hex() not in out + err and e.password not in out + err
    assert "reader 7, building 12, 3 floors, gateway %s:%d" % (e.uplink["host"], e.uplink["port"]) in out
    with boardlink.connect(b.usb) as link:
        back = json.loads(link.read_file("config.json"))
    assert back == validate_config(back)
    assert (back["reader_id"], back["building_id"], back["key"]) == (7, 12, e.key.hex())
    assert back["uplink"]["password"] == e.password and back["tariff"]["fee_fen"] == [0, 10, 20]
    assert back["tariff"]["monthly_cap_fen"] == 500
    # What the board now holds registers as the same reader: the gateway changes nothing.
    rc, out, err = run("register", "--port", b.usb, "--gateway-config", gateway)
    assert rc == 0, err
    assert "registered already with this key" in err


_printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@given(
    reader_id=st.integers(1, ID_MAX),
    building_id=st.integers(1, ID_MAX),
    key=st.binary(min_size=32, max_size=32),
    host=_printable,
    password=_printable,
    port=st.integers(1, 65535),
    keepalive=st.integers(4, 3600),
)
def test_the_enrolment_is_the_boards_config_and_configures_it_back(
    reader_id, building_id, key, host, password, port, keepalive
):
    """Whatever valid config a reader holds, its enrolment file carries its
    ids, key and uplink exactly, and a config made from that file (configure
    --file, the tariff as options) gives the reader the same ones back."""
    cfg = validate_config(
        dict(
            CONFIG,
            reader_id=reader_id,
            building_id=building_id,
            key=key.hex(),
            uplink={"host": host, "port": port, "password": password, "keepalive_s": keepalive},
        )
    )
    e = loads_enrolment(register.enrolment(cfg, "/dev/ttyX"))
    assert (e.reader_id, e.building_id, e.key) == (reader_id, building_id, key)
    assert e.uplink == dict(cfg["uplink"], username="reader-%d" % reader_id)
    back = validate_config(
        dict(json.loads(dumps_enrolment(e)), **{k: CONFIG[k] for k in ("floors", "ground_floor", "tariff")})
    )
    assert back == cfg
