"""One reader's network, cut and restored: a TCP relay between the reader and
its broker. `cut()` drops every relayed connection and closes new ones at
once (the reader sees its link die, as when a car's Wi-Fi access point loses
power); `restore()` relays again. Used by the compound (compoundsite.py)."""

from __future__ import annotations

import socket
import threading


class NetCut:
    """A relay on a free loopback port to target_host:target_port."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.is_cut = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((target_host, 0))
        self._lsock.listen(16)
        self.host, self.port = target_host, self._lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self._lsock.accept()
            except OSError:
                return
            if self.is_cut:
                _close(c)
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                _close(c)
                continue
            with self._lock:
                self._socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self.is_cut:
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close(src)
        _close(dst)

    def cut(self) -> None:
        self.is_cut = True
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)

    def restore(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._lsock)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
