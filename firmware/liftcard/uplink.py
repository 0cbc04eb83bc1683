# The reader's MQTT uplink (docs/uplink.md, "Reader side"): the link state
# machine. The transport is mqttclient.Client (micropython-lib umqtt.simple
# with its blocking parts replaced), the down replay state on flash is
# replaystate.py, the payloads are uplinkcodec.py.
#
# Promise 1: a hung, dead or hostile broker never delays a tap. So:
# - the uplink only runs from Reader.idle(), in small steps (step()), never
#   from the tap path;
# - the TCP connect is non-blocking and CONNACK is awaited by polling across
#   steps, so a broker that accepts and never answers costs nothing;
# - every socket read/write has a short timeout, and a read is only started
#   once poll() says a byte is there (mqttclient.py);
# - every exception from umqtt (OSError, its asserts, MQTTException, ...) is
#   caught here and turns into "link down, reconnect with backoff";
# - our own PINGREQ every keepalive/2 (umqtt.simple never pings, so the broker
#   would never fire the Last Will), and a link with nothing received for a
#   whole keepalive is declared dead;
# - the packet id wraps at 65535 (umqtt.simple's grows without bound);
# - the subscription to `down` is renewed after every reconnect;
# - over TLS (the config's uplink.tls), the handshake runs in steps from
#   idle(), one per call, each only the crypto of what has arrived (a step
#   that verifies the broker's certificate and makes the session key is the
#   longest: docs/board.md, "TLS"); a certificate or name the CA file does not
#   vouch for is last_error E_TLS, and the link tries again with backoff.
#
# Rides: at most one RIDES batch (<= 32 unacked records) in flight; resent
# after _ACK_WAIT_MS or a reconnect; the gateway's ACK (MAC and replay checked
# by the codec) moves the log's ack mark.
#
# RESEND (docs/uplink.md): a gateway whose database lacks rides this reader
# had acknowledged (a backup restored) names the first seq it lacks; the
# records still on flash from there are sent again, in order, one batch per
# ACK (which moves nothing: they are acknowledged already), then the unacked
# backlog as usual. What the log no longer holds is not sent: the heartbeat's
# oldest_seq tells the gateway where that gap ends. A replayed RESEND only
# costs duplicates, which the gateway drops, so it is not saved to flash. Up messages go with QoS 0: the
# application ACK is the delivery guarantee, and a QoS 1 PUBACK would be a
# blocking round trip inside umqtt.publish().
#
# NTAG SUN counters (SUNCTR, docs/uplink.md): the counters taps accepted here
# go up in batches of <= 64 when no RIDES batch is due, best effort (QoS 0, no
# acknowledgement, not resent); the gateway forwards them to the building's
# other readers and sends this reader the building's table at each
# (re)connect. A SUNCTR from the gateway is merged into the table with max().

import gc
import select
import socket

from micropython import const

from . import VERSION, replaystate, ridelog, wlcap
from . import uplinkcodec as uc
from .mqttclient import Client, MQTTException

_CONNECT_MS = const(5000)  # TCP connect + CONNACK + SUBACK
_ACK_WAIT_MS = const(10000)
_STATUS_MS = const(60000)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_MAX_IN = const(4)  # down messages handled per step

# The firmware's version for the heartbeat, parsed once: "0.1.0" -> (0, 1, 0).
_FW = tuple(int(x) for x in VERSION.split("."))

# state
S_DOWN = const(0)  # waiting for the next connect attempt
S_TCP = const(1)  # TCP connect in progress
S_TLS = const(2)  # TLS handshake in progress (CONNECT goes with its end)
S_CONNACK = const(3)  # CONNECT sent, waiting for CONNACK (tlsclient.py has a copy, as of E_TLS)
S_SUBACK = const(4)  # connected, SUBSCRIBE sent
S_UP = const(5)  # subscribed: rides and status flow
STATE_NAMES = ("down", "connecting", "connecting", "connecting", "subscribing", "up")

