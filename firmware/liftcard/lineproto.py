# The reader's line protocol, shared by every board: taps and commands as text
# lines (the host board's stdin; on an ESP32 the service UART, so a test rig or a
# technician can drive a real board exactly like the virtual one).
#
#   TAP <16 hex card id> [floor]     a verified credential
#   UID <2..16 hex uid> [floor]      a bare UID (legacy cards)
#   FAIL <reason code> [floor]       a card whose credential failed
#   any other line                   a reader command (STATUS, TIME, WL, ...)
#
# [floor] is where the car is when the card is tapped (default: the ground
# floor), not where the rider goes: the reader decides the destination (the
# card's home floor from the ground floor, the ground floor from elsewhere)
# and records that in the ride.
#
# Taps are parsed in place with no allocation; a malformed tap is answered with
# one ERR line and dropped.

from micropython import const

from . import codes

EV_NONE = const(0)
EV_TAP = const(1)
EV_CMD = const(2)
NO_FLOOR = const(0xFF)


def _nibble(c):
    if 48 <= c <= 57:
        return c - 48
    c |= 0x20
    if 97 <= c <= 102:
        return c - 87
    return -1


class LineProtocol:
    # Mixed into a board: the board fills self._line[:self._n] with received
    # bytes and calls _take_line(); results land in card / tap_* / cmd.

    def _init_lines(self, size):
        self.card = bytearray(8)
        self.tap_kind = 0
        self.tap_floor = NO_FLOOR
        self.tap_failure = 0
        self.cmd = None
        self._line = bytearray(size)
        self._n = 0
        self._ws = 0
        self._skip = False  # inside a line too long for the buffer: dropping it

    def _take_line(self):
        # The boards append what arrives at self._line[self._n:] and call this
        # whenever bytes came (the host: at a newline or a full buffer).
        line = self._line
        end = -1
        for i in range(self._n):
            if line[i] == 10:
                end = i
                break
        if end < 0:
            if self._n >= len(line):
                # Too long: said once, and the rest of it up to its newline
                # is dropped (never parsed as a line of its own).
                self._n = 0
                if not self._skip:
                    self._skip = True
                    self.reply("ERR line too long")
            return EV_NONE
        if self._skip:
            self._skip = False  # the tail of the long line
            ev = EV_NONE
        else:
            ev = self._parse(end)
        # Shift the rest down (rare: several lines in one read).
        rest = self._n - end - 1
        for i in range(rest):
            line[i] = line[end + 1 + i]
        self._n = rest
        return ev

    def _word(self, start, end):
        # The next space-separated word of the line from `start`: its start
        # is left in self._ws, and its end returned (a tuple would allocate).
        line = self._line
        # A CR is white space like a blank: a CRLF terminal ends lines with
        # one, and one left over from the line before can start the next.
        while start < end and (line[start] == 32 or line[start] == 13):
            start += 1
        self._ws = start
        while start < end and line[start] != 32 and line[start] != 13:
            start += 1
        return start

    def _parse(self, end):
        line = self._line
        e = self._word(0, end)
        s = self._ws
        verb = -1
        if e - s == 3:
            if line[s] == 84 and line[s + 1] == 65 and line[s + 2] == 80:  # TAP
                verb = codes.TAP_CREDENTIAL
            elif line[s] == 85 and line[s + 1] == 73 and line[s + 2] == 68:  # UID
                verb = codes.TAP_LEGACY_UID
        elif e - s == 4 and line[s] == 70 and line[s + 1] == 65 and line[s + 2] == 73 and line[s + 3] == 76:  # FAIL
            verb = codes.TAP_FAILED
        if verb < 0:
            if e == s:
                return EV_NONE
            try:
                self.cmd = bytes(line[:end]).decode().strip()
            except UnicodeError:
                self.reply("ERR command is not text")
                return EV_NONE
            return EV_CMD
        he = self._word(e, end)
        hs = self._ws
        fe = self._word(he, end)
        fs = self._ws
        floor = NO_FLOOR
        if fe > fs:
            floor = 0
            for i in range(fs, fe):
                d = line[i] - 48
                if not 0 <= d <= 9 or floor > 254:
                    self.reply("ERR bad tap: floor must be a number 0..254")
                    return EV_NONE
                floor = floor * 10 + d
            if floor > 254:
                self.reply("ERR bad tap: floor must be a number 0..254")
                return EV_NONE
        if verb == codes.TAP_FAILED:
            code = 0
            for i in range(hs, he):
                d = line[i] - 48
                if not 0 <= d <= 9:
                    code = -1
                    break
                code = code * 10 + d
            if he == hs or not codes.BAD_READ <= code <= codes.CARD_GARBAGE:
                self.reply("ERR bad tap: FAIL needs a reason code 7..11")
                return EV_NONE
            card = self.card
            for i in range(8):
                card[i] = 0
            self.tap_failure = code
        else:
            n = he - hs
            if n & 1 or not (16 if verb == codes.TAP_CREDENTIAL else 2) <= n <= 16:
                self.reply("ERR bad tap: card id must be 16 hex digits (UID: 2..16)")
                return EV_NONE
            card = self.card
            pad = 8 - n // 2
            for i in range(8):
                if i < pad:
                    card[i] = 0
                    continue
                at = hs + 2 * (i - pad)
                hi = _nibble(line[at])
                lo = _nibble(line[at + 1])
                if hi < 0 or lo < 0:
                    self.reply("ERR bad tap: card id is not hex")
                    return EV_NONE
                card[i] = (hi << 4) | lo
            self.tap_failure = 0
        self.tap_kind = verb
        self.tap_floor = floor
        return EV_TAP
