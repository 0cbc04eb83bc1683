"""Does this broker accept me? One MQTT 3.1.1 CONNECT with paho-mqtt (the
project's one MQTT client), its CONNACK, then DISCONNECT.

The brokers' readiness checks use it with an identity of their own (`probe`):
both brokers make the client id the username (use_username_as_clientid), so a
probe connecting as the gateway or the ledger would take over their session.
"""

from __future__ import annotations

import secrets
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt


def connack(
    host: str,
    port: int,
    user: str | None = None,
    password: str | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = 2.0,
) -> int:
    """The CONNACK of one clean-session CONNECT: 0 when accepted, otherwise
    the refusal's reason code as paho reports it (e.g. 134 bad user name or
    password, 135 not authorised). Raises OSError (ssl.SSLError included) when
    the broker is not reachable, the TLS handshake fails, or the connection
    ends or stays silent without a CONNACK."""
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="lc-probe-%s" % secrets.token_hex(6),
        protocol=mqtt.MQTTv311,
        clean_session=True,
        reconnect_on_failure=False,
    )
    c.connect_timeout = timeout
    if user is not None:
        c.username_pw_set(user, password)
    if tls is not None:
        c.tls_set_context(tls)
    got = []
    c.on_connect = lambda client, userdata, flags, reason, props: got.append(reason)
    c.connect(host, port, keepalive=max(5, int(timeout) + 1))  # TCP (and TLS) now: OSError here
    try:
        end = time.monotonic() + timeout
        while not got:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no CONNACK from %s:%d within %gs" % (host, port, timeout))
            if c.loop(min(left, 0.2)) != mqtt.MQTT_ERR_SUCCESS and not got:
                raise ConnectionError("the broker closed the connection before CONNACK")
        return 0 if not got[0].is_failure else got[0].value
    finally:
        c.disconnect()  # DISCONNECT when connected; closes the socket either way


def tls_connack(host: str, port: int, ca: Path, cert: Path | None, key: Path | None, timeout: float = 2.0) -> int:
    """connack() over TLS with the given client certificate (None: none),
    verifying the broker against `ca`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return connack(host, port, tls=ctx, timeout=timeout)
