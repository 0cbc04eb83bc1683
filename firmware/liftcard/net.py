# The reader's network link (docs/board.md, "Wi-Fi"): bring it up, notice it
# dropping, bring it back with backoff. Only the logic; the radio is the
# board's (board_esp32: network.WLAN(STA_IF); the host board: a link that is up
# at once, with a test hook to drop it):
#
#   board.net_start(wcfg)  start joining (wcfg: the config's "wifi", or None)
#   board.net_up()         True once the link carries IP
#   board.net_rssi()       signal strength in dBm (0 when unknown)
#   board.net_stop()       leave the network
#
# Like the uplink, it runs only from Reader.idle() in small steps (step()):
# none of the calls above blocks, so a missing access point never delays a
# tap (promise 1). The uplink starts connecting only while the link is up.

from micropython import const

_JOIN_MS = const(20000)  # association + DHCP
_BACKOFF_MIN_MS = const(2000)
_BACKOFF_MAX_MS = const(120000)

S_WAIT = const(0)  # down, the next attempt is due later
S_JOINING = const(1)
S_UP = const(2)
STATE_NAMES = ("down", "joining", "up")


class Net:
    def __init__(self, board, wcfg):
        self.board = board
        self.wcfg = wcfg
        self.state = S_WAIT
        self._due = board.ticks_ms()
        self._deadline = 0
        self._backoff = _BACKOFF_MIN_MS
        self.joins = 0  # attempts started
        self.drops = 0  # times an up link went down

    @property
    def up(self):
        return self.state == S_UP

    def step(self):
        # A bounded amount of work; returns True on the step the link went
        # down (the uplink then drops its socket).
        b = self.board
        ms = b.ticks_ms()
        st = self.state
        if st == S_UP:
            if not b.net_up():
                self.drops += 1
                self._retry(ms)
                return True
        elif st == S_JOINING:
            if b.net_up():
                self.state = S_UP
                self._backoff = _BACKOFF_MIN_MS
            elif b.ticks_diff(ms, self._deadline) >= 0:
                self._retry(ms)
        elif b.ticks_diff(ms, self._due) >= 0:
            self.joins += 1
            try:
                b.net_start(self.wcfg)
            except OSError:
                self._retry(ms)
                return False
            self.state = S_JOINING
            self._deadline = ms + _JOIN_MS
        return False

    def _retry(self, ms):
        try:
            self.board.net_stop()
        except OSError:
            pass
        self.state = S_WAIT
        self._due = ms + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)

    def rssi(self):
        return self.board.net_rssi() if self.state == S_UP else 0

    def describe(self):
        return STATE_NAMES[self.state]

    def close(self):
        if self.state != S_WAIT:
            try:
                self.board.net_stop()
            except OSError:
                pass
        self.state = S_WAIT
