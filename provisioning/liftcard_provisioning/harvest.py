"""`liftcard-provision harvest`: rescue the rides a reader still holds, over USB,
into a harvest file (docs/formats.md "Harvest file", docs/technicians.md
"Harvest") for `liftcard-gateway import`.

Two sources, one reading:

- a live reader (`--port`): boardlink stops it (Ctrl-C, raw REPL, soft reset:
  main.py does not run, nothing touches the log meanwhile), and a snippet run
  on the board sends every programmed 32-byte slot of its `ridelog` partition
  (erased sectors and slots are skipped, so only what is written crosses the
  cable). The board's log is read, never written (no mount, no erase, no
  ack), unless --clear: then, once the file is written and read back, one
  ack journal entry marks the harvested rides acknowledged, so a reader
  holding another identity's rides (docs/technicians.md, "A reader given
  another identity") is free to serve; the file is their only copy after.
  The reader id and building are those the log's rides were written under
  (its logid.bin, docs/formats.md "Log identity"; config.json on a reader
  from before it): never a config.json written since, which may name another
  reader. Records below the identity's first seq belong to an earlier one
  (all acknowledged) and are left out.
  A host board (the unix port under the virtual serial board, tests) has
  no partition table: the NOR image it runs on is the `--log` of its main.py
  argv (the hidden option --board-log-image PATH overrides it).
- a dead reader's flash (`--image LOG.img`): the raw `ridelog` partition read
  off the chip (esptool read_flash at the partition's offset, docs/partitions.md);
  `--reader` and `--building` say whose it is.

Either way the host rebuilds the partition and reads it with the firmware's
rules (liftcard_protocol.harvest.scan_log_image): the ack journal's mark and
every slot whose CRC16 holds. The file is written atomically (a temporary file
in the same directory, fsync, rename) and read back before the command says so.

`survey` (configure asks it before writing a config) reads whose rides the
log holds and its ack mark and last seq, with the firmware's own scan on the
board, writing nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import struct
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol.epoch import epoch_from_unix
from liftcard_protocol.errors import FormatError
from liftcard_protocol.fields import ID_MAX
from liftcard_protocol.harvest import (
    SECTOR,
    SOURCE_IMAGE,
    SOURCE_LIVE,
    Harvest,
    pack_harvest,
    scan_log_image,
    unpack_harvest,
)

MAX_IMAGE = 16 * 1024 * 1024  # the largest ridelog partition (docs/partitions.md) fits

# Run on the board: every programmed 32-byte slot of the ridelog partition as
# "sector slot hex", then "END sectors". On an ESP32 the partition is found by
# label; a host board (the unix port, the virtual serial board) has no
# partition table: the NOR image it runs on is named in its main.py argv
# (which the virtual board sets at a raw-REPL boot too), or given here (%r).
_DEVICE = """
import sys, binascii
_p = %r
if _p is None and sys.platform != 'esp32' and '--log' in sys.argv:
    _p = sys.argv[sys.argv.index('--log') + 1]
if _p is None:
    import esp32
    _l = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='ridelog')
    if not _l:
        raise OSError('no ridelog partition in the partition table')
    _d = _l[0]
else:
    from hostflash import NorFlash
    _d = NorFlash(_p)
"""
_DUMP = (
    _DEVICE
    + """_n = _d.ioctl(4, 0)
_b = bytearray(4096)
_e = b'\\xff' * 4096
_f = b'\\xff' * 32
for _s in range(_n):
    _d.readblocks(_s, _b)
    if _b == _e:
        continue
    for _k in range(128):
        _x = _b[_k * 32:_k * 32 + 32]
        if _x != _f:
            print(_s, _k, binascii.hexlify(_x).decode())
print('END', _n)
del _p, _d, _n, _b, _e, _f
"""
)
# The log's ack mark and last seq, read with the firmware's own boot scan
# (which writes nothing); "LOG acked last".
_SURVEY = (
    _DEVICE
    + """try:
    from liftcard.ridelog import RideLog
    _g = RideLog(_d)
    _g.scan()
    print('LOG', _g.acked, _g.last_seq)
    del _g, RideLog
