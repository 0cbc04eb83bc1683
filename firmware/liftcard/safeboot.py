# Safe mode and the watchdog at boot (docs/board.md, "Safe mode"): whether the
# reader loop starts, and what a Ctrl-C does once it runs. Shared by the ESP32
# and the host (main.py calls main(board)).
#
# The ESP32's watchdog cannot be stopped once started. So:
# - it is armed only when the reader loop really runs (Reader.run ->
#   board.arm_watchdog()), never during boot, the boot window or safe mode;
# - before that, a Ctrl-C in the boot window, the profile's safe-mode pin held
#   low, or a safe-mode flag left by the last boot (RTC memory on the ESP32, a
#   file beside the images on the host) keeps the loop from starting: the
#   technician gets the REPL and no watchdog will ever cut the session;
# - a Ctrl-C while the loop runs (watchdog armed) sets that flag and resets
#   the board: the next boot is a safe one, without a watchdog. A hung loop
#   is not fed and is reset by the watchdog, then boots normally.

import time

from micropython import const

_STEP_MS = const(50)


def wanted(board):
    # Why the reader must not start ("flag", "pin", "Ctrl-C"), or None.
    if board.take_safe_flag():
        return "flag"
    if board.safe_pin():
        return "pin"
    window = board.safe_window_ms
    if window <= 0:
        return None
    print("liftcard: Ctrl-C or hold the safe-mode pin within %d ms for safe mode" % window)
    t0 = board.ticks_ms()
    try:
        while board.ticks_diff(board.ticks_ms(), t0) < window:
            time.sleep_ms(_STEP_MS)
            if board.safe_pin():
                return "pin"
    except KeyboardInterrupt:
        return "Ctrl-C"
    return None


def run(board, reader):
    # The reader loop. Ctrl-C here comes with the watchdog armed: reset into
    # a safe boot rather than leave a REPL the watchdog would cut.
    try:
        reader.run()
    except KeyboardInterrupt:
        board.set_safe_flag()
        print("liftcard: Ctrl-C: resetting into safe mode")
        board.reset()


def main(board):
    why = wanted(board)
    if why:
        print("liftcard: safe mode (%s): reader stopped, no watchdog; machine.reset() starts it" % why)
        return None
    from .reader import Reader

    reader = Reader(board)
    reader.boot()
    if reader.error:
        board.reply("ERR " + reader.error)
    board.reply("READY")
    run(board, reader)
    return reader
