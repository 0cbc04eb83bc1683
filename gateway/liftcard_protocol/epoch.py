"""Times and days: u32 seconds since the liftcard epoch (2024-01-01T00:00Z),
local days since that epoch (docs/formats.md)."""

from __future__ import annotations

import datetime

LIFTCARD_EPOCH = 1704067200  # 2024-01-01T00:00:00Z as a Unix timestamp
_EPOCH_DATE = datetime.date(2024, 1, 1)


def local_day(epoch_s: int, utc_offset_min: int) -> int:
    """Local days since the liftcard epoch (floor division, so it is also right
    for a negative offset just after the epoch)."""
    return (epoch_s + utc_offset_min * 60) // 86400


def day_to_date(day: int) -> datetime.date:
    """The civil date of a local day (as used by valid_until)."""
    return _EPOCH_DATE + datetime.timedelta(days=day)


def date_to_day(d: datetime.date) -> int:
    return (d - _EPOCH_DATE).days


def month_key(epoch_s: int, utc_offset_min: int) -> int:
    """year*100 + month of the local date: the monthly cap resets when it changes."""
    d = day_to_date(local_day(epoch_s, utc_offset_min))
    return d.year * 100 + d.month


def epoch_from_unix(unix_s: int) -> int:
    return unix_s - LIFTCARD_EPOCH


def unix_from_epoch(epoch_s: int) -> int:
    return epoch_s + LIFTCARD_EPOCH
