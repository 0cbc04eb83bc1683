"""The numbered codes of the formats: card status and class, ride result and
flags, delta operations (docs/formats.md)."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Status(IntEnum):
    ACTIVE = 0
    SUSPENDED = 1  # household unpaid
    LOST = 2
    EXPIRED = 3


class Klass(IntEnum):
    RESIDENT = 0
    EXEMPT = 1  # elderly / disabled
    STAFF = 2
    VISITOR = 3


# Config names of the classes (tariff.free_classes), indexed by class value.
CLASS_NAMES = ("resident", "exempt", "staff", "visitor")
STATUS_NAMES = ("active", "suspended", "lost", "expired")


class Result(IntEnum):
    GRANTED = 0
    UNKNOWN_CARD = 1
    SUSPENDED = 2
    LOST = 3
    EXPIRED = 4
    NO_FLOOR = 5
    NO_WHITELIST = 6
    BAD_READ = 7
    AUTH_FAILED = 8
    REPLAY = 9
    CARD_REMOVED = 10
    CARD_GARBAGE = 11
    LEGACY_DISABLED = 12


RESULT_NAMES = {r.value: r.name for r in Result}


class Flag(IntFlag):
    CLOCK_UNSYNCED = 0x01
    LEGACY_UID = 0x02
    DEBOUNCED = 0x04
    CAPPED = 0x08
    FREE_CLASS = 0x10
    CAP_UNTRACKED = 0x20


FLAG_NAMES = {f.value: f.name for f in Flag}


class Op(IntEnum):
    UPSERT = 1
    REMOVE = 2
