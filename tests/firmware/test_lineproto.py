# The line protocol shared by the boards, fed the way the ESP32 board feeds it
# (whole UART reads appended to the buffer, then _take_line): a line too long
# for the buffer is refused once and its tail, however it looks, is dropped.
from rig import check
from liftcard.lineproto import EV_CMD, EV_NONE, EV_TAP, LineProtocol


class Uart(LineProtocol):
    def __init__(self, size=64):
        self._init_lines(size)
        self.replies = []

    def reply(self, text):
        self.replies.append(text)

    def feed(self, data, chunk=16):
        # As board_esp32.poll: read what fits, take lines when bytes came.
        events = []
        i = 0
        while i < len(data):
            room = len(self._line) - self._n
            n = min(chunk, room, len(data) - i)
            self._line[self._n : self._n + n] = data[i : i + n]
            self._n += n
            i += n
            ev = self._take_line()
            while ev != EV_NONE:
                events.append(ev)
                ev = self._take_line()
        return events


def test_lineproto_long_line_tail_is_dropped_not_parsed():
    u = Uart()
    ev = u.feed(b"X" * 100 + b"TAP 1122334455667788 0\n")
    check(ev == [] and u.replies == ["ERR line too long"], "tail parsed: %r %r" % (ev, u.replies))
    ev = u.feed(b"TAP 1122334455667788 3\nSTATUS\n")
    check(ev == [EV_TAP, EV_CMD] and u.tap_floor == 3 and u.replies == ["ERR line too long"])


def test_lineproto_long_line_spanning_many_buffers_says_so_once():
    u = Uart()
    ev = u.feed(b"Y" * 500 + b"\nSTATUS\n", chunk=7)
    check(ev == [EV_CMD] and u.replies == ["ERR line too long"], "%r %r" % (ev, u.replies))
