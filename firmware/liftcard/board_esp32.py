# The ESP32 board: relay, LED and buzzer on GPIOs, the hardware watchdog, the
# RTC, the filesystem on the "vfs" partition (mounted by MicroPython's boot) and
# the ride log on its own raw data partition "ridelog".
#
# Card taps come from the NFC front end: a PN532 on UART2 (HSU, the default)
# or on I2C (_NFC_BUS), read by liftcard.nfc. A line protocol on UART1 (same
# as the host board's stdin) also lets a test rig inject taps and commands, so
# the hil_tests suite runs unchanged against a real board.

import time

import esp32
import machine
from micropython import const

from .lineproto import EV_NONE, EV_TAP, LineProtocol

_EPOCH_2000_TO_2024 = const(757382400)  # seconds from 2000-01-01 to 2024-01-01
_WDT_MS = const(8000)
_PIN_RELAY = const(26)
_PIN_LED_GREEN = const(25)
_PIN_LED_RED = const(33)
_PIN_BUZZER = const(32)
_UART_ID = const(1)
_UART_TX = const(17)
_UART_RX = const(16)
_LOG_PARTITION = "ridelog"
_NFC_BUS = "uart"  # "uart" (PN532 HSU), "i2c", or "" (no PN532)
_NFC_UART_ID = const(2)
_NFC_TX = const(27)
_NFC_RX = const(14)
_NFC_SDA = const(21)
_NFC_SCL = const(22)


def _nfc():
    if not _NFC_BUS:
        return None
    from .nfc import Nfc
    from .pn532 import PN532
    from . import pn532link

    if _NFC_BUS == "i2c":
        link = pn532link.I2cLink(machine.I2C(0, sda=machine.Pin(_NFC_SDA), scl=machine.Pin(_NFC_SCL), freq=400000))
    else:
        link = pn532link.UartLink(machine.UART(_NFC_UART_ID, 115200, tx=_NFC_TX, rx=_NFC_RX, timeout=0, rxbuf=512))
    return Nfc(PN532(link))


class Board(LineProtocol):
    def __init__(self):
        self._init_lines(256)
        self.relay_on = False
        self._relay_until = 0
        self._relay = machine.Pin(_PIN_RELAY, machine.Pin.OUT, value=0)
        self._green = machine.Pin(_PIN_LED_GREEN, machine.Pin.OUT, value=0)
        self._red = machine.Pin(_PIN_LED_RED, machine.Pin.OUT, value=0)
        self._buzzer = machine.PWM(machine.Pin(_PIN_BUZZER), freq=2700, duty=0)
        self._beep_until = 0
        self._rtc = machine.RTC()
        self._wdt = machine.WDT(timeout=_WDT_MS)
        self._uart = machine.UART(_UART_ID, 115200, tx=_UART_TX, rx=_UART_RX, timeout=0)
        self._view = memoryview(self._line)
        self.nfc = None  # liftcard.nfc.Nfc: poll(board) -> tap kind, from start_nfc()
        self._log = None

    def start_nfc(self):
        # Called by the reader once configured (after its large tables).
        if self.nfc is None:
            self.nfc = _nfc()
        return self.nfc

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
