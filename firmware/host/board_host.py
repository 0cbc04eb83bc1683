# The host board: the same reader on the MicroPython unix port. Host only:
# it lives beside the liftcard package (firmware/host/), never on a board;
# main.py imports it when not on an ESP32.
#
# Flash is two image files: a littlefs filesystem (vfs.VfsLfs2 over BlockDev,
# mounted at /flash) and the raw NOR ride-log partition (NorFlash). Taps and
# commands arrive as lines on stdin; relay, LED, buzzer and ride reports leave
# as lines on stdout:
#
#   in:  TAP <16 hex card id> [floor]     a verified credential
#        UID <2..16 hex uid> [floor]      a bare UID (legacy cards)
#        FAIL <reason code> [floor]       a card whose credential failed
#        any other line                   a reader command (STATUS, TIME, WL, ...)
#   (with --pn532 PATH, cards are also read through a PN532 on that serial
#    port or pty, e.g. the emulator: python -m liftcard_tools.nfc.pn532emu;
#    with --test-port PATH, these lines travel on that port instead of stdio)
#   out: RELAY ON | RELAY OFF | LED GREEN | LED RED | BEEP OK | BEEP DENY
#        RIDE <record hex> <L|U>          each tap's record; U = not logged (log full)
#        OK ... | ERR ... | STATUS {...}  command replies

import select
import sys
import time

import vfs
from micropython import const

from hostflash import BlockDev, NorFlash
from liftcard.lineproto import EV_CMD, EV_NONE, EV_TAP, LineProtocol

_EPOCH_UNIX = const(1704067200)  # 2024-01-01T00:00:00Z (host only: a 64-bit small int)
_TICKS_PERIOD = const(1 << 30)
_TICKS_MASK = const((1 << 30) - 1)
_TICKS_HALF = const(1 << 29)
_LINE = const(512)

_HEX = b"0123456789abcdef"


def _absolute(path):
    if path.startswith("/"):
        return path
    import os

    return os.getcwd().rstrip("/") + "/" + path


