"""Reader defects an operator met by hand (firmware/main.py under the real
micropython, 192K heap): a relative MICROPYPATH, a line that starts with a
carriage return, and an oversized config file."""

import json
import os
import socket

import pytest

from liftcard_testing import firmware
from liftcard_testing.reader import CARD, CONFIG, VirtualReader


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def reader(tmp_path):
    with VirtualReader(tmp_path) as r:
        assert r.command("CONFIG " + r.file("config.json", json.dumps(CONFIG).encode())).startswith("OK config")
        yield r


def test_a_relative_micropypath_still_finds_umqtt(tmp_path):
    """The README's by-hand command with MICROPYPATH entries relative to where
    micropython starts: the reader changes into its own filesystem at boot, and
    the uplink's umqtt is imported only at the first config with an uplink."""
    entries = firmware.micropypath().split(os.pathsep)
    rel = os.pathsep.join(os.path.relpath(p, tmp_path) for p in entries)
    assert not any(p.startswith("/") for p in rel.split(os.pathsep))
    with VirtualReader(tmp_path, env=dict(os.environ, MICROPYPATH=rel)) as r:
        cfg = dict(CONFIG, uplink={"host": "127.0.0.1", "port": _closed_port(), "password": "pw-x", "keepalive_s": 10})
        reply = r.command("CONFIG " + r.file("config.json", json.dumps(cfg).encode()))
        assert reply.startswith("OK config reader"), reply
        assert r.quit() == 0


@pytest.mark.parametrize(
    "raw",
    [b"\rSTATUS\n", b"STATUS\r\n", b"\r\rSTATUS\r\n", b"\r STATUS\n"],
    ids=["leading CR", "CRLF", "CRs both ends", "CR then blank"],
)
def test_a_line_with_carriage_returns_is_answered(reader, raw):
    reader.send(raw + b"FROB\n")  # FROB's ERR ends the wait if the line got no reply
    out = reader.until(("STATUS", "ERR"))[-1]
    assert out.startswith("STATUS {"), out
    assert json.loads(out[len("STATUS ") :])["reader_id"] == CONFIG["reader_id"]


def test_a_tap_line_with_a_leading_cr_is_a_tap(reader):
    reader.send(b"\rTAP %016x 0\r\nFROB\n" % CARD)
    out = reader.until(("RIDE ", "ERR"))[-1]
    assert out.startswith("RIDE "), out


def test_an_oversized_config_is_refused_before_it_is_read(reader):
    """A config over the documented limit (firmware liftcard/config.py
    MAX_BYTES, docs/formats.md): one ERR line naming the file and the limit,
    the reader still configured as before, and no MemoryError."""
    before = reader.status()
    big = reader.file("big.json", b" " * (8 * 1024 * 1024) + json.dumps(CONFIG).encode())
    reply = reader.command("CONFIG " + big)
    assert reply.startswith("ERR config: %s is %d bytes, more than the 4096" % (big, os.path.getsize(big))), reply
    assert "memory" not in reply
    after = reader.status()
    assert {k: after[k] for k in ("reader_id", "building_id", "error")} == {
        k: before[k] for k in ("reader_id", "building_id", "error")
    }
    just = reader.file("just.json", json.dumps(CONFIG).encode().ljust(4096))
    assert reader.command("CONFIG " + just).startswith("OK config reader"), "a config of exactly the limit"
    assert reader.quit() == 0
