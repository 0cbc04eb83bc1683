# The ESP32 board: relay, LED and buzzer on GPIOs, the hardware watchdog, the
# RTC, the Wi-Fi station, the filesystem on the "vfs" partition (mounted by
# MicroPython's boot) and the ride log on its own raw data partition "ridelog".
# Which GPIO does what comes from the config's board profile (profiles.py,
# docs/board.md).
#
# Card taps come from the NFC front end: a PN532 on UART2 (HSU) or on I2C (the
# profile's NFC bus), read by liftcard.nfc. A line protocol on UART1 (same as
# the host board's stdin) also lets a test rig inject taps and commands, so
# the hil_tests suite runs unchanged against a real board.
#
# The watchdog is armed by the reader loop (arm_watchdog), never before: it
# cannot be stopped, and safe mode (safeboot.py) must never start it.

import time

import esp32
import machine
from micropython import const

from . import profiles as pf
from .lineproto import EV_NONE, EV_TAP, LineProtocol

_EPOCH_2000_TO_2024 = const(757382400)  # seconds from 2000-01-01 to 2024-01-01
_WDT_MS = const(8000)
_UART_ID = const(1)
_LOG_PARTITION = "ridelog"
_NFC_UART_ID = const(2)
_SAFE_FLAG = b"LCSAFE"  # in RTC memory: survives machine.reset(), not a power cut
_SAFE_WINDOW_MS = const(3000)


def _nfc(p):
    bus = p[pf.NFC_BUS]
    if not bus:
        return None
    from .nfc import Nfc
    from .pn532 import PN532
    from . import pn532link

    a = p[pf.NFC_A]
    b = p[pf.NFC_B]
    if bus == "i2c":
        link = pn532link.I2cLink(machine.I2C(0, sda=machine.Pin(a), scl=machine.Pin(b), freq=400000))
    else:
        link = pn532link.UartLink(machine.UART(_NFC_UART_ID, 115200, tx=a, rx=b, timeout=0, rxbuf=512))
    return Nfc(PN532(link))


class Board(LineProtocol):
    safe_window_ms = _SAFE_WINDOW_MS

    def __init__(self, profile=None):
        # profile: the config's "board" (None: the default); a bad one raises
        # profiles.ProfileError before any pin is touched.
        p = self.profile = pf.get(profile)
        self._init_lines(256)
        self.relay_on = False
        self._relay_until = 0
        Pin = machine.Pin
        self._relay = Pin(p[pf.RELAY], Pin.OUT, value=0)
        self._green = Pin(p[pf.LED_GREEN], Pin.OUT, value=0)
        self._red = Pin(p[pf.LED_RED], Pin.OUT, value=0)
        self._buzzer = machine.PWM(Pin(p[pf.BUZZER]), freq=2700, duty=0)
        self._safe = Pin(p[pf.SAFE_PIN], Pin.IN, Pin.PULL_UP) if p[pf.SAFE_PIN] >= 0 else None
        self._beep_until = 0
        self._rtc = machine.RTC()
        self._wdt = None  # armed by the reader loop (arm_watchdog)
        self._wlan = None
        self._wcfg = None
        self._uart = machine.UART(_UART_ID, 115200, tx=p[pf.TEST_TX], rx=p[pf.TEST_RX], timeout=0)
        self._view = memoryview(self._line)
        self.nfc = None  # liftcard.nfc.Nfc: poll(board) -> tap kind, from start_nfc()
        self._log = None

    def start_nfc(self):
        # Called by the reader once configured (after its large tables).
        if self.nfc is None:
            self.nfc = _nfc(self.profile)
        return self.nfc

    # ---- watchdog and safe mode (safeboot.py) ----

    def arm_watchdog(self):
        if self._wdt is None:
            self._wdt = machine.WDT(timeout=_WDT_MS)
        self._wdt.feed()

    def take_safe_flag(self):
        if self._rtc.memory() != _SAFE_FLAG:
            return False
        self._rtc.memory(b"")
        return True

    def set_safe_flag(self):
        self._rtc.memory(_SAFE_FLAG)

    def safe_pin(self):
        return self._safe is not None and self._safe.value() == 0

    def reset(self):
        machine.reset()

    # ---- the Wi-Fi station (net.py drives it; nothing here blocks) ----

    def net_start(self, w):
        import network

        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
        wl = self._wlan
        self._wcfg = w
        if w is None:
            return  # no "wifi" in the config: whatever the REPL set up
        wl.active(True)
        try:
            wl.config(reconnects=0)  # net.py reconnects, with its backoff
        except (ValueError, OSError):
            pass
        if "address" in w:
            wl.ifconfig((w["address"], w["netmask"], w["gateway"], w["dns"]))
        else:
            try:
                wl.ifconfig("dhcp")  # back from a static address of an earlier config
            except (ValueError, TypeError, OSError):
                pass
        wl.connect(w["ssid"], w["password"])  # returns at once; net_up() says when

    def net_up(self):
        wl = self._wlan
        return wl is not None and wl.isconnected()

    def net_rssi(self):
        try:
            return self._wlan.status("rssi")
        except (AttributeError, ValueError, OSError):
            return 0

    def net_stop(self):
        # Leaves only a network it joined itself (not one set up at the REPL).
        if self._wlan is not None and self._wcfg is not None:
            self._wlan.disconnect()

    def mount(self):
        pass  # MicroPython's _boot.py mounts littlefs on the "vfs" partition at /

    def log_device(self):
        if self._log is None:
            parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=_LOG_PARTITION)
            if not parts:
                raise OSError("no '%s' partition in the partition table" % _LOG_PARTITION)
            self._log = parts[0]
        return self._log

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def epoch(self):
        return time.time() - _EPOCH_2000_TO_2024

    def set_epoch(self, s):
        y, mo, d, hh, mm, ss, wd, yd = time.gmtime(s + _EPOCH_2000_TO_2024)
        self._rtc.datetime((y, mo, d, wd, hh, mm, ss, 0))

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def signal(self, granted, relay_ms):
        now = time.ticks_ms()
        if granted:
            self._relay.value(1)
            self._green.value(1)
            self._red.value(0)
            self.relay_on = True
            self._relay_until = time.ticks_add(now, relay_ms)
        else:
            self._red.value(1)
            self._green.value(0)
        self._buzzer.duty(512)
        self._beep_until = time.ticks_add(now, 80 if granted else 400)

    def service(self):
        now = time.ticks_ms()
        if self.relay_on and time.ticks_diff(now, self._relay_until) >= 0:
            self.relay_on = False
            self._relay.value(0)
            self._green.value(0)
        if self._beep_until and time.ticks_diff(now, self._beep_until) >= 0:
            self._beep_until = 0
            self._buzzer.duty(0)
            self._red.value(0)

    def report(self, rec, logged):
        pass

    def reply(self, text):
        self._uart.write(text)
        self._uart.write(b"\n")

    def poll(self, timeout_ms):
        if self.nfc is not None:
            kind = self.nfc.poll(self)
            if kind:
                self.tap_kind = kind
                return EV_TAP
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        ev = self._take_line()  # a line already buffered by the last read
        while ev == EV_NONE:
            if self._uart.any():
                n = self._uart.readinto(self._view[self._n :])
                if n:
                    self._n += n
                    ev = self._take_line()  # only when bytes came: no rescans while idle
                    continue
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return EV_NONE
            time.sleep_ms(5)
        return ev
