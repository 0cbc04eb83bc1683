# Whose rides the ride log holds (docs/formats.md, "Log identity").
#
# A ride record does not say which reader logged it: the uplink sends it under
# the identity of the config running at send time. If config.json changed
# (another reader id, building or key) while rides were not yet acknowledged,
# they would reach the gateway, and the ledger, as the new reader's. So the
# identity the log's rides are written under is kept beside the log, in its
# own file, and changes only while no ride is unacknowledged.
#
# logid.bin, 24 bytes, replaced atomically (atomic.py):
#   "LCID", u32 reader_id, u32 building_id, u32 from_seq (the first seq logged
#   under it: the records below belong to an earlier identity, all of them
#   acknowledged), 8 bytes HMAC-SHA256(key, "liftcard log identity") (the key
#   compared without being stored twice; it tells nothing of the key).
#
# Never on the tap path: the reader loads this module at boot and at CONFIG
# only, and drops it after (Reader._own_log): 192K has no room to keep it
# beside the NFC stack and the uplink.

from micropython import const

from . import atomic, u32
from .config import ConfigError
from .mac import Mac

FILE = "logid.bin"
_NEW = "logid.new"
SIZE = const(24)
_MAGIC = b"LCID"
_LABEL = b"liftcard log identity"


def of(cfg, from_seq):
    # The identity of a (validated) config, as the file holds it.
    b = bytearray(SIZE)
    b[0:4] = _MAGIC
    u32.put(b, 4, cfg["reader_id"])
    u32.put(b, 8, cfg["building_id"])
    u32.put(b, 12, from_seq)
    b[16:24] = Mac(cfg["key"]).of(_LABEL)[:8]
    return b


def same(a, b):
    # The same reader, building and key (from_seq aside).
    return a[4:12] == b[4:12] and a[16:24] == b[16:24]


def reader_of(b):
    return u32.get(b, 4)


def from_seq(b):
    return u32.get(b, 12)


def read():
    # The recorded identity, or None (never recorded, or not a valid file:
    # a cut can only leave the old file or the new one, see atomic.py).
    try:
        with open(FILE, "rb") as f:
            b = f.read(SIZE + 1)
    except OSError:
        return None
    if len(b) != SIZE or b[0:4] != _MAGIC:
        return None
    return bytearray(b)


def write(b):
    atomic.write(FILE, _NEW, b)


def _refusal(held, n):
    return "reader %d still holds %d rides not acknowledged: harvest them first" % (reader_of(held), n)


def own(r, cfg=None):
    # cfg: before a CONFIG writes it, refused (ConfigError) if the
    # unacknowledged rides would then be sent as another reader's; else they
    # are its own, or there are none. None: once a config is applied, at boot
    # and after a CONFIG: whose are the unacknowledged rides? A config.json
    # written while the reader was stopped (over the raw REPL) may name
    # another reader than the one they were logged under: those rides are
    # then held for a harvest, never sent, never acknowledged, and no ride is
    # logged beside them (docs/formats.md, "Log identity"). With nothing
    # unacknowledged the log takes the config's identity; so does a log from
    # before logid.bin existed (its rides are the config's).
    log = r.log
    held = read()
    if cfg is not None:
        n = log.backlog
        if n > 0 and held is not None and not same(held, of(cfg, 0)):
            raise ConfigError("config: " + _refusal(held, n))
        return
    r.foreign = 0
    r.foreign_text = None
    mine = of(r.cfg, log.next_seq if held is not None else 1)
    if held is None or not same(held, mine):
        if held is not None and log.backlog > 0:
            r.foreign = log.backlog
            r.foreign_text = _refusal(held, r.foreign)
        else:
            held = mine
            write(held)
    r.log_reader = reader_of(held)
    r.log_from = from_seq(held)
    if r.foreign:
        r.error = r.foreign_text
        if r.uplink is not None:  # made by the config, not yet connected: nothing went out
            r.uplink.close()
            r.uplink = None
