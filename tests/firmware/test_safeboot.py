# Safe mode and the watchdog (liftcard/safeboot.py, docs/board.md), on the host
# board's models: its watchdog resets the process ("WDT RESET", killed by
# SIGUSR2) when an armed loop stops feeding it, as the ESP32's would; its
# reset() exits with status 3; its safe flag is a file beside the fs image, as
# RTC memory survives the ESP32's machine.reset(). Each boot runs in a process
# of its own (rig-style children), as a reset starts from nothing.
#
# No timing is asserted: the watchdog's timeout only has to be shorter than
# how long a hung loop hangs (for ever) and than how long the REPL sits in a
# safe boot; the loop that must survive feeds it every poll.
import os
import sys
import time

import rig
from rig import check
from board_host import Board
from liftcard import safeboot
from liftcard.lineproto import EV_CMD, EV_NONE

WDT_MS = 1000
SIGUSR2 = 12


class TechBoard(Board):
    # The host board with a watchdog and a scripted input: what the loop
    # sees at each poll.
    wdt_ms = WDT_MS
    mode = ""
    polls = 0

    def poll(self, timeout_ms):
        self.polls += 1
        time.sleep_ms(20)
        if self.mode == "ctrl-c" and self.polls == 10:
            raise KeyboardInterrupt  # the technician's Ctrl-C, the loop running
        if self.mode == "hang" and self.polls == 10:
            while True:  # a hung loop: never fed again
                time.sleep_ms(10)
        if self.mode == "run" and self.polls >= 4 * WDT_MS // 20:
            self.cmd = "QUIT"  # several watchdog periods of a healthy loop
            return EV_CMD
        return EV_NONE


def child_boot(prefix, mode, pin="0"):
    # One boot of the reader on existing images, as main.py runs it.
    b = TechBoard(rig.path(prefix + "-fs.img"), rig.path(prefix + "-log.img"), stdout=rig.Sink(False))
    b.mode = mode
    b.safe_pin_held = pin == "1"
    reader = safeboot.main(b)
    if reader is None:
        # Safe mode: the technician's REPL session, longer than the watchdog's timeout.
        time.sleep_ms(3 * WDT_MS)
    print("ALIVE armed=%s stopped=%s" % (b.wdt_armed, reader.stopped if reader else None))


def _boot(prefix, mode, pin="0"):
    # (exit status or -signal, output) of one boot in a fresh micropython.
    log = rig.path("boot.log")
    cmd = "%s -X heapsize=%s %s/mprun.py test_safeboot child_boot %s %s %s > %s 2>&1" % (
        sys.executable,
        rig.HEAP,
        rig.HERE,
        prefix,
        mode,
        pin,
        log,
    )
    st = os.system(cmd)
    with open(log) as f:
        out = f.read()
    if st & 0x7F:
        return -(st & 0x7F), out
    code = st >> 8
    return (-(code - 128) if code > 128 else code), out  # sh reports a signal as 128 + n


def _configured(prefix):
    r = rig.configured_reader(prefix, keep_output=False)
    rig.shutdown(r)
    return rig.path(prefix + "-fs.img") + ".safe"


def test_safeboot_hung_loop_is_reset_by_the_watchdog():
    _configured("h")
    st, out = _boot("h", "hang")
    check(st == -SIGUSR2 and "WDT RESET" in out, "status %d: %s" % (st, out))


def test_safeboot_healthy_loop_feeds_the_watchdog():
    _configured("f")
    st, out = _boot("f", "run")
    check(st == 0 and "ALIVE armed=True stopped=True" in out, "status %d: %s" % (st, out))


def test_safeboot_ctrl_c_resets_into_safe_mode_without_a_watchdog():
    flag = _configured("c")
    st, out = _boot("c", "ctrl-c")
    check(st == 3 and "resetting into safe mode" in out, "status %d: %s" % (st, out))
    check(os.stat(flag), "no safe flag left for the next boot")
    # The next boot is a safe one: no reader loop, no watchdog, and the REPL
    # session outlives the watchdog's timeout.
    st, out = _boot("c", "hang")
    check(st == 0 and "safe mode (flag)" in out and "ALIVE armed=False stopped=None" in out, "%d: %s" % (st, out))
    # The flag is used up: the boot after that runs the reader again.
    st, out = _boot("c", "run")
    check(st == 0 and "ALIVE armed=True stopped=True" in out, "status %d: %s" % (st, out))


def test_safeboot_pin_held_at_boot_keeps_the_reader_stopped():
    _configured("p")
    st, out = _boot("p", "hang", "1")
    check(st == 0 and "safe mode (pin)" in out and "ALIVE armed=False" in out, "status %d: %s" % (st, out))


def test_safeboot_ctrl_c_in_the_boot_window():
    class WindowBoard(TechBoard):
        safe_window_ms = 500

    b = WindowBoard(rig.path("w-fs.img"), rig.path("w-log.img"), stdout=rig.Sink(False))
    t = [0]

    def ticks():
        t[0] += 20
        if t[0] == 200:
            raise KeyboardInterrupt
        return t[0]

    b.ticks_ms = ticks
    check(safeboot.wanted(b) == "Ctrl-C" and not b.wdt_armed)
    t[0] = -100000  # no Ctrl-C this time: the window passes
    check(safeboot.wanted(b) is None)