except ImportError:
    print('LOG ? ?')
del _p, _d
"""
)
# Marks the log's rides up to %d acknowledged (the firmware's own journal
# entry): only after the harvest file holding them is written and read back.
_CLEAR = (
    _DEVICE
    + """from liftcard.ridelog import RideLog
_g = RideLog(_d)
_g.mount()
if _g.last_seq != %d or _g.acked != %d:
    raise OSError('the log changed since it was read')
_g.ack(_g.last_seq)
print('ACKED', _g.acked)
del _p, _d, _g, RideLog
"""
)
LOGID = "logid.bin"
_LOGID = struct.Struct(">4sIII8s")
_LOGID_LABEL = b"liftcard log identity"


class HarvestError(Exception):
    """One line for the technician; exit code 2."""


@dataclass(frozen=True)
class Result:
    harvest: Harvest
    path: Path
    bad_slots: int  # programmed slots whose CRC16 failed (torn by a power cut, or damaged): left out


@dataclass(frozen=True)
class Owner:
    """Whose rides the log holds (docs/formats.md, "Log identity")."""

    reader_id: int
    building_id: int
    from_seq: int  # the first seq logged under it
    key_check: bytes | None  # HMAC-SHA256(key, label)[:8]; None: not known

    def same(self, cfg: dict) -> bool:
        """True when `cfg` (a validated reader config) is this identity."""
        if (cfg["reader_id"], cfg["building_id"]) != (self.reader_id, self.building_id):
            return False
        return self.key_check is None or hmac.compare_digest(key_check(cfg["key"]), self.key_check)


@dataclass(frozen=True)
class Survey:
    owner: Owner | None  # None: the board has neither logid.bin nor a config
    acked: int
    last_seq: int

    @property
    def backlog(self) -> int:
        return max(0, self.last_seq - self.acked)


def key_check(key_hex: str) -> bytes:
    return hmac.new(bytes.fromhex(key_hex), _LOGID_LABEL, hashlib.sha256).digest()[:8]


def parse_logid(raw: bytes | None) -> Owner | None:
    if raw is None or len(raw) != _LOGID.size:
        return None
    magic, rid, bid, first, kc = _LOGID.unpack(raw)
    return Owner(rid, bid, first, kc) if magic == b"LCID" else None


def owner_of(board) -> Owner | None:
    """The identity of the board's logged rides: its logid.bin, else (a
    reader from before it) its config.json; None: neither."""
    own = parse_logid(board.read_file(LOGID))
    if own is not None:
        return own
    raw = board.read_file("config.json")
    if raw is None:
        return None
    try:
        cfg = json.loads(raw)
        return Owner(int(cfg["reader_id"]), int(cfg["building_id"]), 1, key_check(cfg["key"]))
    except (ValueError, KeyError, TypeError):
        raise HarvestError(
            "the reader's config.json on %s does not name its reader and building" % board.port
        ) from None


def survey(board, host_log: str | None = None) -> Survey:
    """Whose rides, and how many not acknowledged, on a board open in the raw REPL."""
    own = owner_of(board)
    if own is None:  # never configured: no ride has an identity to lose
        return Survey(None, 0, 0)
    out = board.exec(_SURVEY % (host_log,)).split()
    try:
        if out[-3] != "LOG":
            raise ValueError
        if out[-1] == "?":  # no firmware deployed to read it with: the whole log, read here
            scan = scan_log_image(image_from_dump(board.exec(_DUMP % (host_log,))))
            return Survey(own, scan.acked, max([scan.acked] + [r.seq for r in scan.records]))
        return Survey(own, int(out[-2]), int(out[-1]))
    except (ValueError, IndexError):
        raise HarvestError(
            "the board's ride log could not be read: check the cable and run the same command again"
        ) from None


def image_from_dump(text: str) -> bytes:
    """The partition rebuilt from the board's dump (erased everywhere else)."""
    lines = text.strip().splitlines()
    if not lines or not lines[-1].startswith("END "):
        raise HarvestError("the board's log dump ended early (no END line): run the same command again")
    try:
        n = int(lines[-1].split()[1])
        img = bytearray(b"\xff" * (n * SECTOR))
        for line in lines[:-1]:
            s, k, h = line.split()
            slot = bytes.fromhex(h)
            s, k = int(s), int(k)
            if len(slot) != 32 or not 0 <= s < n or not 0 <= k < SECTOR // 32:
                raise ValueError(line)
            img[s * SECTOR + k * 32 : s * SECTOR + (k + 1) * 32] = slot
    except (ValueError, IndexError):
        raise HarvestError("the board's log dump is garbled: check the cable and run the same command again") from None
    return bytes(img)