# last_error codes (STATUS byte 20)
E_NONE = const(0)
E_CONNECT = const(1)  # TCP connect refused / timed out, no CONNACK
E_REFUSED = const(2)  # CONNACK with a refusal code (bad user/password)
E_IO = const(3)  # the link broke: timeout, reset, EOF, protocol error
E_MESSAGE = const(4)  # a down message was refused (MAC, replay, ...)
E_APPLY = const(5)  # a down message verified but could not be applied
E_TLS = const(6)  # TLS: no usable CA file, or the broker's certificate or name refused


class Uplink:
    # One per reader; step() from Reader.idle().

    def __init__(self, reader, ucfg):
        self.reader = reader
        cfg = reader.cfg
        rid = cfg["reader_id"]
        bid = cfg["building_id"]
        base = "lc/%d/reader-%d/" % (bid, rid)
        self.t_up = (base + "up").encode()
        self.t_status = (base + "status").encode()
        self.t_down = (base + "down").encode()
        self.host = ucfg["host"]
        self.port = ucfg["port"]
        self.keepalive_ms = ucfg["keepalive_s"] * 1000
        self.tls = ucfg.get("tls")  # {"ca": file on flash, "server_name": ...}; None: plain MQTT
        # The codec, and with it the up counter (the CTR nonce), lives as long
        # as the boot, not this Uplink: a reconfigure that made a new one
        # would count from 0 again and reuse keystream (docs/uplink.md).
        codec = reader.link_codec
        if codec is None:
            codec = reader.link_codec = uc.Codec(cfg["key"], rid, bid, reader.boot_count)
            replaystate.load(codec)
        else:
            codec.configure(cfg["key"], rid, bid)
        self.codec = codec
        self.wlrecv = None  # wlrecv.WlRecv, made at the first WHITELIST chunk
        name = ("reader-%d" % rid).encode()
        cls = Client
        if self.tls is not None:
            from .tlsclient import TlsClient as cls
        c = self.client = cls(
            name, self.host, self.port, user=name, password=ucfg["password"].encode(), keepalive=ucfg["keepalive_s"]
        )
        c.set_last_will(self.t_status, b"offline", retain=False, qos=1)
        c.set_callback(self._on_msg)
        c.inbuf_size = uc.MAX_MSG
        try:
            c.inbuf = bytearray(uc.MAX_MSG)  # where down messages are read and decrypted
        except MemoryError:
            gc.collect()  # made at the first down message instead
        c.poller = None
        self._addr = None
        self.state = S_DOWN
        self._due = reader.board.ticks_ms()
        self._deadline = 0
        self._backoff = _BACKOFF_MIN_MS
        self._sub_pid = 0
        self._inflight = 0  # last seq of the batch in flight (0: none)
        self._resend = 0  # next acknowledged seq to send again after a RESEND (0: none)
        self._sent_ms = 0
        self._last_ping = 0
        self._last_rx = 0
        self._status_ms = 0
        self.last_error = E_NONE
        self.error_text = None
        self.connects = 0
        self.batches = 0
        self.acks = 0
        self.refused = 0
        self.resends = 0  # RESEND messages obeyed
        self.sun_sent = 0  # SUN counters sent up
        self.sun_merged = 0  # SUN counters from the gateway that raised this reader's

    # ---- the step ----

    def step(self):
        # A bounded amount of work; never raises.
        b = self.reader.board
        ms = b.ticks_ms()
        try:
            st = self.state
            if st == S_DOWN:
                if b.ticks_diff(ms, self._due) >= 0:
                    self._connect(ms)
            elif st == S_TCP:
                if self.client.ready(select.POLLOUT):
                    try:
                        if self.tls is not None:
                            self.client.start_tls()
                            self.state = S_TLS
                            return
                        self.client.send_connect()  # raises if the connect failed
                    except OSError as e:
                        self._fail(ms, E_CONNECT, "connect failed: %r" % (e,))
                        return
                    self.client.want_read()
                    self.state = S_CONNACK
                elif b.ticks_diff(ms, self._deadline) >= 0:
                    self._fail(ms, E_CONNECT, "connect timed out")
            elif st == S_TLS:
                self.client.tls_poll(self, ms)  # tlsclient.py: a plain reader never loads it
            elif st == S_CONNACK:
                if self.client.ready(select.POLLIN):
                    try:
                        self.client.read_connack()
                    except MQTTException as e:
                        self._fail(ms, E_REFUSED, "broker refused: %s" % e.args[0])
                        return
                    self._sub_pid = self.client.send_subscribe(self.t_down, 1)
                    self._last_rx = self._last_ping = ms
                    self._deadline = ms + _CONNECT_MS
                    self.state = S_SUBACK
                elif b.ticks_diff(ms, self._deadline) >= 0:
                    self._fail(ms, E_CONNECT, "no CONNACK")
            else:
                self._receive(ms)
                if self.state == S_SUBACK:
                    if b.ticks_diff(ms, self._deadline) >= 0:
                        self._fail(ms, E_CONNECT, "no SUBACK")
                elif self.state == S_UP:
                    self._keepalive(ms)
                    if self.state == S_UP and not self._send_rides(ms) and not self._send_sun():
                        self._send_status(ms, False)
        except MemoryError:
            gc.collect()
            self._fail(ms, E_IO, "out of memory")
        except Exception as e:
            # OSError, umqtt's asserts, IndexError from a short read, ...
            self._fail(ms, E_IO, "link: %r" % (e,))

    def _connect(self, ms):
        if self.tls is not None and not self.client.prepare(self, ms):
            return
        if self._addr is None:
            # An IP literal resolves at once; a name may block on DNS (once).
            self._addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        self.client.close()
        self.client.open(self._addr)
        self.state = S_TCP
        self._deadline = ms + _CONNECT_MS
        self.connects += 1

    def _fail(self, ms, code, text):
        self.client.close()
        self.state = S_DOWN
        self.last_error = code
        self.error_text = text
        self._due = ms + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)
        self._inflight = 0  # resend after reconnect

    def _receive(self, ms):
        c = self.client
        for _ in range(_MAX_IN):
            if self.state < S_SUBACK or not c.ready(select.POLLIN):
                return
            op = c.wait_msg()
            self._last_rx = ms
            if op == 0x90:
                if c.suback_rc == 0x80:
                    self._fail(ms, E_REFUSED, "subscribe refused")
                    return
                if c.suback_pid == self._sub_pid and self.state == S_SUBACK:
                    self.state = S_UP
                    self._backoff = _BACKOFF_MIN_MS
                    self._status_ms = ms - _STATUS_MS  # a heartbeat at once
                    self._inflight = 0

    def _keepalive(self, ms):
        b = self.reader.board
        if b.ticks_diff(ms, self._last_rx) >= self.keepalive_ms:
            self._fail(ms, E_IO, "no reply within keepalive")
            return
        if b.ticks_diff(ms, self._last_ping) >= self.keepalive_ms // 2:
            self.client.ping()
            self._last_ping = ms

    def _batch(self, log, start):
        n = 0
        for rec in log.records(start):
            self._upto = ridelog.seq_of(rec)
            yield rec
            n += 1
            if n == uc.MAX_RIDES:
                return

    def _send_rides(self, ms):
        log = self.reader.log
        start = self._resend
        if not start:
            if log.acked >= self._inflight:
                self._inflight = 0
            if log.last_seq <= log.acked:
                return False
            start = log.acked + 1
        # A resent batch is acknowledged already: any ACK (_on_msg) ends its wait.
        if self._inflight and self.reader.board.ticks_diff(ms, self._sent_ms) < _ACK_WAIT_MS:
            return False
        self._upto = 0
        msg = self.codec.rides(self._batch(log, start))
        if not self._upto:
            self._resend = 0  # nothing held from there on
            return False
        self.client.publish(self.t_up, msg)
        self._inflight = self._upto
        if self._resend:
            self._resend = self._upto + 1
            if self._resend > log.acked:
                self._resend = 0  # the rest is the unacked backlog
        self._sent_ms = ms
        self.batches += 1
        return True

    def _send_sun(self):
        # The SUN counters accepted here since the last send, <= 64 of them.
        nfc = self.reader.nfc
        if nfc is None:
            return False
        t = nfc.counters
        slots = t.unsent_slots(uc.MAX_SUN)
        if not slots:
            return False
        self.client.publish(self.t_up, self.codec.sunctr(t.entries(slots)))
        t.sent(slots)  # best effort: published once (see docs/uplink.md, SUNCTR)
        self.sun_sent += len(slots)
        return True

    def _send_status(self, ms, force):
        if not force and self.reader.board.ticks_diff(ms, self._status_ms) < _STATUS_MS:
            return
        r = self.reader
        flags = 0
        if r.clock.synced:
            flags |= uc.ST_CLOCK_SYNCED
        if r.log.full:
            flags |= uc.ST_LOG_FULL
        gc.collect()  # free heap as a health figure: what is really free, not garbage not yet collected
        msg = self.codec.status(
            r.clock.uptime(),
            gc.mem_free(),
            r.log.backlog,
            r.wl.version if r.wl else 0,
            r.unlogged,
            self.last_error,
            flags,
            r.boot_count,
            r.clock.now(),
            r.log.acked,
            max(r.log.oldest_seq, r.log_from),
            r.net.rssi() if r.net is not None else 0,
            _FW[0],
            _FW[1],
            _FW[2],
            wlcap.capacity(),
        )
        self.client.publish(self.t_status, msg)
        self._status_ms = ms

    # ---- down messages ----

    def _on_msg(self, topic, msg):
        if topic != self.t_down:
            return  # the ACL delivers only our own down; ignore anything else
        codec = self.codec
        try:
            kind = codec.open(msg, type(msg) is memoryview)  # the receive buffer: decrypt in place
        except uc.UplinkError as e:
            self.refused += 1
            self.last_error = E_MESSAGE
            self.error_text = "down message refused: %s" % e.reason
            return
        r = self.reader
        try:
            if kind == uc.ACK:
                log = r.log
                upto = codec.seq
                if upto > log.last_seq:
                    raise ValueError("ack %d is beyond the last record" % upto)
                log.ack(upto)
                self.acks += 1
                if log.acked >= self._inflight:
                    self._inflight = 0  # next batch at once
            elif kind == uc.RESEND:
                # Never below the first ride of this identity: the records
                # under it were another reader's (logid.py).
                f = max(codec.from_seq, r.log_from)
                if f <= r.log.acked:  # above it, the backlog goes anyway
                    self._resend = f if f > 0 else 1
                    self._inflight = 0
                    self.resends += 1
            elif kind == uc.TIME:
                replaystate.save(codec)
                reply = r.command("TIME %d" % codec.epoch_s)
                if not reply.startswith("OK"):
                    raise ValueError(reply)
            elif kind == uc.DELTA:
                replaystate.save(codec)
                r.wl.apply_delta(bytes(codec.blob))
                self._status_ms = r.board.ticks_ms() - _STATUS_MS  # report the version
            elif kind == uc.SUNCTR_DOWN:
                # Another reader's NTAG counters: merged with max(), saved to
                # flash by Reader.idle() as a tap's are. A replay is harmless
                # (max never lowers a counter): link.ctr is not written.
                if r.nfc is not None:
                    self.sun_merged += r.nfc.counters.merge(codec.blob)
            else:
                # WHITELIST: a chunk of a full list, assembled on flash.
                from .wlrecv import on_chunk

                if on_chunk(self, codec):
                    self._status_ms = r.board.ticks_ms() - _STATUS_MS  # report the version
        except MemoryError:
            gc.collect()
            self.last_error = E_APPLY
            self.error_text = "out of memory applying a down message"
        except Exception as e:
            self.last_error = E_APPLY
            self.error_text = "down message not applied: %s" % e

    def describe(self):
        return STATE_NAMES[self.state]

    def link_lost(self):
        # The network link under it went down (net.py): drop the socket, and
        # connect again as soon as the link is back, without a backoff.
        self.client.close()
        self.state = S_DOWN
        self._due = self.reader.board.ticks_ms()
        self._inflight = 0  # resend after reconnect

    def close(self):
        # Leave the broker on purpose (a reconfigure): a connected link says
        # DISCONNECT first, so the gateway is not told "offline".
        if self.state >= S_SUBACK:
            self.client.disconnect()
        else:
            self.client.close()
        self.state = S_DOWN
