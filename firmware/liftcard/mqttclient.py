# The reader's MQTT transport (docs/uplink.md, "Reader side"): micropython-lib
# umqtt.simple's client with every part that can block replaced. The link
# state machine that drives it is uplink.py.
#
# - the TCP connect is non-blocking (open(), then ready(POLLOUT)), CONNECT is
#   sent without waiting (send_connect()) and CONNACK read once poll says it
#   is there (read_connack());
# - every socket read/write has a short timeout; a read is only started once
#   poll() says a byte is there (ready()); umqtt's wait_msg, which switches
#   the socket back to blocking forever, is replaced;
# - a short read or write raises OSError: the stream is broken;
# - ping() only sends (umqtt.simple never pings; the caller times them);
# - the packet id wraps at 65535 (umqtt.simple's grows without bound);
# - publish() is QoS 0 only: a QoS 1 PUBACK would be a blocking round trip.

import errno
import select
import socket
import struct

from micropython import const
from umqtt.simple import MQTTClient, MQTTException

_IO_TIMEOUT_S = 0.3  # any single socket read/write
_MAX_PACKET = const(4400)  # a down PUBLISH: topic + the largest link message


def _remaining_length(buf, sz):
    # MQTT's variable-length "remaining length" from buf[1]; returns the index
    # of its last byte.
    i = 1
    while sz > 0x7F:
        buf[i] = (sz & 0x7F) | 0x80
        sz >>= 7
        i += 1
    buf[i] = sz
    return i


def _add_str(pkt, s):
    pkt.extend(struct.pack("!H", len(s)))
    pkt.extend(s)