def read_live(board, host_log: str | None = None) -> tuple[Owner, bytes]:
    """(whose rides, the ridelog partition) from a board open in the raw REPL
    (boardlink.connect). host_log: a host board's NOR image."""
    own = owner_of(board)
    if own is None:
        raise HarvestError(
            "the reader on %s has no config.json, so its id is unknown: read its flash with "
            "--image, giving --reader and --building" % board.port
        )
    return own, image_from_dump(board.exec(_DUMP % (host_log,)))


def read_image(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE + 1)
    except OSError as e:
        raise HarvestError("cannot read %s: %s" % (path, e.strerror or type(e).__name__)) from None
    if len(data) > MAX_IMAGE:
        raise HarvestError("%s is larger than any ridelog partition (%d bytes)" % (path, MAX_IMAGE))
    return data


def build(
    reader_id: int, building_id: int, image: bytes, source: int, now: float | None = None, from_seq: int = 1
) -> tuple:
    """(Harvest, bad slots) of a partition image: the records from `from_seq`
    (below it, another identity's rides)."""
    try:
        scan = scan_log_image(image)
    except FormatError as e:
        raise HarvestError("not a ridelog partition image: %s" % e) from None
    try:
        h = Harvest(
            reader_id,
            building_id,
            scan.acked,
            epoch_from_unix(int(time.time() if now is None else now)),
            tuple(r for r in scan.records if r.seq >= from_seq),
            source,
        )
    except ValueError as e:
        raise HarvestError(str(e)) from None
    return h, scan.bad_slots


def exists_error(path: Path) -> HarvestError:
    return HarvestError("%s exists: move it away or name another --out (a harvest file is never overwritten)" % path)


def write_atomic(path: Path, h: Harvest) -> None:
    """The file at `path` holds the whole harvest, or nothing is there. An
    existing file is never replaced: it may be another reader's rides, or
    this one's from before its log moved on, not yet imported."""
    data = pack_harvest(h)
    unpack_harvest(data)  # every record's CRC and the digest, before anything is written
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails rather than replace what is there
            os.unlink(tmp)
        except FileExistsError:
            os.unlink(tmp)
            raise exists_error(path) from None
        except OSError:  # no hard links (a FAT USB stick): checked, then renamed
            if path.exists():
                os.unlink(tmp)
                raise exists_error(path) from None
            os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HarvestError("cannot write %s: %s" % (path, e.strerror or type(e).__name__)) from None
    if unpack_harvest(path.read_bytes()) != h:  # read back: what the gateway will read
        raise HarvestError("%s did not read back as written: the disk is failing" % path)


def default_name(h: Harvest) -> Path:
    return Path("reader-%d-%s.lchv" % (h.reader_id, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))


def describe(r: Result) -> str:
    h = r.harvest
    span = "seq %d..%d" % (h.records[0].seq, h.records[-1].seq) if h.records else "no rides"
    line = "reader %d (building %d): %d rides (%s), %d not yet acknowledged by a gateway (acked mark %d); wrote %s" % (
        h.reader_id,
        h.building_id,
        len(h.records),
        span,
        len(h.unacked),
        h.acked,
        r.path,
    )
    if r.bad_slots:
        line += "; %d damaged slots (CRC failed: a tap torn by a power cut, or bad flash) left out" % r.bad_slots
    return line


# ---- the subcommand (cli.py adds it) ----


