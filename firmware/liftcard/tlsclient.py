# The uplink's MQTT transport over TLS (docs/uplink.md, "TLS on the local
# link"): mqttclient.Client with the TLS handshake in non-blocking steps.
# Imported only by a reader whose config has uplink.tls, so a plain reader's
# heap holds none of it.
#
# After the non-blocking TCP connect (Client.open, ready(POLLOUT)):
# - start_tls() wraps the socket, still non-blocking, and builds the whole
#   CONNECT in one buffer;
# - tls_step(), one per Uplink.step(), writes that CONNECT: mbedTLS runs the
#   handshake inside the write and answers "would block" (None) while it
#   waits for the broker, so a step does only the crypto of what has arrived
#   and never waits for the network (docs/board.md, "TLS"); once the write
#   goes through, the handshake is over and CONNECT is sent;
# - from then on the TCP socket has the plain link's short timeout, and the
#   poller watches the TLS socket, which also sees bytes mbedTLS has already
#   decrypted and holds (the TCP socket cannot).

import errno
import select

from micropython import const

from .mqttclient import _IO_TIMEOUT_S, Client

# uplink.py's S_CONNACK, E_TLS, E_CONNECT and _CONNECT_MS (this module is loaded from it,
# so it cannot import them back without a cycle).
_S_CONNACK = const(3)
_E_TLS = const(6)
_E_CONNECT = const(1)
_CONNECT_MS = const(5000)


def reason(e):
    # One line from an exception: mbedTLS's reasons come with newlines.
    for a in e.args:
        if type(a) is str:
            for line in a.split("\n"):
                if line.strip():
                    return line.strip()
    return repr(e)


class TlsClient(Client):
    tls = None  # (tls.SSLContext, server name), set by the uplink before a connect
    _raw = None  # the TCP socket under the TLS one
    _pkt = None  # the CONNECT the handshake steps write (it holds the password)

    def close(self):
        self._raw = None
        self._pkt = None
        Client.close(self)

    def prepare(self, up, ms):
        # Uplink._connect: the SSL context with the CA file loaded, once;
        # False (the uplink failed with the reason) while there is none.
        if self.tls is None:
            from .tlsctx import prepare

            ctx, why = prepare(up.reader, up.tls["ca"])
            if ctx is None:
                up._fail(ms, _E_TLS, why)
                return False
            self.tls = (ctx, up.tls["server_name"])
        return True

    def tls_poll(self, up, ms):
        # Uplink.step in its S_TLS state: one handshake step.
        try:
            done = self.tls_step()
        except MemoryError:
            raise
        except Exception as e:  # the certificate or name refused, the TCP connect failed, a reset
            n = e.args[0] if type(e) is OSError and e.args else 0
            if n == errno.ECONNREFUSED:
                up._fail(ms, _E_CONNECT, "connect failed: %r" % (e,))  # as on the plain link
            elif n == errno.ECONNRESET:
                up._fail(ms, _E_TLS, "tls: the broker closed the connection in the handshake (a plain MQTT port?)")
            else:
                up._fail(ms, _E_TLS, "tls: %s" % reason(e))
            return
        if done:
            up.state = _S_CONNACK
            up._deadline = ms + _CONNECT_MS
        elif up.reader.board.ticks_diff(ms, up._deadline) >= 0:
            up._fail(ms, _E_TLS, "tls: handshake timed out")

    def start_tls(self):
        from .tlsctx import release

        ctx, name = self.tls
        raw = self.sock
        release()
        self.sock = ctx.wrap_socket(raw, server_hostname=name, do_handshake_on_connect=False)
        self._raw = raw
        self._pkt = self.connect_packet()
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)

    def tls_step(self):
        # True once the handshake is over and CONNECT is sent; a refused
        # certificate or name raises (ValueError from mbedTLS).
        n = self.sock.write(self._pkt)
        if n is None:
            return False
        if n != len(self._pkt):
            raise OSError(errno.ETIMEDOUT)
        self._pkt = None
        self._raw.settimeout(_IO_TIMEOUT_S)
        return True
