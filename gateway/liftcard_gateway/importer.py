"""`liftcard-gateway import FILE`: the rides of a harvest file (liftcard_protocol.
harvest, docs/formats.md "Harvest file"; written by `liftcard-provision
harvest` from a reader whose link is down, or from a dead reader's flash).

The rides go in through the store's batch path (Store.import_rides: the same
insert, dedupe on (reader_id, seq), gaps and contiguous ack as a RIDES
message), so importing a file twice, or a file of rides the link brought
already, stores nothing new; and, being in the same table, they are forwarded
upstream like any others. A file is refused, with nothing stored, when it is
corrupted, or names a reader the config does not list, or a building other
than the reader's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol.errors import FormatError
from liftcard_protocol.harvest import Harvest, unpack_harvest

from .store import Store

# A harvest of a 16 MB log (under 520,000 rides) is under 17 MB.
MAX_HARVEST_FILE = 64 * 1024 * 1024


class ImportRefused(Exception):
    """The file is not imported; str() is the one-line reason."""


@dataclass(frozen=True)
class ImportResult:
    harvest: Harvest
    new: int  # rides stored by this import
    held: int  # rides the gateway held already
    ack_seq: int  # the reader's contiguous run after the import
    new_gaps: tuple  # ((from_seq, to_seq), ...) noticed by this import


def read_harvest(path: Path, readers: dict) -> Harvest:
    """The verified harvest in `path` for a reader of `readers` (the config's
    reader_id -> ReaderConf), or ImportRefused."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HARVEST_FILE + 1)
    except OSError as e:
        raise ImportRefused("cannot read %s: %s" % (path, e.strerror or type(e).__name__)) from None
    if len(data) > MAX_HARVEST_FILE:
        raise ImportRefused("%s is larger than any harvest file (%d bytes)" % (path, MAX_HARVEST_FILE))
    try:
        h = unpack_harvest(data)
    except FormatError as e:
        raise ImportRefused("%s is not a good harvest file (%s): %s" % (path, e.reason, e)) from None
    r = readers.get(h.reader_id)
    if r is None:
        raise ImportRefused("%s is from reader %d, which this gateway does not serve" % (path, h.reader_id))
    if r.building_id != h.building_id:
        raise ImportRefused(
            "%s is from reader %d of building %d, but this gateway has reader %d in building %d"
            % (path, h.reader_id, h.building_id, h.reader_id, r.building_id)
        )
    return h


def import_harvest(store: Store, h: Harvest, reader_conf) -> ImportResult:
    """Store the harvest's rides (one transaction). The reader is registered
    from the config first, as the daemon does at start."""
    store.ensure_reader(reader_conf.reader_id, reader_conf.building_id, reader_conf.first_seq)
    res = store.import_rides(h.reader_id, h.records)
    return ImportResult(h, res.inserted, res.duplicates, res.ack_seq, res.new_gaps)


def describe(path, r: ImportResult) -> str:
    """The line the CLI prints."""
    h = r.harvest
    span = "seq %d..%d" % (h.records[0].seq, h.records[-1].seq) if h.records else "no rides"
    line = "%s: reader %d (building %d), %d rides (%s, the reader's acked mark %d): %d new, %d already held; " % (
        path,
        h.reader_id,
        h.building_id,
        len(h.records),
        span,
        h.acked,
        r.new,
        r.held,
    )
    line += "the gateway now holds every ride of the reader up to seq %d" % r.ack_seq
    if r.new_gaps:
        line += "; new gaps " + ", ".join("%d..%d" % g for g in r.new_gaps)
    return line
