"""The reader enrolment file (docs/formats.md, "Reader enrolment file"): the
contract between `liftcard-gateway readers add` and the technicians' CLI."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liftcard_protocol.enrolment import dumps_enrolment, enrolment_doc, loads_enrolment, parse_enrolment
from liftcard_protocol.errors import ConfigError
from liftcard_protocol.fields import ID_MAX
from liftcard_protocol.readerconfig import validate_config

KEY = bytes(range(32))
PASSWORD = "s3cret-broker-pw"


def _doc(**over):
    doc = {
        "reader_id": 7,
        "building_id": 12,
        "key": KEY.hex(),
        "uplink": {"host": "192.168.4.1", "port": 1883, "username": "reader-7", "password": PASSWORD},
    }
    doc.update(over)
    return doc


def test_the_documented_example_parses():
    e = parse_enrolment(_doc())
    assert (e.reader_id, e.building_id, e.key) == (7, 12, KEY)
    assert e.username == "reader-7" and e.password == PASSWORD
    assert e.uplink == {
        "host": "192.168.4.1",
        "port": 1883,
        "username": "reader-7",
        "password": PASSWORD,
        "keepalive_s": 60,
    }
    assert PASSWORD not in repr(e) and KEY.hex() not in repr(e)


def test_an_enrolment_is_a_fragment_of_a_reader_config():
    e = parse_enrolment(_doc())
    cfg = dict(e.doc(), floors=3, ground_floor=0)
    cfg["tariff"] = {"fee_fen": [0, 10, 20], "free_classes": [], "monthly_cap_fen": 0, "debounce_s": 30}
    out = validate_config(cfg)
    assert out["key"] == KEY.hex() and out["uplink"]["password"] == PASSWORD


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d.pop("reader_id"), "reader_id"),
        (lambda d: d.update(reader_id=0), "reader_id"),
        (lambda d: d.update(reader_id=True), "reader_id"),
        (lambda d: d.update(building_id=ID_MAX + 1), "building_id"),
        (lambda d: d.update(key="zz" * 32), "key"),
        (lambda d: d.update(key=KEY.hex()[:-2]), "key"),
        (lambda d: d.pop("key"), "key"),
        (lambda d: d.pop("uplink"), "uplink"),
        (lambda d: d.update(uplink=[]), "uplink"),
        (lambda d: d["uplink"].pop("username"), "uplink.username"),
        (lambda d: d["uplink"].update(username="reader-8"), "uplink.username"),
        (lambda d: d["uplink"].update(password=""), "uplink.password"),
        (lambda d: d["uplink"].update(password="bad\npassword"), "uplink.password"),
        (lambda d: d["uplink"].update(host="has space"), "uplink.host"),
        (lambda d: d["uplink"].update(port=0), "uplink.port"),
        (lambda d: d.update(floors=3), "floors"),
    ],
)
def test_refusals_name_the_key_never_the_value(mutate, key):
    d = _doc()
    d["uplink"]["password"] = "pw-" + "q" * 20
    mutate(d)
    with pytest.raises(ConfigError) as ei:
        parse_enrolment(d)
    assert ei.value.key == key
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("enrolment: ")
    assert "q" * 20 not in msg and KEY.hex() not in msg and "zz" not in msg


def test_not_json_and_not_an_object():
    for text in (b"", b"{", b"[1]", b"\xff\xfe", "x" * 70000):
        with pytest.raises(ConfigError):
            loads_enrolment(text)


_printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)


@given(
    reader_id=st.integers(1, ID_MAX),
    building_id=st.integers(1, ID_MAX),
    key=st.binary(min_size=32, max_size=32),
    host=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=253),
    password=_printable,
    port=st.integers(1, 65535),
)
def test_round_trip(reader_id, building_id, key, host, password, port):
    doc = enrolment_doc(reader_id, building_id, key, host, password, port=port)
    assert doc["uplink"]["username"] == "reader-%d" % reader_id
    e = loads_enrolment(dumps_enrolment(parse_enrolment(doc)))
    assert (e.reader_id, e.building_id, e.key, e.password, e.uplink["host"], e.uplink["port"]) == (
        reader_id,
        building_id,
        key,
        password,
        host,
        port,
    )
    assert json.loads(dumps_enrolment(e)) == doc


def test_uppercase_key_is_normalised():
    e = parse_enrolment(_doc(key=KEY.hex().upper()))
    assert e.doc()["key"] == KEY.hex()
