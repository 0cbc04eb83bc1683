"""One MQTT client set-up for every long-running program: the daemon's link to
the local broker (daemon.py), the upstream to the bank broker (upstream.py)
and the reference ledger (liftcard_tools.ledger).

`MqttSettings` says where and as whom; `make_client()` turns it into a paho-mqtt
2.x client (CallbackAPIVersion.VERSION2): client id, MQTT 3.1.1 or 5, a
persistent session (`clean_session` false; with MQTT 5 `clean_start` false and
a session that never expires, so the broker queues QoS 1 messages while the
program is away), a username and password or a TLS client certificate,
reconnect back-off, in-flight window, and paho's own logger wired to
`<logger>.paho` (logs.py).

`MqttService` keeps one such client connected and subscribed: `start()`
(connect_async + loop_start: it keeps reconnecting by itself), at every
CONNACK it (re)subscribes and calls `on_connect(session_present)`, then logs
`<prefix>connected`; `<prefix>subscribed` when the SUBACK arrives
(`wait_ready()` waits for it); `<prefix>disconnected` (with the reason) when
the link drops, unless it is stopping; `<prefix>broker_refused` for a refused
CONNACK. Messages go to `on_message(topic, payload)` on paho's thread; an
exception there is logged as `<prefix>error` and the loop goes on. `stop()`
disconnects cleanly and joins paho's thread. Passwords never reach a log line
or a repr.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .logs import EventLog

SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 Session Expiry Interval


@dataclass(frozen=True)
class TlsFiles:
    """A TLS client: the CA that signed the broker's certificate, and this
    client's certificate and (unencrypted, mode 0600) key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    keepalive: int = 30
    protocol: str = "3.1.1"  # or "5"
    persistent: bool = True  # a session the broker keeps while the client is away
    username: str | None = None
    password: object = field(default=None, repr=False)  # a config.Secret (or None)
    tls: TlsFiles | None = None
    reconnect_delay: tuple[int, int] = (1, 30)  # seconds: first, most
    max_inflight: int | None = None  # paho's default (20) when None


def _secret_value(v):
    return getattr(v, "value", v)


class _PahoLog(logging.LoggerAdapter):
    """paho's diagnostics, to `<logger>.paho`, except while the service stops:
    paho 2.2's loop thread outlives a clean disconnect by one turn and logs
    "Client is not connected" as an error, which is none."""

    def __init__(self, logger: logging.Logger, quiet: threading.Event | None):
        super().__init__(logger, {})
        self._quiet = quiet

    def log(self, level, msg, *args, **kwargs):
        if self._quiet is None or not self._quiet.is_set():
            super().log(level, msg, *args, **kwargs)


def make_client(
    s: MqttSettings, logger: logging.Logger | None = None, quiet: threading.Event | None = None
) -> mqtt.Client:
    """A paho client set up from s (module docstring); not connected yet. paho
    logs to logger's child `paho`, unless `quiet` is set."""
    v5 = s.protocol == "5"
    if s.protocol not in ("3.1.1", "5"):
        raise ValueError('protocol must be "3.1.1" or "5"')
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=s.client_id,
        clean_session=None if v5 else not s.persistent,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    if s.tls is not None:
        c.tls_set(
            ca_certs=str(s.tls.ca_file),
            certfile=str(s.tls.cert_file),
            keyfile=str(s.tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if s.username is not None:
        c.username_pw_set(s.username, None if s.password is None else _secret_value(s.password))
    c.reconnect_delay_set(*s.reconnect_delay)
    if s.max_inflight is not None:
        c.max_inflight_messages_set(s.max_inflight)
    if logger is not None:
        c.enable_logger(_PahoLog(logger.getChild("paho"), quiet))
    return c


def connect_kwargs(s: MqttSettings) -> dict:
    """The extra arguments of connect()/connect_async() for s: with MQTT 5, the
    persistent session is asked for at each CONNECT."""
    if s.protocol != "5":
        return {}
    props = Properties(PacketTypes.CONNECT)
    if s.persistent:
        props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
    return {"clean_start": not s.persistent, "properties": props}


class MqttService:
    """One client kept connected and subscribed (module docstring).

    subscriptions: [(topic filter, qos), ...], subscribed at every connect.
    log: an EventLog (logs.events); event names get `prefix` in front."""

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions,
        log: EventLog,
        on_message: Callable[[str, bytes], None],
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        prefix: str = "",
    ):
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self.log = log
        self.prefix = prefix
        self._on_message_cb = on_message
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self.client = make_client(settings, log.logger, quiet=self._stopping)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def __repr__(self) -> str:  # no credentials
        return "<MqttService %s@%s:%d>" % (self.settings.client_id, self.settings.host, self.settings.port)

    # -- running ----------------------------------------------------------------------
    def start(self) -> "MqttService":
        self._stopping.clear()
        s = self.settings
        self.client.connect_async(s.host, s.port, s.keepalive, **connect_kwargs(s))
        self.client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect (no `disconnected` line for it) and join paho's thread."""
        self._stopping.set()
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once connected and subscribed (again, after a reconnect)."""
        return self._subscribed.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    # -- paho's thread ----------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.log(self.prefix + "broker_refused", reason=str(reason_code))
            return
        if self.subscriptions:
            client.subscribe(self.subscriptions)
        session_present = bool(getattr(flags, "session_present", False))
        if self._on_connect_cb is not None:
            self._on_connect_cb(session_present)
        self.log(
            self.prefix + "connected", host=self.settings.host, port=self.settings.port, session_present=session_present
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._subscribed.set()
        self.log(self.prefix + "subscribed", topics=[t for t, _ in self.subscriptions])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._subscribed.clear()
        if self._on_disconnect_cb is not None:
            self._on_disconnect_cb()
        if not self._stopping.is_set():
            self.log(self.prefix + "disconnected", reason=str(reason_code))

    def _on_message(self, client, userdata, msg):
        try:
            self._on_message_cb(msg.topic, bytes(msg.payload))
        except Exception as e:  # never let one message stop the loop
            self.log(self.prefix + "error", topic=msg.topic, error=type(e).__name__)
