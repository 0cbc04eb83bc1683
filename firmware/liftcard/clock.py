# Wall time and uptime for ride records.
#
# The gateway sets the time; until it does, records are flagged CLOCK_UNSYNCED
# and the clock never runs behind the newest record on flash (after a power loss
# an ESP32's RTC restarts in 2000). Uptime is kept in whole seconds so it stays
# a small int past the 12-day wrap of ticks_ms.


class Clock:
    def __init__(self, board):
        self._board = board
        self.synced = False
        self._offset = 0
        self._last_ms = board.ticks_ms()
        self._up_s = 0
        self._up_ms = 0

    def seed(self, newest_s):
        now = self._board.epoch()
        if now < newest_s:
            self._offset = newest_s - now

    def now(self):
        t = self._board.epoch() + self._offset
        return t if t > 0 else 0

    def set(self, epoch_s):
        self._board.set_epoch(epoch_s)
        self._offset = 0
        self.synced = True

    def uptime(self):
        b = self._board
        ms = b.ticks_ms()
        self._up_ms += b.ticks_diff(ms, self._last_ms)
        self._last_ms = ms
        if self._up_ms >= 1000:
            s = self._up_ms // 1000
            self._up_s += s
            self._up_ms -= s * 1000
        return self._up_s
