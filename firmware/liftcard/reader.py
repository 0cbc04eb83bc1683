# The reader: tap -> credential -> lookup -> fee -> durable log -> signal.
#
# Identical on the ESP32 and the host; everything hardware goes through the
# board. The decision path touches only flash reads, one 32-byte program and
# preallocated buffers: no network, no allocation.

import gc
from micropython import const

from . import VERSION, atomic, codes, u32
from . import config as configmod
from .clock import Clock
from .fees import Fees
from . import ridelog
from .ridelog import RideLog
from .whitelist import Whitelist, discard_partial
from .lineproto import EV_CMD, EV_TAP

_NO_FLOOR = const(0xFF)
_BOOT_FILE = "boot.cnt"
_BOOT_NEW = "boot.new"
_CHECKPOINT_EVERY_MS = const(60000)
_QUIET_BEFORE_ERASE_MS = const(300)
_DELTA_MAX = const(24 + 17 * 256 + 16)


def _bump_boot_count():
    # A 32-bit count of power-ons that never goes back: the uplink's message
    # counters start from it (docs/uplink.md); ride records carry its low 16
    # bits. Replaced atomically (atomic.py): a power cut keeps the old count.
    n = 0
    try:
        with open(_BOOT_FILE, "rb") as f:
            b = f.read(4)
        if len(b) == 4:
            n = u32.get(b)
        elif len(b) == 2:  # the earlier 16-bit file
            n = (b[0] << 8) | b[1]
    except OSError:
        pass
    n += 1
    b = bytearray(4)
    u32.put(b, 0, n)
    atomic.write(_BOOT_FILE, _BOOT_NEW, b)
    return n


def _number(arg, default):
    # A command's decimal argument; -1 when it is not one (the caller's usage
    # check then names the command's form).
    if arg is None:
        return default
    return int(arg) if arg.isdigit() else -1


