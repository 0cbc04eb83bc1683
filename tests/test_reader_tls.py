"""The reader's uplink over TLS (docs/uplink.md, "TLS on the local link"),
end to end and real: a private Mosquitto with the readers' TLS listener
(certificate from a development CA), the virtual reader (firmware under the
real micropython, 192K heap) with `uplink.tls` in its config and the CA's
DER file on its flash, and the gateway daemon storing and acknowledging its
rides.

Checked: rides over TLS reach the daemon's store and its acks the reader's
log; a wrong CA, a wrong server name, a missing or damaged CA file, or the
plain listener: no login at the broker, the reader's STATUS says why and taps
go on (a closed port: the plain link's connect error); a plain reader still
links up on the same broker; the handshake runs in
steps that return while the broker has not answered (the figures it prints go
to docs/board.md); the uplink.tls rules are the same in the firmware and in
liftcard_protocol (hypothesis)."""

import json
import re

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_gateway.broker import find_tool
from liftcard_protocol.errors import ConfigError
from liftcard_protocol.keys import write_private, write_public
from liftcard_protocol.readerconfig import validate_config
from liftcard_testing.daemonrig import daemon_rig, db_acked, db_rides
from liftcard_testing.devpki import issue, make_ca
from liftcard_testing.firmware import run_micropython
from liftcard_testing.logcapture import EventLog
from liftcard_testing.mosquitto import MosquittoInstance, free_port
from liftcard_testing.reader import BUILDING, CARD, CONFIG, KEY, READER, configured_reader
from liftcard_testing.wait import wait_for

try:
    find_tool("mosquitto")
except Exception:  # pragma: no cover
    pytest.skip("mosquitto not installed", allow_module_level=True)

SERVER_NAME = "gw.lift"  # the name on the broker's certificate (beside 127.0.0.1)


def _der(ca) -> bytes:
    return ca.cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("liftcard local link CA")
    key, cert = issue(ca, "liftcard gateway", server_names=("127.0.0.1", SERVER_NAME), client=False)
    write_private(d / "broker.key", key)
    write_public(d / "broker.crt", cert)
    return {"dir": d, "ca": _der(ca), "other_ca": _der(make_ca("another CA"))}


@pytest.fixture
def broker(pki):
    with MosquittoInstance(readers={READER: BUILDING}, tls=(pki["dir"] / "broker.crt", pki["dir"] / "broker.key")) as b:
        yield b


def _password(broker):
    return broker.credentials["reader-%d" % READER]


def _logged_in(broker) -> bool:
    # connection_messages: "New client connected from ... as reader-<id> ..."
    return ("as reader-%d " % READER) in broker.log_path.read_text(errors="replace")


def test_rides_over_tls_are_stored_and_acked_by_the_gateway_daemon(broker, pki, tmp_path):
    with daemon_rig(tmp_path / "gw", broker, {READER: KEY}, EventLog()) as (g, cfg, log, _):
        r = configured_reader(
            tmp_path / "reader",
            "127.0.0.1",
            broker.tls_port,
            _password(broker),
            tls={"server_name": SERVER_NAME},
            ca_der=pki["ca"],
        )
        try:
            wait_for(lambda: r.status()["uplink"] == "up", 30, "the uplink over TLS to come up")
            assert _logged_in(broker)
            for i in range(40):  # more than one batch of 32
                r.tap(CARD if i % 2 else 0x8000000000000000, 5)
            last = r.status()["next_seq"] - 1
            wait_for(lambda: r.status()["acked"] == last, 30, "the daemon's acks for every ride")
            assert db_rides(cfg, READER) == list(range(1, last + 1))
            assert db_acked(cfg, READER) == last
            st_ = r.status()
            assert st_["uplink_error"] is None and st_["uplink_connects"] == 1
            assert r.quit() == 0
        finally:
            r.kill()