def add_parser(sub) -> None:
    hp = sub.add_parser(
        "harvest",
        help="rescue the rides a reader holds (live over USB, or a dead reader's flash image) into a harvest file",
        description="Read the ride log of a reader into a harvest file for `liftcard-gateway import` "
        "(docs/technicians.md, Harvest). Live: the reader is stopped (Ctrl-C, raw REPL), its ridelog "
        "partition read (never written) and the reader restarted. --image: a raw ridelog partition image "
        "read off a dead reader's flash, with --reader and --building.",
    )
    hp.add_argument("--port", help="the reader's serial port (default: the one ESP32 board plugged in)")
    hp.add_argument("--image", metavar="LOG.img", help="a raw ridelog partition image instead of a live reader")
    hp.add_argument("--reader", type=int, metavar="ID", help="with --image: the reader id")
    hp.add_argument("--building", type=int, metavar="ID", help="with --image: the building id")
    hp.add_argument("--out", metavar="FILE", help="the harvest file (default: reader-ID-UTCTIME.lchv here)")
    hp.add_argument("--stay-stopped", action="store_true", help="live: leave the reader at the REPL afterwards")
    hp.add_argument(
        "--clear",
        action="store_true",
        help="live: once the file is written and read back, mark the harvested rides acknowledged on the reader "
        "(they will never be sent by it: the file becomes their only copy, import it); what frees a reader "
        "configured as another reader while it held rides",
    )
    # A host board (the unix port, the virtual serial board) has no partition table: its NOR image.
    hp.add_argument("--board-log-image", help=argparse.SUPPRESS)
    hp.set_defaults(func=cmd_harvest)


def cmd_harvest(args) -> int:
    from .boardlink import BoardError

    try:
        if args.out and Path(args.out).exists():  # before the reader is stopped for nothing
            raise exists_error(Path(args.out))
        if args.image:
            if args.clear:
                raise HarvestError("--clear goes with a live reader (--port), not --image")
            if args.reader is None or args.building is None:
                raise HarvestError("--image needs --reader and --building (a flash image does not say whose it is)")
            for opt, v in (("--reader", args.reader), ("--building", args.building)):
                if not 1 <= v <= ID_MAX:
                    raise HarvestError("%s: an id from 1 to %d, got %d" % (opt, ID_MAX, v))
            h, bad = build(args.reader, args.building, read_image(Path(args.image)), SOURCE_IMAGE)
        else:
            if args.reader is not None or args.building is not None:
                raise HarvestError("--reader and --building go with --image (a live reader names itself)")
            return _live(args)
        path = Path(args.out) if args.out else default_name(h)
        write_atomic(path, h)
    except (HarvestError, BoardError) as e:
        print("liftcard-provision: %s" % e, file=sys.stderr)
        return 2
    print(describe(Result(h, path, bad)))
    return 0


def _live(args) -> int:
    from . import boardlink

    b = boardlink.connect(args.port)
    try:
        own, img = read_live(b, args.board_log_image)
        h, bad = build(own.reader_id, own.building_id, img, SOURCE_LIVE, from_seq=own.from_seq)
        path = Path(args.out) if args.out else default_name(h)
        write_atomic(path, h)  # read back: the file holds every ride before the reader lets go of one
        print(describe(Result(h, path, bad)))
        if args.clear:
            print(clear(b, h, path, args.board_log_image))
    finally:
        b.close(run=not args.stay_stopped)  # the reader serves taps again, whatever happened here
    return 0


def clear(board, h: Harvest, path: Path, host_log: str | None = None) -> str:
    """Mark the harvested rides acknowledged on the board (it is stopped: its
    log is as it was read). Only the unacknowledged rides the file holds."""
    last = h.records[-1].seq if h.records else h.acked
    if last <= h.acked:
        return "cleared: nothing to clear, every ride on the reader was acknowledged already"
    out = board.exec(_CLEAR % ((host_log,) + (last, h.acked)))
    if "ACKED %d" % last not in out:
        raise HarvestError(
            "the reader did not mark its rides acknowledged; %s holds them: run harvest --clear again" % path
        )
    return (
        "CLEARED: reader %d's rides up to seq %d are marked acknowledged on the reader, which will never send "
        "them: %s is now their only copy: import it at the gateway (liftcard-gateway import %s)"
        % (h.reader_id, last, path, path.name)
    )
