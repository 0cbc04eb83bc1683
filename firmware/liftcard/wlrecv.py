# A full whitelist arriving in WHITELIST chunks (docs/uplink.md, kind 0x84).
#
# The gateway sends the chunks of one version in order of offset (0, 4096,
# 8192, ...) on QoS 1, so a chunk may come twice. A list is up to 1.6 MB and the
# heap is 192K: chunks are appended to a file (wl/recv.new) as they come and
# never held together in RAM. `held` is the number of bytes in that file:
#
#   offset == held   append (the next chunk)
#   offset <  held   a duplicate: ignored
#   offset >  held   a gap (a chunk was lost): the partial file is dropped and
#                    the assembly waits for offset 0 again
#   offset == 0, or another version or total: starts over
#
# A version not newer than the one held is refused before anything is touched.
# When `total` bytes are held, Whitelist.install checks the file as any list
# (MAC, reader, building, order, version newer) and renames it over the base
# list: after a power cut the reader holds the old list or the new one. A
# partial file a power cut left behind is removed at boot (Whitelist.open):
# nothing in RAM says how far it got or that it is the right version.

from micropython import const

from . import replaystate, u32
from .whitelist import RECV, WhitelistError, _remove

_HDR = const(32)  # LCWL header
_REC = const(16)
_MAC = const(16)


class WlRecv:
    def __init__(self, wl):
        self.wl = wl
        self.version = 0  # the version being assembled (0: none)
        self.total = 0
        self.held = 0  # bytes in RECV
        self.duplicates = 0
        self.skipped = 0  # chunks ignored while waiting for offset 0

    def _drop(self):
        _remove(RECV)
        self.version = self.total = self.held = 0

    def add(self, version, total, offset, data):
        # One verified chunk (data: a memoryview, valid until the next down
        # message). Returns True when the whole file is held: the caller then
        # calls install(). Raises WhitelistError for a stale version (nothing
        # touched) or a gap (the partial file dropped).
        if version <= self.wl.version:
            raise WhitelistError("stale whitelist chunk v%d (holding %d)" % (version, self.wl.version))
        if version != self.version or total != self.total or offset == 0:
            # Another list, or the same one from the start again.
            dropped = self.version
            if dropped:
                self._drop()
            if offset:
                # Not the start: wait for offset 0 (quietly, unless this
                # chunk just ended an assembly in progress).
                self.skipped += 1
                if dropped:
                    raise WhitelistError(
                        "whitelist v%d chunk at %d cuts v%d short: waiting for offset 0" % (version, offset, dropped)
                    )
                return False
            self._check_head(version, total, data)
            self.version = version
            self.total = total
        elif offset < self.held:
            self.duplicates += 1
            return False
        elif offset > self.held:
            held = self.held
            self._drop()
            raise WhitelistError("whitelist v%d chunk at %d after %d bytes: gap, restarting" % (version, offset, held))
        n = len(data)
        try:
            with open(RECV, "ab" if offset else "wb") as f:
                f.write(data)
        except OSError:
            self._drop()
            raise WhitelistError("cannot store whitelist chunk (flash full?)")
        self.held += n
        return self.held == self.total

    def _check_head(self, version, total, data):
        # The first chunk: when it carries the LCWL header, it must agree with
        # the chunk header (the MAC is checked once the file is whole).
        if len(data) < _HDR:
            return
        if bytes(data[0:4]) != b"LCWL":
            raise WhitelistError("whitelist chunk 0 is not a whitelist (bad magic)")
        if u32.get(data, 16) != version:
            raise WhitelistError("whitelist chunk version %d but list version %d" % (version, u32.get(data, 16)))
        if _HDR + u32.get(data, 20) * _REC + _MAC != total:
            raise WhitelistError("whitelist chunk total %d does not match the list's count" % total)

    def install(self):
        # The whole file is held: check and install it, then forget it.
        # Returns (version, count); raises WhitelistError (old list kept).
        try:
            return self.wl.install(RECV, True)
        finally:
            self._drop()


def on_chunk(up, codec):
    # Uplink._on_msg's WHITELIST branch; True once a list is installed (kept
    # here, imported at the first chunk: a reader that never receives a list
    # does not hold this code in its heap). The replay state is
    # saved before the install, not per chunk: the partial file does not
    # survive a reboot, and chunks replayed after one could at most assemble a
    # list the gateway made for this reader that is still newer than the one
    # held (versions never go back); a flash write per chunk would cost more
    # than that protects.
    r = up.reader
    wr = up.wlrecv
    if wr is None:
        wr = up.wlrecv = WlRecv(r.wl)
    if not wr.add(codec.version, codec.total, codec.offset, codec.blob):
        return False
    replaystate.save(codec)
    wr.install()
    r.error = r.wl.error
    return True