@pytest.mark.parametrize(
    "case, why",
    [
        ("other_ca", "tls: The certificate is not correctly signed by the trusted CA"),
        ("wrong_name", "tls: The certificate Common Name (CN) does not match with the expected CN"),
        ("no_ca_file", "tls: no CA file ca.der on flash"),
        ("damaged_ca_file", "tls: CA file ca.der is not a DER certificate"),
        ("plain_listener", "tls: the broker closed the connection in the handshake (a plain MQTT port?)"),
        ("closed_port", "connect failed: "),
    ],
)
def test_no_connection_without_a_trusted_broker_and_taps_go_on(broker, pki, tmp_path, case, why):
    tls, ca, port = {"server_name": SERVER_NAME}, pki["ca"], broker.tls_port
    if case == "other_ca":
        ca = pki["other_ca"]
    elif case == "wrong_name":
        tls = {"server_name": "other.lift"}
    elif case == "no_ca_file":
        ca = None
    elif case == "damaged_ca_file":
        ca = pki["ca"][: len(pki["ca"]) // 2]
    elif case == "plain_listener":
        port = broker.port
    else:
        port = free_port()
    r = configured_reader(tmp_path, "127.0.0.1", port, _password(broker), tls=tls, ca_der=ca)
    try:
        wait_for(lambda: r.status()["uplink_error"], 30, "the uplink's error")
        s = r.status()
        assert s["uplink"] != "up" and s["uplink_error"].startswith(why), s["uplink_error"]
        assert _password(broker) not in json.dumps(s)
        rec = r.tap(CARD, 5)  # offline as before: decided and logged here
        assert rec.result == 0 and rec.seq == 1
        s = r.status()
        assert s["next_seq"] == 2 and s["acked"] == 0
        assert not _logged_in(broker)
        assert r.quit() == 0
    finally:
        r.kill()


def test_a_plain_reader_still_links_up_beside_the_tls_listener(broker, tmp_path):
    r = configured_reader(tmp_path, broker.host, broker.port, _password(broker))
    try:
        wait_for(lambda: r.status()["uplink"] == "up", 30, "the plain uplink to come up")
        assert r.quit() == 0
    finally:
        r.kill()


# The transport alone, under the reader's heap: the handshake's steps against
# the real broker, timed, and the heap the TLS session holds on the
# MicroPython heap. The figures are printed (docs/board.md), never asserted.
_HANDSHAKE = """
import gc, os, select, socket, time, tls
from liftcard.tlsclient import TlsClient as Client
port = int(os.getenv("TLS_PORT"))
ca = open(os.getenv("CA_FILE"), "rb").read()
gc.collect()
free0 = gc.mem_free()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = tls.CERT_REQUIRED
ctx.load_verify_locations(ca)
c = Client(b"reader-%d", "127.0.0.1", port, user=b"reader-%d", password=os.getenv("PW").encode(), keepalive=30)
c.tls = (ctx, "%s")
c.open(socket.getaddrinfo("127.0.0.1", port)[0][-1])
while not c.ready(select.POLLOUT):
    time.sleep_ms(1)
t0 = time.ticks_us()
c.start_tls()
steps = waits = longest = 0
while True:
    t = time.ticks_us()
    done = c.tls_step()
    longest = max(longest, time.ticks_diff(time.ticks_us(), t))
    steps += 1
    if done:
        break
    waits += 1
    time.sleep_ms(1)
total = time.ticks_diff(time.ticks_us(), t0)
while not c.ready(select.POLLIN):
    time.sleep_ms(1)
c.read_connack()
gc.collect()
print("HANDSHAKE steps=%%d returned_waiting=%%d longest_step_us=%%d total_us=%%d heap_held=%%d" %% (
    steps, waits, longest, total, free0 - gc.mem_free()))
c.disconnect()
"""


def test_the_handshake_runs_in_steps_that_never_wait_for_the_broker(broker, pki, tmp_path):
    (tmp_path / "ca.der").write_bytes(pki["ca"])
    (tmp_path / "hs.py").write_text(_HANDSHAKE % (READER, READER, SERVER_NAME))
    p = run_micropython(
        ["hs.py"],
        tmp_path,
        timeout=120,
        env_extra={"TLS_PORT": str(broker.tls_port), "CA_FILE": str(tmp_path / "ca.der"), "PW": _password(broker)},
    )
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    m = re.search(r"HANDSHAKE steps=(\d+) returned_waiting=(\d+)", out)
    print(out.strip())
    # The handshake is several round trips: steps that found nothing to do
    # returned at once instead of waiting for the broker.
    assert m and int(m.group(2)) >= 2
    assert _logged_in(broker)


def _status_text(r):
    reply = r.command("STATUS")
    return json.loads(reply[len("STATUS ") :]) if reply.startswith("STATUS ") else reply


def test_tls_heap_with_the_nfc_stack_and_the_uplink(broker, pki, tmp_path):
    """The measurement of docs/board.md: a reader with the NFC stack (a PN532
    emulator) and its uplink, plain then over TLS, under the 192K heap. The
    plain one links up with room to spare. Over TLS the heap is at its edge
    (docs/board.md, "TLS": whether the link comes up and STATUS finds a
    block for its reply varies from run to run), so what is asserted is what
    holds whatever the heap: taps are decided and logged, and the reader
    answers; the figures are printed."""
    from liftcard_tools.nfc.pn532emu import PN532Emulator

    seen = {}
    for mode in ("plain", "tls"):
        emu = PN532Emulator().start()
        try:
            (tmp_path / mode).mkdir()
            tls = {"server_name": SERVER_NAME} if mode == "tls" else None
            port = broker.tls_port if mode == "tls" else broker.port
            r = configured_reader(
                tmp_path / mode,
                "127.0.0.1",
                port,
                _password(broker),
                tls=tls,
                ca_der=pki["ca"] if tls else None,
                args=("--pn532", emu.path),
            )
            try:

                def up():
                    s = _status_text(r)
                    return isinstance(s, dict) and s["uplink"] == "up"

                if mode == "plain":
                    wait_for(up, 30, "the plain uplink to come up")
                else:
                    try:
                        wait_for(up, 15, "the TLS uplink to come up")
                    except AssertionError:
                        pass  # measured, not promised: see the docstring
                for i in range(5):
                    assert r.tap(CARD, 5).seq == i + 1  # the tap path allocates nothing
                seen[mode] = _status_text(r)
                assert r.quit() == 0
            finally:
                r.kill()
        finally:
            emu.stop()
    plain = seen["plain"]
    assert isinstance(plain, dict) and plain["error"] is None and plain["heap_free"] > 8000
    tls = seen["tls"]
    print(
        "NFC + uplink under 192K: plain heap_free %d; TLS %s"
        % (
            plain["heap_free"],
            "heap_free %d, uplink %s" % (tls["heap_free"], tls["uplink"]) if isinstance(tls, dict) else repr(tls),
        )
    )


# ---- the uplink.tls rules, the same on both sides ----

_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_names = st.text(alphabet=_NAME_CHARS, min_size=1, max_size=32).filter(lambda s: s[0] != ".")
_hosts = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_any = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 70000),
    st.text(alphabet=st.characters(max_codepoint=0x17F, exclude_categories=("Cs",)), max_size=40),
    st.text(alphabet=_NAME_CHARS + " /", max_size=40),
)
_tls = st.one_of(
    st.fixed_dictionaries({}, optional={"ca": _names, "server_name": _hosts}),
    st.fixed_dictionaries({}, optional={"ca": _any, "server_name": _any}),
    _any,
)


