"""A minimal real gateway in CPython for the virtual reader's uplink tests:
paho-mqtt as user `gateway`, it verifies every RIDES message with
liftcard_protocol.link (replay guard included), keeps the rides by seq and
acks them; it records STATUS heartbeats and Last Wills, and sends sealed
down messages on demand."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho

from liftcard_protocol import link as U

from .reader import BUILDING, KEY, READER


class MiniGateway:
    """A minimal real gateway: verifies RIDES, keeps them by seq, acks."""

    def __init__(self, broker, key=KEY, reader=READER, building=BUILDING):
        self.key, self.reader, self.building = key, reader, building
        self.rides = {}  # seq -> packed record
        self.statuses = []
        self.wills = []
        self.refused = []
        self.guard = U.ReplayGuard()
        self.msgno = 0
        self.lock = threading.Lock()
        self.down = broker.topics(reader)["down"]
        c = self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="gw-test")
        c.username_pw_set("gateway", broker.credentials["gateway"])
        c.reconnect_delay_set(0.2, 1)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.connected = threading.Event()
        c.connect(broker.host, broker.port, keepalive=10)
        c.loop_start()
        try:
            assert self.connected.wait(10), "the test gateway could not connect"
        except BaseException:
            self.close()
            raise

    def _on_connect(self, client, userdata, flags, rc, props=None):
        client.subscribe([("lc/+/+/up", 1), ("lc/+/+/status", 1)])
        self.connected.set()

    def _on_message(self, client, userdata, m):
        key, rid, bid = self.key, self.reader, self.building
        with self.lock:
            if m.topic.endswith("/status"):
                if m.payload[:4] == U.MAGIC:
                    msg = U.parse(key, m.payload, rid, bid, U.UP)
                    self.statuses.append(msg.status)
                else:
                    self.wills.append(m.payload)
                return
            try:
                msg = self.guard.open(key, m.payload, rid, bid, U.UP)
            except Exception as e:
                self.refused.append(str(e))
                return
            self.guard.accept(rid, msg.counter)
            for r in msg.rides:
                self.rides[r.seq] = r.pack()
            if msg.rides:
                upto = msg.rides[-1].seq
                self.msgno += 1
                ack = U.build_ack(key, rid, bid, U.counter_of(7, self.msgno), upto)
                client.publish(self.down, ack, qos=1)

    def send(self, build, *args):
        with self.lock:
            self.msgno += 1
            msg = build(self.key, self.reader, self.building, U.counter_of(7, self.msgno), *args)
        self.c.publish(self.down, msg, qos=1).wait_for_publish(5)
        return msg

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
