"""Error types and the stable reason codes of every byte format.

Anything refused raises `FormatError` (a `ValueError`) whose `reason` is a short
code and whose message is one line naming the problem; a bad reader
configuration raises `ConfigError`, whose `key` names the offending key. No
message ever carries a key, a MAC or a config value.
"""

from __future__ import annotations

# FormatError reasons. Stable strings: the shared vectors name them.
R_SIZE = "size"  # shorter or longer than the format says
R_MAGIC = "magic"  # wrong 4-byte magic
R_FORMAT = "format"  # unsupported format number
R_RECORD_SIZE = "record_size"
R_HEADER = "header"  # a reserved header field is not zero
R_READER = "reader"  # for another reader
R_BUILDING = "building"  # for another building
R_MAC = "mac"  # MAC does not verify
R_ORDER = "order"  # card ids not strictly increasing (includes duplicates)
R_FIELD = "field"  # a field out of range (status/class nibble, remove payload...)
R_OP = "op"  # unknown delta operation byte
R_VERSION = "version"  # delta new_version not greater than its base_version
R_STALE = "stale"  # version not newer than the one held (replay / rollback)
R_GAP = "gap"  # delta base_version is not the held version
R_CRC = "crc"  # CRC16 does not match (torn or corrupted)
R_EMPTY = "empty"  # an erased 32-byte ride slot (all 0xFF)

REASONS = (
    R_SIZE,
    R_MAGIC,
    R_FORMAT,
    R_RECORD_SIZE,
    R_HEADER,
    R_READER,
    R_BUILDING,
    R_MAC,
    R_ORDER,
    R_FIELD,
    R_OP,
    R_VERSION,
    R_STALE,
    R_GAP,
    R_CRC,
    R_EMPTY,
)


class FormatError(ValueError):
    """A structure is refused. `reason` is one of REASONS; str() is one line."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ConfigError(ValueError):
    """A reader config is refused. `key` is the offending key ("tariff.fee_fen");
    the message names the key and the rule, never the value."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