def _uplink(tls, port):
    u = {"host": "10.0.7.1", "password": "s3cret", "tls": tls}
    if port is not None:
        u["port"] = port
    return u


@given(tls=st.fixed_dictionaries({}, optional={"ca": _names, "server_name": _hosts}))
def test_a_valid_tls_object_is_normalised_with_its_defaults(tls):
    out = validate_config(dict(CONFIG, uplink=_uplink(tls, None)))["uplink"]
    assert out["port"] == 8883
    assert out["tls"] == {"ca": tls.get("ca", "ca.der"), "server_name": tls.get("server_name", "10.0.7.1")}
    assert validate_config(dict(CONFIG, uplink=out))["uplink"] == out


_FW = """
import json, sys
from liftcard import config
for line in sys.stdin:
    try:
        print(json.dumps({"ok": config.validate(json.loads(line))["uplink"]}))
    except config.ConfigError as e:
        print(json.dumps({"err": str(e)}))
"""


@settings(max_examples=4, deadline=None)
@given(cases=st.lists(st.tuples(_tls, st.one_of(st.none(), st.integers(0, 70000))), min_size=40, max_size=40))
def test_the_firmware_and_liftcard_protocol_agree_on_uplink_tls(tmp_path_factory, cases):
    work = tmp_path_factory.mktemp("fwcfg")
    (work / "v.py").write_text(_FW)
    want, lines = [], []
    for tls, port in cases:
        cfg = dict(CONFIG, uplink=_uplink(tls, port))
        lines.append(json.dumps(cfg))
        try:
            want.append({"ok": validate_config(cfg)["uplink"]})
        except ConfigError as e:
            want.append({"err": str(e)})
    p = run_micropython(["v.py"], work, stdin="\n".join(lines).encode() + b"\n", timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    got = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert got == want
    for w in want:
        assert "s3cret" not in json.dumps(w.get("err", ""))
