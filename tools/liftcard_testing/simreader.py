"""A simulated reader in CPython: it speaks the link format (liftcard_protocol.link)
over a real broker as its own user `reader-<id>`, reads its down topic and
checks every down message (MAC, direction, growing counter) as a reader does."""

from __future__ import annotations

import queue
import threading
import uuid

import paho.mqtt.client as mqtt

from liftcard_protocol import link
from liftcard_protocol.ride import RideRecord
from liftcard_protocol.topics import reader_topics

CARD = 0xFEDCBA9876543210  # the card of every ride a SimReader sends


class SimReader:
    """A reader speaking the link format over the real broker with its own user.
    `bid` defaults to the reader's building in the broker's reader list."""

    def __init__(self, broker, rid, key, boot=1, bid=None):
        self.rid, self.bid, self.key = rid, bid if bid is not None else broker.readers[rid], key
        self.topics = reader_topics(self.bid, rid)
        self.boot, self.msgno = boot, 0
        self.last_down = 0
        self.acks = queue.Queue()
        self.sun = queue.Queue()  # the entries of each down SUNCTR
        self.resends = queue.Queue()  # the from_seq of each RESEND
        self.times = queue.Queue()  # the epoch_s of each TIME
        self._sub = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{rid}-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311
        )
        c.username_pw_set(f"reader-{rid}", broker.credentials[f"reader-{rid}"])
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._sub.set()
        c.on_connect = lambda cl, *a: cl.subscribe(self.topics["down"], qos=1)
        self.client = c
        c.connect(broker.host, broker.port, 30)
        c.loop_start()
        try:
            assert self._sub.wait(10), "reader %d: no SUBACK for its down topic" % rid
        except BaseException:
            self.close()
            raise

    def _on_message(self, client, userdata, msg):
        m = link.parse(self.key, msg.payload, self.rid, self.bid, link.DOWN, self.last_down)
        self.last_down = m.counter
        if m.kind == link.SUNCTR_DOWN:
            self.sun.put(m.sun)
        elif m.kind == link.RESEND:
            self.resends.put(m.from_seq)
        elif m.kind == link.TIME:
            self.times.put(m.epoch_s)
        else:
            self.acks.put(m.seq)

    def counter(self):
        self.msgno += 1
        return link.counter_of(self.boot, self.msgno)

    def rides_msg(self, seqs, counter=None):
        recs = [
            RideRecord(
                seq=s,
                time=5000 + s,
                uptime=s,
                card_id=CARD,
                household=7,
                floor=4,
                fee=40,
                result=0,
                flags=0,
                boot=self.boot,
            )
            for s in seqs
        ]
        return link.build_rides(self.key, self.rid, self.bid, counter or self.counter(), recs)

    def publish(self, payload, topic="up"):
        self.client.publish(self.topics[topic], payload, qos=1).wait_for_publish(10)

    def send(self, seqs):
        self.publish(self.rides_msg(seqs))

    def send_status(self, acked_seq=None, oldest_seq=None, backlog=0, boot=None):
        """A heartbeat; with acked_seq and oldest_seq, as firmware that reports
        its log's ack mark and the oldest seq it holds (36 bytes)."""
        st = link.ReaderStatus(
            60, 100000, backlog, 0, boot=self.boot if boot is None else boot, acked_seq=acked_seq, oldest_seq=oldest_seq
        )
        self.publish(link.build_status(self.key, self.rid, self.bid, self.counter(), st), topic="status")

    def ack(self, timeout=10):
        return self.acks.get(timeout=timeout)

    def no_ack(self, wait=0.5):
        """No ack arrives within `wait` s (AssertionError if one does)."""
        try:
            seq = self.acks.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError("reader %d got an ack up to %d" % (self.rid, seq))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