class Board(LineProtocol):
    def __init__(
        self,
        flash_path,
        log_path,
        fs_size=2 * 1024 * 1024,
        log_size=2 * 1024 * 1024,
        stdin=None,
        stdout=None,
        pn532=None,
        rail=None,
    ):
        # Absolute paths: mount() changes into the reader's own filesystem.
        self.flash_path = _absolute(flash_path)
        self.log_path = _absolute(log_path)
        self.fs_size = fs_size
        self.log_size = log_size
        self.fs_dev = None
        self.nor = None
        self.rail = rail  # the power supply of both flash chips (hostflash.Rail; None: never cut)
        self._init_lines(_LINE)
        self._b1 = bytearray(1)
        self.relay_on = False
        self.feeds = 0
        self._relay_until = 0
        self._epoch_base = int(time.time()) - _EPOCH_UNIX
        self._epoch_ticks = time.ticks_ms()
        self._in = stdin or sys.stdin.buffer
        self._out = stdout or sys.stdout.buffer
        self._poll = None
        self._eof = False
        self._ride = bytearray(b"RIDE " + b"0" * 64 + b" L\n")
        self.nfc = None
        self._pn532 = pn532

    def start_nfc(self):
        # Called by the reader once configured (its large tables are then in
        # place: the NFC stack's code must not fragment the heap before them).
        if self.nfc is None and self._pn532:
            from liftcard.nfc import Nfc
            from liftcard.pn532 import PN532
            from liftcard.pn532link import HostSerial

            self.nfc = Nfc(PN532(HostSerial(self._pn532)))
        return self.nfc

    @classmethod
    def from_argv(cls, argv):
        opts = {
            "--flash": "reader-fs.img",
            "--log": "reader-log.img",
            "--fs-size": "2097152",
            "--log-size": "2097152",
            "--pn532": "",
            "--test-port": "",
        }
        i = 1
        while i < len(argv):
            if argv[i] in opts and i + 1 < len(argv):
                opts[argv[i]] = argv[i + 1]
                i += 2
            else:
                raise SystemExit(
                    "usage: micropython main.py [--flash FS.img] [--log LOG.img] [--fs-size N] [--log-size N]"
                    " [--pn532 SERIAL] [--test-port SERIAL]"
                )
        # --test-port: the line protocol on that serial port or pty (UART1 on
        # a board), so stdio is left to the REPL (liftcard_testing.virtualboard).
        port = open(opts["--test-port"], "r+b") if opts["--test-port"] else None
        return cls(
            opts["--flash"],
            opts["--log"],
            int(opts["--fs-size"]),
            int(opts["--log-size"]),
            stdin=port,
            stdout=port,
            pn532=opts["--pn532"] or None,
        )

    # ---- flash ----

    def mount(self):
        fresh = False
        try:
            open(self.flash_path, "rb").close()
            self.fs_dev = BlockDev(self.flash_path, None, self.rail)
        except OSError:
            self.fs_dev = BlockDev(self.flash_path, self.fs_size, self.rail)
            fresh = True
        if fresh:
            vfs.VfsLfs2.mkfs(self.fs_dev)
        try:
            vfs.umount("/flash")
        except OSError:
            pass
        vfs.mount(vfs.VfsLfs2(self.fs_dev), "/flash")
        import os

        # A relative MICROPYPATH entry (a shell's `--out build/firmware`)
        # names a directory from where micropython started; after the chdir
        # it would name one inside the reader's filesystem, and the modules
        # imported later (umqtt, at the first config with an uplink) would
        # not be found.
        for i in range(len(sys.path)):
            p = sys.path[i]
            if p and not p.startswith("/") and not p.startswith(".frozen"):
                sys.path[i] = _absolute(p)
        os.chdir("/flash")

    def log_device(self):
        if self.nor is None:
            try:
                open(self.log_path, "rb").close()
                self.nor = NorFlash(self.log_path, None, self.rail)
            except OSError:
                self.nor = NorFlash(self.log_path, self.log_size, self.rail)
        return self.nor

    # ---- time ----

    # The unix port's ticks count from the host's boot and are not bounded to
    # 32 bits; the logic above keeps ticks in 32-bit arrays, as the ESP32's
    # 2**30 period allows. So the host board wraps its ticks the same way.
    def ticks_ms(self):
        return time.ticks_ms() & _TICKS_MASK

    def ticks_diff(self, a, b):
        d = (a - b) & _TICKS_MASK
        return d - _TICKS_PERIOD if d >= _TICKS_HALF else d

    # Wall time from the unix port's (unbounded) ticks and one reading of the
    # host clock: time.time() returns a float, an allocation on every tap.
    def epoch(self):
        return self._epoch_base + (time.ticks_ms() - self._epoch_ticks) // 1000

    def set_epoch(self, s):
        self._epoch_base = s
        self._epoch_ticks = time.ticks_ms()

    # ---- outputs ----

    def feed(self):
        self.feeds += 1
        self._fed_ms = time.ticks_ms()

    # ---- watchdog, network, safe mode (models of board_esp32's; docs/board.md) ----

    # The watchdog: armed by the reader loop (Reader.run), fed by it; with
    # wdt_ms set, a loop that stops feeding for wdt_ms is reset as an ESP32
    # would be: "WDT RESET" on stderr, the process killed by SIGUSR2. Like the
    # ESP32's, it cannot be stopped once armed. wdt_ms 0: only the bookkeeping.
    wdt_ms = 0
    wdt_armed = False
    _fed_ms = 0

    def arm_watchdog(self):
        self._fed_ms = time.ticks_ms()
        if self.wdt_armed:
            return
        self.wdt_armed = True
        if self.wdt_ms:
            import _thread

            _thread.start_new_thread(self._watchdog, ())

    def _watchdog(self):
        while time.ticks_diff(time.ticks_ms(), self._fed_ms) < self.wdt_ms:
            time.sleep_ms(20)
        import os

        os.system("echo 'WDT RESET' >&2; kill -USR2 $PPID")

    # The Wi-Fi model: up as soon as joined; link_ok is the test hook (the
    # access point), False takes the link down, True lets it come back.
    link_ok = True
    net_cfg = None
    _joined = False

    def net_start(self, wcfg):
        self.net_cfg = wcfg
        self._joined = True

    def net_up(self):
        return self._joined and self.link_ok

    def net_rssi(self):
        return -48

    def net_stop(self):
        self._joined = False

    # Safe mode: the flag (RTC memory on the ESP32) is a file beside the fs
    # image; safe_pin_held is the pin; reset() ends the process with status 3.
    safe_window_ms = 0
    safe_pin_held = False

    def take_safe_flag(self):
        import os

        try:
            os.remove(self.flash_path + ".safe")
            return True
        except OSError:
            return False

    def set_safe_flag(self):
        with open(self.flash_path + ".safe", "w") as f:
            f.write("safe")

    def safe_pin(self):
        return self.safe_pin_held

    def reset(self):
        self._out.write(b"RESET\n")
        sys.exit(3)

    def signal(self, granted, relay_ms):
        out = self._out
        if granted:
            self.relay_on = True
            self._relay_until = time.ticks_add(time.ticks_ms(), relay_ms)
            out.write(b"RELAY ON\nLED GREEN\nBEEP OK\n")
        else:
            out.write(b"LED RED\nBEEP DENY\n")

    def service(self):
        if self.relay_on and time.ticks_diff(time.ticks_ms(), self._relay_until) >= 0:
            self.relay_on = False
            self._out.write(b"RELAY OFF\n")

    def report(self, rec, logged):
        r = self._ride
        for i in range(32):
            b = rec[i]
            r[5 + 2 * i] = _HEX[b >> 4]
            r[6 + 2 * i] = _HEX[b & 15]
        r[70] = 76 if logged else 85  # 'L' / 'U'
        self._out.write(r)

    def reply(self, text):
        self._out.write(text.encode() if isinstance(text, str) else text)
        self._out.write(b"\n")

    # ---- inputs ----

    def poll(self, timeout_ms):
        # Reads one byte at a time while input is ready: on a blocking pipe
        # readinto() would wait until it had filled the whole buffer.
        if self.nfc is not None and not self._eof and self.nfc.poll(self):
            return EV_TAP
        while True:
            if self._eof:
                self.cmd = "QUIT"
                return EV_CMD
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(self._in, select.POLLIN)
            ready = False
            for _ in self._poll.ipoll(timeout_ms):
                ready = True
            if not ready:
                return EV_NONE
            timeout_ms = 0
            if not self._in.readinto(self._b1):
                self._eof = True
                continue
            c = self._b1[0]
            self._line[self._n] = c
            self._n += 1
            if c == 10 or self._n >= _LINE:
                ev = self._take_line()
                if ev != EV_NONE:
                    return ev