class Reader:
    def __init__(self, board):
        self.board = board
        self.card = board.card  # the board's NFC layer writes each card id here
        self.rec = bytearray(32)
        self.cfg = None
        self.error = None
        self.unlogged = 0  # rides granted while the log was full
        self.foreign = 0  # unacked rides logged under another identity (logid.py)
        self.foreign_text = None  # why they are held, for STATUS and refusals
        self.log_reader = 0  # the reader id the log's rides are written under
        self.log_from = 1  # its first seq: what lies below is another identity's
        self.stopped = False
        self.log = None
        self.wl = None
        self.fees = None
        self.clock = None
        self._last_tap_ms = 0
        self._last_save_ms = 0
        self.uplink = None  # the MQTT link, when the config has "uplink"
        self.link_codec = None  # its codec: kept for the whole boot (uplink.py)
        self.nfc = None  # the card front end (nfc.py), once configured
        self.net = None  # the network link (net.py), when the config has "wifi" or "uplink"

    # ---- boot ----

    def boot(self):
        b = self.board
        b.mount()
        self.clock = Clock(b)
        self.boot_count = _bump_boot_count()
        self.log = RideLog(b.log_device())
        self.log.mount()
        self.clock.seed(self.log.newest_time)
        discard_partial()
        try:
            self.cfg = configmod.load()
        except configmod.ConfigError as e:
            # Unconfigured: taps cannot be decided or logged; say so clearly.
            self.cfg = None
            self.error = str(e)
            return
        gc.collect()  # the config's parse, before the tables' large blocks
        self._apply_config()
        self._own_log()

    def _own_log(self, cfg=None):
        # The log's identity (logid.py): taken once a config is applied (the
        # uplink it made has not connected yet: own() closes it if the rides
        # are another reader's), and checked before a CONFIG writes (cfg).
        # The module is dropped after: a heap with the NFC stack and the
        # uplink has no room to keep it.
        import sys
        from . import logid

        try:
            logid.own(self, cfg)
        finally:
            logid = None
            del sys.modules["liftcard.logid"]
            delattr(sys.modules["liftcard"], "logid")
            gc.collect()

    def _apply_config(self):
        cfg = self.cfg
        # Built once, reconfigured in place: a config pushed to a running
        # reader must not need fresh large blocks from a fragmented heap.
        if self.wl is None:
            self.wl = Whitelist(cfg["key"], cfg["reader_id"], cfg["building_id"])
            self.fees = Fees(self.board.ticks_diff)
        else:
            self.wl.close()
            self.wl.configure(cfg["key"], cfg["reader_id"], cfg["building_id"])
        self.wl.open()
        self.fees.configure(cfg["tariff"], cfg["floors"], cfg["ground_floor"], cfg["utc_offset_min"])
        self._rebuild_spend()
        self.error = self.wl.error
        tls = "tls" in cfg.get("uplink", ())
        if tls:
            from .tlsctx import early

            early(self)  # a 3 KB block, before the NFC stack fragments the heap (docs/board.md, "TLS")
        else:
            # A plain uplink before the NFC stack: its 4 KB receive buffer
            # needs one contiguous block, which the NFC stack's many small
            # ones would break up. (Over TLS the context's block is set aside
            # above and the heap has no room for both first: docs/board.md.)
            self._start_uplink()
        if self.nfc is None and hasattr(self.board, "start_nfc"):
            self.nfc = self.board.start_nfc()
        if self.nfc is not None:
            self.nfc.configure(cfg.get("read_master"), cfg["building_id"])
        if tls:
            self._start_uplink()
        gc.collect()

    def _start_uplink(self):
        # Imported only when configured: an offline reader keeps the heap.
        if self.uplink is not None:
            self.uplink.close()
            self.uplink = None
            gc.collect()
        cfg = self.cfg
        wcfg = cfg.get("wifi")
        net = self.net
        if net is not None and net.wcfg != wcfg:
            net.close()  # another network: join it afresh
            net = self.net = None
        if net is None and ("wifi" in cfg or "uplink" in cfg) and hasattr(self.board, "net_up"):
            from .net import Net

            self.net = Net(self.board, wcfg)
        if "uplink" in self.cfg:
            from .uplink import Uplink

            self.uplink = Uplink(self, self.cfg["uplink"])

    def _rebuild_spend(self):
        # This month's spend per household: the checkpoint, then the rides
        # logged after it. Also after a time sync that changes the month (an
        # unsynced clock may have guessed the wrong one at boot).
        fees = self.fees
        now = self.clock.now()
        fees.reset()
        covered = fees.load(now)  # also sets fees.checkpoint_seq
        for rec in self.log.records(covered + 1):
            fees.replay(rec, now)
        self.log.reclaim_limit = fees.checkpoint_seq

    # ---- the tap path ----

    def tap(self, kind, at_floor, failure=0):
        # self.card holds the card id (board-filled). Returns the result code.
        clock = self.clock
        fees = self.fees
        cfg = self.cfg
        now = clock.now()
        ms = self.board.ticks_ms()
        flags = 0 if clock.synced else codes.F_CLOCK_UNSYNCED
        fee = 0
        floor = _NO_FLOOR
        household = 0
        decided = False
        if cfg is None:
            result = codes.NO_WHITELIST  # unconfigured: denied, still logged
        elif kind == codes.TAP_FAILED:
            result = failure
        elif kind == codes.TAP_LEGACY_UID and not cfg["legacy_uid"]:
            result = codes.LEGACY_DISABLED
            flags |= codes.F_LEGACY_UID
        elif kind == codes.TAP_CREDENTIAL and not self._credential_current(now):
            result = codes.EXPIRED
        elif not self.wl.loaded:
            result = codes.NO_WHITELIST
        else:
            if kind == codes.TAP_LEGACY_UID:
                flags |= codes.F_LEGACY_UID
            found = self.wl.lookup(self.card)
            fees.decide(found, self.wl.rec, self.card, at_floor, now, ms)
            decided = True
            result = fees.result
            fee = fees.fee
            flags |= fees.flags
            floor = fees.floor
            household = fees.household
        rec = self.rec
        ridelog.pack(
            rec, now, clock.uptime(), self.card, household, floor, fee, result, flags, self.boot_count & 0xFFFF
        )
        granted = result == codes.GRANTED
        # Durable before the resident sees "granted" (promise 2).
        logged = not self.foreign and self.log.append(rec)
        if logged:
            if decided:  # only a decision just made may charge
                fees.commit(self.card, ms)
        elif granted:
            # Log full, or holding another identity's rides (docs/formats.md,
            # "Log identity"): never strand a resident, never overwrite unacked
            # rides, never log a ride that could go out under the wrong name.
            self.unlogged += 1
        self.board.signal(granted, cfg["relay_ms"] if granted else 0)
        self.board.report(rec, logged)
        self._last_tap_ms = ms
        return result

    def _credential_current(self, now):
        # A DESFire credential's own validity window (local days), checked
        # once the clock is synced: an unsynced ESP32 may think it is 2000.
        nfc = self.nfc
        if nfc is None or not self.clock.synced:
            return True
        day = (now + self.fees.utc_offset_s) // 86400
        return nfc.cred_from <= day <= nfc.cred_until

    # ---- housekeeping ----

    def idle(self):
        if self.cfg is None:
            return
        net = self.net
        if net is not None and net.step() and self.uplink is not None:
            self.uplink.link_lost()  # the link went down: its socket is dead
        if self.uplink is not None and (net is None or net.up):
            self.uplink.step()  # bounded, never raises, never blocks for long
        b = self.board
        ms = b.ticks_ms()
        if b.ticks_diff(ms, self._last_tap_ms) < _QUIET_BEFORE_ERASE_MS:
            return
        if self.nfc is not None and self.nfc.counters.dirty:
            self.nfc.maintain()  # NTAG replay counters to flash, off the tap path
            return
        log = self.log
        fees = self.fees
        behind = fees.checkpoint_seq < log.last_seq
        if (fees.dirty or behind) and (
            b.ticks_diff(ms, self._last_save_ms) >= _CHECKPOINT_EVERY_MS
            or log.needs_reclaim_beyond(fees.checkpoint_seq)
        ):
            fees.save(log.last_seq)
            log.reclaim_limit = fees.checkpoint_seq
            self._last_save_ms = ms
            return
        log.maintain()

    # ---- commands (gateway link, technician, host harness) ----

    def command(self, line):
        # A command never stops the reader: whatever goes wrong becomes one
        # ERR line and the taps go on.
        try:
            return self._command(line)
        except OSError as e:
            return "ERR flash: %s" % e
        except MemoryError:
            gc.collect()
            return "ERR out of memory"
        except Exception as e:
            return "ERR %s" % e

    def _command(self, line):
        parts = line.split()
        if not parts:
            return "ERR empty command"
        verb = parts[0].upper()
        arg = parts[1] if len(parts) > 1 else None
        if verb == "STATUS":
            return self.status()
        if verb == "QUIT":
            self.stopped = True
            return "OK bye"
        if verb == "CONFIG":
            if not arg:
                return "ERR usage: CONFIG <path>"
            self.cfg = configmod.install(arg, self._own_log)
            self._apply_config()
            self._own_log()
            return "OK config reader %d building %d" % (self.cfg["reader_id"], self.cfg["building_id"])
        if self.cfg is None:
            return "ERR not configured: %s" % self.error
        if verb == "TIME":
            t = _number(arg, -1)
            if not 0 <= t < (1 << 32):
                return "ERR usage: TIME <seconds since 2024-01-01 UTC>"
            month = self.fees.month
            self.clock.set(t)
            self.fees.roll(t)
            if self.fees.month != month:
                self._rebuild_spend()
            return "OK time %d" % t
        if verb == "WL":
            if not arg:
                return "ERR usage: WL <path>"
            version, count = self.wl.install(arg)
            self.error = None
            return "OK whitelist v%d %d cards" % (version, count)
        if verb == "DELTA":
            if not arg:
                return "ERR usage: DELTA <path | hex>"
            data = self._delta_bytes(arg)
            version = self.wl.apply_delta(data)
            return "OK whitelist v%d" % version
        if verb == "ACK":
            upto = _number(arg, -1)
            if upto < 0:
                return "ERR usage: ACK <seq>"
            if self.foreign:
                return "ERR ack: " + self.foreign_text
            self.log.ack(upto)
            return "OK acked %d" % self.log.acked
        if verb == "DUMP":
            start = _number(arg, self.log.acked + 1)
            limit = _number(parts[2] if len(parts) > 2 else None, 1000)
            if start < 0 or limit < 0:
                return "ERR usage: DUMP [from seq] [count]"
            n = 0
            for rec in self.log.records(start):
                if n >= limit:
                    break
                self.board.reply("REC " + "".join("%02x" % x for x in rec))
                n += 1
            return "OK %d records" % n
        return "ERR unknown command %s" % verb

    def _delta_bytes(self, arg):
        if len(arg) % 2 == 0 and len(arg) >= 2 * (24 + 16):
            try:
                return bytes(int(arg[i : i + 2], 16) for i in range(0, len(arg), 2))
            except ValueError:
                pass
        try:
            with open(arg, "rb") as f:
                data = f.read(_DELTA_MAX + 1)
        except OSError:
            raise ValueError("cannot read delta %s" % arg)
        if len(data) > _DELTA_MAX:
            raise ValueError("delta larger than %d bytes" % _DELTA_MAX)
        return data

    def status(self):
        log = self.log
        cfg = self.cfg or {}
        wl = self.wl
        error = self.foreign_text or self.error
        gc.collect()  # heap_free is what is really free, not garbage not yet collected
        fields = (
            ("fw", '"%s"' % VERSION),
            ("reader_id", cfg.get("reader_id", 0)),
            ("building_id", cfg.get("building_id", 0)),
            ("boot", self.boot_count),
            ("uptime_s", self.clock.uptime()),
            ("time", self.clock.now()),
            ("clock_synced", "true" if self.clock.synced else "false"),
            ("whitelist_version", wl.version if wl else 0),
            ("cards", (wl.count if wl else 0)),
            ("next_seq", log.next_seq),
            ("acked", log.acked),
            ("backlog", log.backlog),
            ("log_capacity", log.capacity),
            ("log_full", "true" if log.full else "false"),
            ("unlogged_rides", self.unlogged),
            ("foreign_rides", self.foreign),
            ("log_reader_id", self.log_reader),
            ("erases", log.erases),
            ("forced_erases", log.forced_erases),
            ("heap_free", gc.mem_free()),
            ("nfc_taps", self.nfc.taps if self.nfc else 0),
            ("nfc_chip_errors", self.nfc.chip_errors if self.nfc else 0),
            ("error", '"%s"' % error if error else "null"),
        )
        net = self.net
        if net is not None:
            fields += (
                ("net", '"%s"' % net.describe()),
                ("net_rssi", net.rssi()),
                ("net_joins", net.joins),
                ("net_drops", net.drops),
            )
        u = self.uplink
        if u is not None:
            fields += (
                ("uplink", '"%s"' % u.describe()),
                ("uplink_connects", u.connects),
                ("uplink_batches", u.batches),
                ("uplink_acks", u.acks),
                ("uplink_refused", u.refused),
                ("uplink_resends", u.resends),
                ("uplink_sun_sent", u.sun_sent),
                ("uplink_sun_merged", u.sun_merged),
                ("uplink_error", '"%s"' % u.error_text.replace('"', "'") if u.error_text else "null"),
            )
        return "STATUS {" + ", ".join('"%s": %s' % kv for kv in fields) + "}"

    # ---- main loop ----

    def run(self, poll_ms=50):
        b = self.board
        if hasattr(b, "arm_watchdog"):
            b.arm_watchdog()  # only now: it cannot be stopped (safeboot.py)
        while not self.stopped:
            b.feed()
            ev = b.poll(poll_ms)
            if ev == EV_TAP:
                self.tap(b.tap_kind, b.tap_floor, b.tap_failure)
            elif ev == EV_CMD:
                b.reply(self.command(b.cmd))
            else:
                self.idle()
            b.service()
