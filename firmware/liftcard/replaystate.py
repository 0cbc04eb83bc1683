# The link codec's down replay state on flash (docs/uplink.md, "Replay across
# reboots"): the last accepted down counter (uplinkcodec.Codec.last_hi,
# last_lo), kept across reboots so that a recorded TIME or DELTA cannot be
# replayed to a rebooted reader.
#
# The uplink saves it when a TIME or DELTA is accepted, before it is applied
# (those change state), and when the last WHITELIST chunk of a list arrives,
# before the list is installed. An ACK only moves the log's ack cursor, which
# never goes back, so replaying an old one is harmless and it is not worth a
# flash write per batch.
#
#   file link.ctr: last_hi u32 BE, last_lo u32 BE; replaced atomically (atomic.py)

from . import atomic, u32

_FILE = "link.ctr"
_NEW = "link.new"


def load(codec):
    # Restores the codec's replay state; a missing or short file leaves it as is.
    try:
        with open(_FILE, "rb") as f:
            b = f.read(8)
    except OSError:
        return
    if len(b) == 8:
        codec.last_hi = u32.get(b, 0)
        codec.last_lo = u32.get(b, 4)


def save(codec):
    b = bytearray(8)
    u32.put(b, 0, codec.last_hi)
    u32.put(b, 4, codec.last_lo)
    atomic.write(_FILE, _NEW, b)
