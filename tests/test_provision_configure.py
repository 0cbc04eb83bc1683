"""liftcard-provision configure: where the secrets come from
(docs/technicians.md, "Configure it").

A secret comes from the file or from the environment. A variable exported
for the reader before must not quietly replace the one in the gateway's
enrolment file (the reader would then never log in), nor give a Wi-Fi or an
uplink that has no address; a missing secret names where it comes from; and
`--new-key` gives a new reader its key without anyone typing one."""

import json
import re

import pytest

pytest.importorskip("mpremote")

from liftcard_protocol.readerconfig import validate_config
from liftcard_provisioning import boardlink, cli
from liftcard_provisioning.boardlink import BoardError
from liftcard_provisioning.configure import build_config
from liftcard_testing.reader import CONFIG
from liftcard_testing.ttyline import TtyLines
from liftcard_testing.virtualboard import VirtualBoard

FILE_PW = "gateway-made-pw-Lk20"
OLD_PW = "exported-for-the-last-reader-9x"
NEW_KEY = "ab" * 32


def args(*argv):
    return cli.build_parser().parse_args(["configure", *argv])


def enrolment(tmp_path):
    """What `liftcard-gateway readers add --out` hands the technician."""
    f = tmp_path / "reader-1017.json"
    doc = {k: CONFIG[k] for k in ("reader_id", "building_id", "key")}
    doc["uplink"] = {"host": "192.168.4.1", "port": 1883, "password": FILE_PW}
    f.write_text(json.dumps(doc))
    return f


TARIFF = ["--floors", "7", "--ground-floor", "0", "--fees", "0,0,10,20,30,40,50", "--free-classes", "exempt"]
TARIFF += ["--debounce", "30", "--monthly-cap", "3000"]


def test_the_files_secret_is_not_replaced_by_a_stale_variable(tmp_path):
    f = enrolment(tmp_path)
    with pytest.raises(BoardError) as e:
        build_config(args("--file", str(f), *TARIFF), env={"LIFTCARD_BROKER_PASSWORD": OLD_PW})
    msg = str(e.value)
    assert "LIFTCARD_BROKER_PASSWORD" in msg and "broker password" in msg and "nothing written" in msg
    assert OLD_PW not in msg and FILE_PW not in msg
    with pytest.raises(BoardError, match="LIFTCARD_READER_KEY"):
        build_config(args("--file", str(f), *TARIFF), env={"LIFTCARD_READER_KEY": NEW_KEY})
    # the same value twice is no conflict; the file alone is the file
    same = build_config(args("--file", str(f), *TARIFF), env={"LIFTCARD_BROKER_PASSWORD": FILE_PW})
    assert same["uplink"]["password"] == FILE_PW
    assert build_config(args("--file", str(f), *TARIFF), env={}) == same


def test_a_password_with_nothing_to_join_names_the_option(tmp_path):
    f = enrolment(tmp_path)
    with pytest.raises(BoardError) as e:
        build_config(args("--file", str(f), *TARIFF), env={"LIFTCARD_WIFI_PASSWORD": "wifi-pass-123"})
    assert "LIFTCARD_WIFI_PASSWORD is set but the config has no wifi: pass --wifi-ssid" in str(e.value)
    cfg = build_config(
        args("--file", str(f), *TARIFF, "--wifi-ssid", "LiftNet"), env={"LIFTCARD_WIFI_PASSWORD": "w" * 9}
    )
    assert cfg["wifi"] == {"ssid": "LiftNet", "password": "w" * 9}
    with pytest.raises(BoardError, match="has no uplink: pass --gateway"):
        build_config(args("--reader-id", "5", "--building-id", "1", *TARIFF), env={"LIFTCARD_BROKER_PASSWORD": "pw"})


def test_a_missing_key_says_where_a_key_comes_from():
    with pytest.raises(BoardError) as e:
        build_config(args("--reader-id", "5", "--building-id", "1", *TARIFF), env={})
    assert "key is missing" in str(e.value) and "LIFTCARD_READER_KEY" in str(e.value)


def test_new_key_is_random_and_refused_beside_a_given_key(tmp_path):
    a = args("--new-key", "--reader-id", "5", "--building-id", "1", *TARIFF)
    k1, k2 = build_config(a, env={})["key"], build_config(a, env={})["key"]
    assert re.fullmatch("[0-9a-f]{64}", k1) and k1 != k2
    with pytest.raises(BoardError, match="--new-key, but the key is given already"):
        build_config(a, env={"LIFTCARD_READER_KEY": NEW_KEY})


def test_new_key_goes_to_the_board_and_nowhere_else(tmp_path, capsys):
    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        argv = ["configure", "--port", b.usb, "--new-key", "--reader-id", "1017", "--building-id", "12", *TARIFF]
        assert cli.main(argv) == 0
        out, err = capsys.readouterr()
        port.until("READY")
        with boardlink.connect(b.usb) as link:
            cfg = validate_config(json.loads(link.read_file("config.json")))
    assert cfg["reader_id"] == 1017 and re.fullmatch("[0-9a-f]{64}", cfg["key"])
    assert cfg["key"] not in out + err and cfg["key"].upper() not in out + err
    assert "key" in out and "not shown" in out