class Client(MQTTClient):
    # umqtt.simple, with the blocking parts replaced: a non-blocking TCP
    # connect, CONNECT sent without waiting, no blocking reads, packet id wrap.
    # A PUBLISH payload of up to inbuf_size bytes is read into one reused
    # buffer (inbuf: the owner makes it at start-up, else it is made at the
    # first message) and handed to the callback as a memoryview, valid until
    # the next message; a longer one is read into a fresh bytes object.

    inbuf = None
    inbuf_size = 0

    def open(self, addr):
        self.sock = s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        self.poller = select.poll()
        self.poller.register(s, select.POLLIN | select.POLLOUT)

    def ready(self, mask):
        # True when the socket has `mask` ready; an error or hangup also
        # counts (the next read/write then raises or sees EOF).
        for _, ev in self.poller.ipoll(0):
            return ev & (mask | select.POLLERR | select.POLLHUP) != 0
        return False

    def want_read(self):
        self.poller.modify(self.sock, select.POLLIN)

    def close(self):
        s = self.sock
        self.sock = None
        self.poller = None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    def send_connect(self, clean_session=True):
        # umqtt.simple's connect() after the socket, up to the CONNACK.
        self.sock.settimeout(_IO_TIMEOUT_S)
        self._write(self.connect_packet(clean_session))

    def connect_packet(self, clean_session=True):
        # The CONNECT packet in one buffer (once per connection, not per
        # tap): a TLS client sends it as one record.
        premsg = bytearray(b"\x10\0\0\0\0\0")
        msg = bytearray(b"\x04MQTT\x04\x02\0\0")
        sz = 10 + 2 + len(self.client_id)
        msg[6] = clean_session << 1
        if self.user is not None:
            sz += 2 + len(self.user) + 2 + len(self.pswd)
            msg[6] |= 0xC0
        if self.keepalive:
            msg[7] |= self.keepalive >> 8
            msg[8] |= self.keepalive & 0x00FF
        if self.lw_topic:
            sz += 2 + len(self.lw_topic) + 2 + len(self.lw_msg)
            msg[6] |= 0x4 | (self.lw_qos & 0x1) << 3 | (self.lw_qos & 0x2) << 3
            msg[6] |= self.lw_retain << 5
        i = _remaining_length(premsg, sz)
        pkt = premsg[: i + 2]
        pkt.extend(msg)
        _add_str(pkt, self.client_id)
        if self.lw_topic:
            _add_str(pkt, self.lw_topic)
            _add_str(pkt, self.lw_msg)
        if self.user is not None:
            _add_str(pkt, self.user)
            _add_str(pkt, self.pswd)
        return pkt

    def read_connack(self):
        resp = self._read(4)
        if resp[0] != 0x20 or resp[1] != 0x02:
            raise OSError(errno.EIO)
        if resp[3] != 0:
            raise MQTTException(resp[3])

    def _next_pid(self):
        # MQTT packet ids are 1..65535; umqtt.simple's self.pid never wraps
        # (and struct "!H" of 65536 would not fit).
        self.pid = 1 if self.pid >= 65535 else self.pid + 1
        return self.pid

    def send_subscribe(self, topic, qos=1):
        pkt = bytearray(b"\x82\0\0\0")
        struct.pack_into("!BH", pkt, 1, 2 + 2 + len(topic) + 1, self._next_pid())
        self._write(pkt)
        self._send_str(topic)
        self._write(bytes((qos,)))
        return self.pid

    def _write(self, buf, n=None):
        if n is None:
            n = len(buf)
        w = self.sock.write(buf, n)
        if w != n:  # a timeout part-way: the stream is broken
            raise OSError(errno.ETIMEDOUT)

    def _send_str(self, s):
        self._write(struct.pack("!H", len(s)))
        self._write(s)

    def ping(self):
        self._write(b"\xc0\0")

    def disconnect(self):
        # A clean DISCONNECT, so the broker drops the Last Will; then close.
        try:
            self._write(b"\xe0\0")
        except Exception:
            pass  # a broken link: the Will fires, as it should
        self.close()

    def publish(self, topic, msg, retain=False, qos=0):
        # QoS 0 only (see the top of the file): nothing to wait for.
        pkt = bytearray(b"\x30\0\0\0")
        pkt[0] |= retain
        i = _remaining_length(pkt, 2 + len(topic) + len(msg))
        self._write(pkt, i + 1)
        self._send_str(topic)
        self._write(msg)

    def _read(self, n):
        b = self.sock.read(n)
        if not b:
            raise OSError(errno.ECONNRESET)  # EOF: the broker closed
        if len(b) != n:
            raise OSError(errno.ETIMEDOUT)
        return b

    def _recv_len(self):
        n = 0
        sh = 0
        while 1:
            b = self._read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7
            if sh > 21:
                raise OSError(errno.EIO)

    def wait_msg(self):
        # One incoming packet; call only when poll says a byte is there. The
        # socket keeps its short timeout (umqtt's version switches it to
        # blocking forever). Returns the packet type (0x30 PUBLISH, 0xd0
        # PINGRESP, 0x90 SUBACK with self.suback_rc set).
        op = self._read(1)[0]
        self.suback_rc = None
        if op == 0xD0:  # PINGRESP
            if self._read(1)[0] != 0:
                raise OSError(errno.EIO)
            return op
        if op == 0x90:  # SUBACK: len=3, pid, return code
            b = self._read(4)
            if b[0] != 3:
                raise OSError(errno.EIO)
            self.suback_rc = b[3]
            self.suback_pid = (b[1] << 8) | b[2]
            return op
        if op & 0xF0 != 0x30:
            # Nothing else is expected here (we send QoS 0, subscribe once).
            raise OSError(errno.EIO)
        sz = self._recv_len()
        if sz > _MAX_PACKET:
            raise OSError(errno.EMSGSIZE)
        tl = self._read(2)
        tl = (tl[0] << 8) | tl[1]
        topic = self._read(tl) if tl else b""
        sz -= tl + 2
        pid = 0
        if op & 6:
            pid = self._read(2)
            pid = pid[0] << 8 | pid[1]
            sz -= 2
        if sz < 0:
            raise OSError(errno.EIO)
        msg = b""
        if sz > self.inbuf_size:
            msg = self._read(sz)  # longer than any link message: the codec refuses it
        elif sz:
            # Into the buffer made at start-up: a 4 KB WHITELIST chunk must
            # not need a fresh 4 KB block from a fragmented heap.
            if self.inbuf is None:
                self.inbuf = bytearray(self.inbuf_size)
            msg = memoryview(self.inbuf)[:sz]
            n = self.sock.readinto(msg)
            if not n:
                raise OSError(errno.ECONNRESET)
            if n != sz:
                raise OSError(errno.ETIMEDOUT)
        if op & 6 == 2:  # QoS 1: PUBACK before acting (acting is idempotent)
            pkt = bytearray(b"\x40\x02\0\0")
            struct.pack_into("!H", pkt, 2, pid)
            self._write(pkt)
        elif op & 6 == 4:
            raise OSError(errno.EIO)  # QoS 2: never subscribed with it
        self.cb(topic, msg)
        return 0x30
