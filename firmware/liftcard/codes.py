# Ride results, record flags, card statuses and classes (docs/formats.md).
from micropython import const

GRANTED = const(0)
UNKNOWN_CARD = const(1)
SUSPENDED = const(2)
LOST = const(3)
EXPIRED = const(4)
NO_FLOOR = const(5)
NO_WHITELIST = const(6)
BAD_READ = const(7)
AUTH_FAILED = const(8)
REPLAY = const(9)
CARD_REMOVED = const(10)
CARD_GARBAGE = const(11)
LEGACY_DISABLED = const(12)

RESULT_NAMES = (
    "GRANTED",
    "UNKNOWN_CARD",
    "SUSPENDED",
    "LOST",
    "EXPIRED",
    "NO_FLOOR",
    "NO_WHITELIST",
    "BAD_READ",
    "AUTH_FAILED",
    "REPLAY",
    "CARD_REMOVED",
    "CARD_GARBAGE",
    "LEGACY_DISABLED",
)

F_CLOCK_UNSYNCED = const(0x01)
F_LEGACY_UID = const(0x02)
F_DEBOUNCED = const(0x04)
F_CAPPED = const(0x08)
F_FREE_CLASS = const(0x10)
F_CAP_UNTRACKED = const(0x20)

ST_ACTIVE = const(0)
ST_SUSPENDED = const(1)
ST_LOST = const(2)
ST_EXPIRED = const(3)

CL_RESIDENT = const(0)
CL_EXEMPT = const(1)
CL_STAFF = const(2)
CL_VISITOR = const(3)
CLASS_NAMES = ("resident", "exempt", "staff", "visitor")

# Kinds of tap a board's card reader reports.
TAP_CREDENTIAL = const(1)  # card id from a verified credential
TAP_LEGACY_UID = const(2)  # bare UID (legacy mode only)
TAP_FAILED = const(3)  # the card was seen but its credential failed: result code in the tap
