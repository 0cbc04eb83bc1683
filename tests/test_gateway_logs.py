"""Logging (liftcard_gateway.logs) and the MQTT client set-up
(liftcard_gateway.mqttservice): JSON lines with "ts" and "event", paho's
diagnostics in the same journal, and no secret in any line."""

import io
import json
import logging
import socket
import threading

import pytest

from liftcard_gateway import logs
from liftcard_gateway.mqttservice import MqttSettings, make_client
from liftcard_gateway.tomlconf import Secret


@pytest.fixture
def journal():
    """logs.setup() into a buffer; the `liftcard` logger as it was afterwards."""
    root = logging.getLogger(logs.ROOT)
    saved = (list(root.handlers), root.level, root.propagate)
    out = io.StringIO()

    def setup(level=logging.INFO):
        logs.setup(out, level)
        return out

    yield setup
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def test_an_event_is_one_json_line_with_ts_event_then_its_fields(journal):
    out = journal()
    log = logs.events("liftcard.test")
    log("stored", reader_id=7, rides=3, corrected=0)
    log("refused", reader_id=None, reason="topic", topic="lc/x")
    log("status", secret=Secret(b"k" * 32))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == ["ts", "event", "reader_id", "rides", "corrected"]
    assert first["event"] == "stored" and isinstance(first["ts"], float)
    assert lines[0].startswith('{"ts":') and '"event":"stored","reader_id":7,' in lines[0]
    assert json.loads(lines[1])["reason"] == "topic"
    assert "kkkk" not in out.getvalue() and "Secret(<hidden>)" in lines[2]


def test_other_loggers_reach_the_same_journal_without_tracebacks(journal):
    out = journal()
    other = logging.getLogger("liftcard.test.paho")
    other.error("failed to receive on socket: %s", "reset")
    try:
        raise ConnectionResetError("peer")
    except ConnectionResetError:
        other.exception("lost")
    a, b = [json.loads(x) for x in out.getvalue().splitlines()]
    assert a["event"] == "log" and a["logger"] == "liftcard.test.paho" and a["level"] == "error"
    assert a["message"] == "failed to receive on socket: reset"
    assert b["error"] == "ConnectionResetError" and "Traceback" not in out.getvalue()


def test_memory_log_keeps_the_events():
    log = logs.MemoryLog()
    ev = logs.events(log)
    ev("stored", reader_id=7)
    assert log.records == [{"event": "stored", "reader_id": 7}]
    assert log.wait(lambda r: r["event"] == "stored")["reader_id"] == 7


def test_paho_logs_to_the_journal_and_never_the_password(journal):
    """paho's own DEBUG diagnostics of a CONNECT that carries a password."""
    password = "pw-" + "9f3a" * 8
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    def serve():
        c, _ = srv.accept()
        c.settimeout(5)
        try:
            while password.encode() not in got:
                data = c.recv(4096)
                if not data:
                    break
                got.extend(data)
        finally:
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = journal(logging.DEBUG)
    try:
        s = MqttSettings("127.0.0.1", srv.getsockname()[1], "gw-test", username="gateway", password=Secret(password))
        assert password not in repr(s)
        c = make_client(s, logging.getLogger("liftcard.test"))
        c.connect(s.host, s.port, s.keepalive)
        for _ in range(5):
            c.loop(0.05)
        t.join(5)
        c.disconnect()
    finally:
        srv.close()
    assert password.encode() in got  # it did go to the broker
    text = out.getvalue()
    assert '"logger":"liftcard.test.paho"' in text and "Sending CONNECT" in text
    assert password not in text
