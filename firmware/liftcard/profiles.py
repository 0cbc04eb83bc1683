# Board profiles: which GPIO does what on a given reader PCB (docs/board.md).
# The config's "board" names one; the ESP32 board builds its pins from it and
# refuses, with one line naming the pin and why, a profile that uses a pin the
# module reserves or one pin twice. The table is data, so a new PCB is one
# row here, and the same check runs on the host (tests/firmware/test_profiles.py).

from micropython import const

DEFAULT = "devkit-v1"

# Profile fields (indexes into a row).
MODULE = const(0)  # "wroom" or "wrover": the module's reserved pins
RELAY = const(1)
LED_GREEN = const(2)
LED_RED = const(3)
BUZZER = const(4)
NFC_BUS = const(5)  # "uart" (PN532 HSU), "i2c", or "" (no PN532)
NFC_A = const(6)  # UART: TX / I2C: SDA
NFC_B = const(7)  # UART: RX / I2C: SCL
TEST_TX = const(8)  # the test-protocol UART (UART1)
TEST_RX = const(9)
SAFE_PIN = const(10)  # held low during the boot window: safe mode (-1: none)

# The pin roles, in row order from RELAY, for messages.
_ROLES = ("relay", "green LED", "red LED", "buzzer", "", "NFC TX/SDA", "NFC RX/SCL", "test UART TX", "test UART RX")
# Roles that drive their pin (34..39 are input only).
_OUTPUTS = (RELAY, LED_GREEN, LED_RED, BUZZER, TEST_TX)

PROFILES = {
    # The generic ESP32 DevKit v1 (WROOM-32) wiring: PN532 on UART2 (HSU).
    "devkit-v1": ("wroom", 26, 25, 33, 32, "uart", 27, 14, 17, 16, 0),
    # The same PCB with the PN532 on I2C (its DIP switches on I2C).
    "devkit-v1-i2c": ("wroom", 26, 25, 33, 32, "i2c", 21, 22, 17, 16, 0),
    # A WROVER (PSRAM) module: GPIO16/17 belong to the PSRAM, so the test
    # UART moves to 18/19.
    "wrover-v1": ("wrover", 26, 25, 33, 32, "uart", 27, 14, 18, 19, 0),
}
NAMES = tuple(sorted(PROFILES))

# GPIO6-11: the SPI flash on every ESP32 module; WROVER: 16/17 the PSRAM.
_FLASH = (6, 7, 8, 9, 10, 11)
_RESERVED = {"wroom": (), "wrover": (16, 17)}
# Not bonded out on the ESP32 (GPIO0-39 without 20, 24, 28-31).
_ABSENT = (20, 24, 28, 29, 30, 31)


class ProfileError(Exception):
    pass


def _why_not(module, pin):
    if not 0 <= pin <= 39 or pin in _ABSENT:
        return "no such GPIO on an ESP32"
    if pin in _FLASH:
        return "the SPI flash of every ESP32 module"
    if pin in _RESERVED[module]:
        return "reserved by the %s module (PSRAM)" % module.upper()
    return None


def check(name, row):
    # Raises ProfileError (one line) if the row is not a usable wiring.
    if type(row) is not tuple or len(row) != 11:
        raise ProfileError("board %s: a profile row has 11 fields" % name)
    module = row[MODULE]
    if module not in _RESERVED:
        raise ProfileError("board %s: unknown module %s" % (name, module))
    if row[NFC_BUS] not in ("uart", "i2c", ""):
        raise ProfileError("board %s: NFC bus must be uart, i2c or empty" % name)
    used = []
    for i in range(RELAY, TEST_RX + 1):
        if i == NFC_BUS or (i in (NFC_A, NFC_B) and not row[NFC_BUS]):
            continue
        pin = row[i]
        role = _ROLES[i - RELAY]
        why = _why_not(module, pin)
        if why:
            raise ProfileError("board %s: %s on GPIO%d, %s" % (name, role, pin, why))
        if i in _OUTPUTS and pin >= 34:
            raise ProfileError("board %s: %s on GPIO%d, an input-only pin" % (name, role, pin))
        if pin in used:
            raise ProfileError("board %s: GPIO%d used twice (%s)" % (name, pin, role))
        used.append(pin)
    safe = row[SAFE_PIN]
    if safe != -1:
        why = _why_not(module, safe)
        if why:
            raise ProfileError("board %s: safe-mode pin on GPIO%d, %s" % (name, safe, why))
        if safe in used:
            raise ProfileError("board %s: safe-mode pin GPIO%d has another role" % (name, safe))
    return row


def get(name=None):
    # The checked row of a named profile (None: the default).
    name = name or DEFAULT
    row = PROFILES.get(name)
    if row is None:
        raise ProfileError("board %s: unknown profile (known: %s)" % (name, ", ".join(NAMES)))
    return check(name, row)
