"""liftcard-demo: the compound (liftcard_tools.compound: every process of the
system, a simulated population, faults, then the reconciliation); with
--walkthrough, the one-reader walk-through below; `liftcard-demo bank-setup
DIR` writes the bank side's files for a trial by hand (docs/demo.md).

The walk-through: a virtual reader lives through a scripted morning.

The real reader firmware (firmware/main.py) runs under the real MicroPython unix
port as a subprocess, with the host board: its flash is two image files in the
work dir (a littlefs filesystem and the raw NOR ride-log partition), taps and
commands go to its stdin, relay / LED / buzzer lines and ride records come back
on its stdout (protocol: the top of firmware/host/board_host.py).

The demo plays the building's gateway and the residents:

1. builds a building in the work dir (default var/demo/ under the repo):
   config.json (a fresh CSPRNG reader key, file mode 0600), cards.json (the
   card list of a few households) and a whitelist MAC'd with the reader key;
2. boots the reader, installs the config and the whitelist, syncs its clock;
3. plays a morning of taps, one line per tap: time, card, holder, floors, the
   reader's decision and flags (decoded from the ride record it reports),
   the fee in yuan and what the resident saw (relay, LED, beep); mid-morning
   a card is reported lost and the gateway sends a whitelist delta;
4. dumps the reader's ride log and sums it per household, checks the log
   against what was shown per tap and against the reference fee model
   (liftcard_tools.feemodel), then stops the reader and checks its exit code.

Time: before each tap the demo sets the reader's wall clock to the script's
time (as the gateway's time sync does), so records carry the morning's times.
The debounce window runs on the reader's monotonic clock, which is real time:
the whole morning takes a second or two, so every card taps once except the
deliberate quick re-tap. The date is today (in the building's time zone) on a
fresh reader; with --keep it is the day after the newest ride on flash.

Money is integer fen everywhere; yuan are only ever formatted with divmod.

    liftcard-demo --walkthrough [--dir DIR] [--keep] [--quiet | --json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import queue
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Flag, Klass, RESULT_NAMES, Result, Status
from liftcard_protocol.delta import apply_ops, build_delta, parse_delta
from liftcard_protocol.epoch import epoch_from_unix, local_day, month_key
from liftcard_protocol.errors import ConfigError, FormatError
from liftcard_protocol.fields import NO_END, NO_FLOOR
from liftcard_protocol.keys import write_private
from liftcard_protocol.readerconfig import config_key, validate_config
from liftcard_protocol.ride import RideRecord
from liftcard_protocol.whitelist import build_whitelist, parse_whitelist
from liftcard_testing import firmware, procs
from liftcard_tools.compound import banksetup
from liftcard_tools.compound import cli as compound_cli
from liftcard_tools.feemodel import FeeModel

PROG = "liftcard-demo"
WIDTH = 124  # the tap table's width
HEAP = firmware.HEAP  # the production heap limit (docs/promises.md)
REPLY_TIMEOUT_S = 20.0
DUMP_PAGE = 1000
FS_IMG, LOG_IMG = firmware.FS_IMG, firmware.LOG_IMG  # the reader's flash images in the work dir
_DAY_S = 86400
_MODEL_FLAGS = Flag.DEBOUNCED | Flag.FREE_CLASS | Flag.CAPPED


class DemoError(Exception):
    """A one-line error for the user: printed without a traceback, exit 1."""


# ---------------------------------------------------------------------------
# The building
# ---------------------------------------------------------------------------

READER_ID = 1017
BUILDING_ID = 12
FLOORS = 7  # floor indexes 0 (ground) .. 6
FEE_FEN = [0, 0, 10, 20, 30, 40, 50]
MONTHLY_CAP_FEN = 120  # set low so one family reaches it in a morning
DEBOUNCE_S = 30

HOUSEHOLDS = {
    601: "Zhang",
    502: "Wang",
    402: "Zhao",
    301: "Liu",
    202: "Sun",
}


@dataclass(frozen=True)
class Card:
    card_id: int
    household: int
    holder: str
    floors: tuple  # allowed floor indexes
    status: int = Status.ACTIVE
    klass: int = Klass.RESIDENT
    valid_days: int | None = None  # valid until the demo day + this (None: no end)
    listed: bool = True  # on the first whitelist (False: issued later, or never)

    def record(self, day: int) -> CardRecord:
        mask = 0
        for f in self.floors:
            mask |= 1 << f
        until = NO_END if self.valid_days is None else day + self.valid_days
        return CardRecord(self.card_id, self.household, mask, self.status, self.klass, until)


# Card ids: a bank prefix, the building, the household, a serial.
CARDS = {
    "zhang_wei": Card(0x6217001206010001, 601, "Zhang Wei", (0, 6)),
    "li_na": Card(0x6217001206010002, 601, "Li Na", (0, 6)),
    "zhang_hao": Card(0x6217001206010003, 601, "Zhang Hao", (0, 6)),
    "zhang_xin": Card(0x6217001206010004, 601, "Zhang Xin", (0, 6)),
    "chen_lan": Card(0x6217001206010005, 601, "Chen Lan (elderly)", (0, 6), klass=Klass.EXEMPT),
    "wang_jun": Card(0x6217001205020001, 502, "Wang Jun", (0, 5)),
    "wang_jun_new": Card(0x6217001205020002, 502, "Wang Jun (new card)", (0, 5), listed=False),
    "wang_carer": Card(0x6217001205020009, 502, "Wang's carer (visitor)", (0, 5), klass=Klass.VISITOR, valid_days=-1),
    "zhao_gang": Card(0x6217001204020001, 402, "Zhao Gang", (0, 4), status=Status.SUSPENDED),
    "liu_fang": Card(0x6217001203010001, 301, "Liu Fang", (0, 3)),
    "liu_nurse": Card(0x6217001203010009, 301, "Liu's nurse (visitor)", (3,), klass=Klass.VISITOR, valid_days=30),
    "sun_li_old": Card(0x6217001202020001, 202, "Sun Li (old card)", (0, 2), status=Status.LOST),
    "sun_li": Card(0x6217001202020002, 202, "Sun Li", (0, 2)),
    # A card of the next block (building 13): not on this reader's list.
    "stranger": Card(0x6217001307010001, 701, "(not on the list)", (0, 6), listed=False),
}

# The morning: (local time, what, arguments). "tap": card name, the car's floor
# (None: the board does not know it). "fail": a card whose credential failed.
# "raw": a line the card front-end mangled. "forged" / "lost": gateway deltas.
SCRIPT = [
    ("06:52:00", "tap", "wang_jun", 5),  # leaves for work: riding down is free
    ("07:05:00", "tap", "zhang_wei", 0),  # back from the night shift
    ("07:12:00", "tap", "chen_lan", 0),  # exempt: rides free
    ("07:20:00", "tap", "liu_fang", 0),
    ("07:20:06", "tap", "liu_fang", 0),  # taps again at once: debounced, not charged
    ("07:26:00", "tap", "li_na", 0),
    ("07:31:00", "tap", "zhao_gang", 0),  # household has not paid
    ("07:35:00", "tap", "stranger", 0),
    ("07:38:00", "tap", "zhang_hao", 0),  # the Zhang household reaches its monthly cap
    ("07:44:00", "tap", "sun_li_old", 0),  # the card Sun Li lost last week
    ("07:47:00", "tap", "wang_carer", 0),  # visitor pass ended yesterday
    ("07:52:00", "tap", "liu_nurse", 5),  # wants the ground floor; card names floor 3 only
    ("07:55:00", "raw", "TAP 62170012O6010001 0"),  # a letter O in the card id
    ("07:58:00", "fail", 8, 0),  # a cloned card fails authentication
    ("08:03:00", "tap", "zhang_xin", 0),  # cap already reached: rides free
    ("08:10:00", "forged", None),  # a delta MAC'd with the wrong key
    ("08:10:30", "lost", None),  # Wang Jun reports his card lost: delta
    ("08:14:00", "tap", "wang_jun", 0),  # someone found it and tries it
    ("08:30:00", "tap", "wang_jun_new", 0),  # Wang Jun with his new card
    ("08:41:00", "tap", "sun_li", None),  # the board does not know the floor
]


def make_config(key_hex: str) -> dict:
    return validate_config(
        {
            "reader_id": READER_ID,
            "building_id": BUILDING_ID,
            "floors": FLOORS,
            "ground_floor": 0,
            "key": key_hex,
            "tariff": {
                "fee_fen": FEE_FEN,
                "free_classes": ["exempt"],
                "monthly_cap_fen": MONTHLY_CAP_FEN,
                "debounce_s": DEBOUNCE_S,
            },
            "relay_ms": 4000,
            "utc_offset_min": 480,
        }
    )


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals (divmod, never floats)."""
    sign = "-" if fen < 0 else ""
    y, f = divmod(abs(fen), 100)
    return "%s%d.%02d" % (sign, y, f)


def flag_names(flags: int) -> list:
    return [f.name for f in Flag if flags & f]


def short_id(card_id: int) -> str:
    """The last 8 hex digits: household and serial in the demo's card ids."""
    return ("%016x" % card_id)[-8:]


def result_name(code: int) -> str:
    return RESULT_NAMES.get(code, "RESULT_%d" % code)


def clock_of(epoch_s: int, utc_offset_min: int) -> str:
    s = (epoch_s + utc_offset_min * 60) % _DAY_S
    return "%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def date_of_day(day: int) -> datetime.date:
    return datetime.date(2024, 1, 1) + datetime.timedelta(days=day)


def floor_text(f) -> str:
    return "?" if f is None or f == NO_FLOOR else str(f)


# ---------------------------------------------------------------------------
# The virtual reader process
# ---------------------------------------------------------------------------


def find_repo() -> Path:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "firmware" / "main.py").is_file():
        raise DemoError(
            "the reader firmware is not at %s: liftcard-demo runs from a source checkout"
            % (repo / "firmware" / "main.py")
        )
    return repo


def find_micropython() -> str:
    try:
        return firmware.micropython()
    except firmware.ToolMissing as e:  # "micropython not found next to ... or on PATH: run scripts/setup.sh"
        raise DemoError(str(e))


class VirtualReader:
    """The firmware under MicroPython, spoken to line by line (the host
    board's protocol: firmware/liftcard/lineproto.py)."""

    def __init__(self, micropython: str, workdir: Path):
        # The firmware as a reader runs it: compiled to .mpy (liftcard_testing.firmware, by mpybuild).
        self.cmd = firmware.reader_argv(workdir, heap=HEAP, binary=micropython)
        self.env = firmware.reader_env()
        self.cwd = workdir
        self.proc = None
        self._lines = queue.Queue()
        self._stderr = collections.deque(maxlen=20)
        self.relay_on = False
        self.boot_lines = []

    def start(self) -> None:
        try:
            # Ends with the demo, even one killed: procs.spawn ties it to this process.
            self.proc = procs.spawn(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise DemoError("cannot start %s: %s" % (self.cmd[0], e.strerror or e))
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        while True:
            line = self._next("boot")
            if line == "READY":
                return
            self.boot_lines.append(line)

    @staticmethod
    def _pump(stream, q) -> None:
        for raw in stream:
            q.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        q.put(None)

    def _drain(self, stream) -> None:
        for raw in stream:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def _died(self, doing: str) -> DemoError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        time.sleep(0.05)  # let the stderr thread catch the last lines
        last = next((ln for ln in reversed(self._stderr) if ln.strip()), "")
        return DemoError("the reader exited during %s (exit code %s)%s" % (doing, code, ": " + last if last else ""))

    def _next(self, doing: str) -> str:
        try:
            line = self._lines.get(timeout=REPLY_TIMEOUT_S)
        except queue.Empty:
            raise DemoError("the reader did not answer %s within %d s" % (doing, REPLY_TIMEOUT_S))
        if line is None:
            self._lines.put(None)
            raise self._died(doing)
        if line == "RELAY OFF":  # the floor button's timer ran out (asynchronous)
            self.relay_on = False
        return line

    def send(self, line: str) -> None:
        data = line.encode() + b"\n"
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(line.split(" ")[0] or "a command")

    def command(self, line: str) -> tuple:
        """Sends a command; returns (reply line, REC lines before it)."""
        self.send(line)
        recs = []
        verb = line.split(" ")[0]
        while True:
            out = self._next(verb)
            if out.startswith("REC "):
                recs.append(out[4:])
            elif out.startswith(("OK", "ERR", "STATUS ")):
                return out, recs

    def status(self) -> dict:
        reply, _ = self.command("STATUS")
        if not reply.startswith("STATUS "):
            raise DemoError("the reader answered STATUS with: %s" % reply)
        try:
            return json.loads(reply[7:])
        except ValueError:
            raise DemoError("the reader's STATUS is not valid JSON: %s" % reply[7:90])

    def tap(self, line: str) -> tuple:
        """Sends a tap line; returns (RIDE hex or None, logged, signals, ERR line or None)."""
        self.send(line)
        signals = []
        while True:
            out = self._next("a tap")
            if out.startswith("RIDE "):
                parts = out.split()
                if len(parts) != 3 or len(parts[1]) != 64 or parts[2] not in ("L", "U"):
                    raise DemoError("the reader sent a malformed RIDE line: %s" % out)
                return parts[1], parts[2] == "L", signals, None
            if out.startswith("ERR"):
                return None, False, signals, out
            if out == "RELAY ON":
                self.relay_on = True
            if out in ("RELAY ON", "LED GREEN", "LED RED", "BEEP OK", "BEEP DENY"):
                signals.append(out)

    def dump(self, start: int = 1) -> list:
        """Every record on flash from `start`, in pages (DUMP from limit)."""
        out = []
        while True:
            reply, recs = self.command("DUMP %d %d" % (start, DUMP_PAGE))
            if not reply.startswith("OK"):
                raise DemoError("the reader refused DUMP: %s" % reply)
            for h in recs:
                try:
                    out.append(RideRecord.unpack(bytes.fromhex(h)))
                except (ValueError, FormatError) as e:
                    raise DemoError("the reader dumped a bad record (%s): %s" % (e, h))
            if len(recs) < DUMP_PAGE:
                return out
            start = out[-1].seq + 1

    def quit(self) -> int:
        reply, _ = self.command("QUIT")
        if reply != "OK bye":
            raise DemoError("the reader answered QUIT with: %s" % reply)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=REPLY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DemoError("the reader did not exit within %d s of QUIT" % REPLY_TIMEOUT_S)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

TAP_HEAD = "%-8s %5s  %-8s  %-27s %-6s %-14s %-10s %6s  %s" % (
    "time",
    "seq",
    "card",
    "household / holder",
    "at>to",
    "decision",
    "flags",
    "yuan",
    "resident sees",
)


class Output:
    def __init__(self, mode: str):
        self.mode = mode  # "text", "quiet" or "json"

    def line(self, text: str = "", quiet_too: bool = False) -> None:
        if self.mode == "text" or (quiet_too and self.mode == "quiet"):
            print(text, flush=True)


# ---------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------


class Demo:
    def __init__(self, args, out: Output):
        self.args = args
        self.out = out
        self.repo = find_repo()
        self.mp = find_micropython()
        self.dir = Path(args.dir).expanduser() if args.dir else self.repo / "var" / "demo"
        self.dir = self.dir.resolve()
        self.problems = []
        self.taps = []  # one dict per tap line sent
        self.events = []  # gateway / reader events
        self.report = {}

    # ---- the work dir ----

    def prepare_dir(self) -> None:
        d = self.dir
        if any(c.isspace() for c in str(d)):
            raise DemoError(
                "the work dir %s contains a space; the reader's commands take space-separated "
                "paths: choose another --dir" % d
            )
        if len(str(d)) > 300:
            raise DemoError("the work dir path is too long for the reader's 512-byte command line")
        if d.exists() and not d.is_dir():
            raise DemoError("--dir %s exists and is not a directory" % d)
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / ".liftcard-demo-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise DemoError("cannot write to the work dir %s: %s" % (d, e.strerror or e))
        if not self.args.keep:
            # Only the demo's own files: --dir may point at a directory with other things in it.
            for p in [d / FS_IMG, d / LOG_IMG, d / "config.json", d / "cards.json"]:
                p.unlink(missing_ok=True)
            for pat in ("whitelist-v*.lcwl", "delta-v*.lcwd", "forged-delta-v*.lcwd"):
                for p in d.glob(pat):
                    p.unlink()

    def load_or_make_config(self) -> dict:
        # A kept reader keeps its key (its whitelist and overlay on flash are
        # MAC'd with it); a fresh one gets a new key from the CSPRNG. The key is
        # never printed.
        path = self.dir / "config.json"
        if self.args.keep and path.exists():
            try:
                key = validate_config(json.loads(path.read_text()))["key"]
            except ValueError as e:  # JSON errors and ConfigError (names the key, never the value)
                raise DemoError("%s is not a valid reader config (%s): run without --keep" % (path, e))
        else:
            key = secrets.token_hex(32)
        cfg = make_config(key)
        write_private(path, (json.dumps(cfg, indent=2) + "\n").encode())
        return cfg

    def write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        return p

    # ---- helpers ----

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def event(self, epoch_s, who: str, text: str, reply: str) -> None:
        self.events.append(
            {"time": epoch_s, "clock": clock_of(epoch_s, self.utc), "who": who, "what": text, "reader": reply}
        )
        self.out.line("%-8s %5s  %-8s  %s -> reader: %s" % (clock_of(epoch_s, self.utc), "", who, text, reply))

    def set_time(self, epoch_s: int) -> None:
        reply, _ = self.reader.command("TIME %d" % epoch_s)
        if reply != "OK time %d" % epoch_s:
            raise DemoError("the reader refused TIME %d: %s" % (epoch_s, reply))

    def at(self, hms: str) -> int:
        h, m, s = (int(x) for x in hms.split(":"))
        return (self.day * _DAY_S + h * 3600 + m * 60 + s) - self.utc * 60

    # ---- run ----

    def run(self) -> int:
        self.prepare_dir()
        cfg = self.cfg = self.load_or_make_config()
        self.utc = cfg["utc_offset_min"]
        key = config_key(cfg)
        self.reader = VirtualReader(self.mp, self.dir)
        try:
            return self._run(cfg, key)
        finally:
            self.reader.kill()

    def _run(self, cfg: dict, key: bytes) -> int:
        out = self.out
        rd = self.reader
        rd.start()
        booted = rd.status()
        # What is on flash already (--keep): its records set the demo day and
        # the households' spend this month.
        prior = rd.dump(1) if booted.get("next_seq", 1) > 1 else []
        today = local_day(epoch_from_unix(int(time.time())), self.utc)
        self.day = today if not prior else max(today, local_day(max(r.time for r in prior), self.utc) + 1)
        start = self.at("06:00:00")

        out.line("liftcard demo: a virtual reader (the real firmware under MicroPython, heap %s)" % HEAP, True)
        out.line("=" * WIDTH, True)
        out.line(
            "work dir    %s (%s)"
            % (self.dir, "kept images" if self.args.keep and booted["boot"] > 1 else "fresh reader"),
            True,
        )
        out.line(
            "reader      %d in building %d, firmware %s, boot #%d, next ride seq %d, log capacity %d"
            % (
                cfg["reader_id"],
                cfg["building_id"],
                booted.get("fw"),
                booted.get("boot"),
                booted.get("next_seq"),
                booted.get("log_capacity"),
            ),
            True,
        )
        t = cfg["tariff"]
        out.line(
            "tariff      fee per floor (yuan) %s; free: %s; monthly cap %s yuan per household; debounce %d s"
            % (
                " ".join("%d:%s" % (i, yuan(f)) for i, f in enumerate(t["fee_fen"])),
                ", ".join(t["free_classes"]) or "none",
                yuan(t["monthly_cap_fen"]),
                t["debounce_s"],
            ),
            True,
        )
        out.line("morning of  %s (UTC%+d)" % (date_of_day(self.day).strftime("%A %d %B %Y"), self.utc // 60), True)
        if prior:
            out.line(
                "flash       %d rides from earlier runs, seq %d..%d: the reader resumes at seq %d"
                % (len(prior), prior[0].seq, prior[-1].seq, booted["next_seq"]),
                True,
            )
        for line in rd.boot_lines:
            out.line(
                "boot        reader said: %s%s"
                % (line, " (a fresh reader: the gateway configures it next)" if "no config.json" in line else "")
            )

        # ---- the gateway sets the reader up ----
        out.line()
        reply, _ = rd.command("CONFIG %s" % (self.dir / "config.json"))
        if not reply.startswith("OK"):
            raise DemoError("the reader refused the demo config: %s" % reply)
        self.set_time(start)
        self.event(start, "gateway", "config.json (reader key, tariff)", reply)
        held = rd.status().get("whitelist_version", 0)
        version = held + 1
        cards = [c.record(self.day) for c in CARDS.values() if c.listed]
        wl = build_whitelist(key, cfg["reader_id"], cfg["building_id"], version, cards, issued=start)
        parse_whitelist(key, wl, cfg["reader_id"], cfg["building_id"], held_version=held)  # MAC and all
        wl_path = self.write("whitelist-v%d.lcwl" % version, wl)
        self.write_cards_json()
        reply, _ = rd.command("WL %s" % wl_path)
        self.event(
            start, "gateway", "whitelist v%d: %d cards, %d bytes, MAC checked" % (version, len(cards), len(wl)), reply
        )
        if reply != "OK whitelist v%d %d cards" % (version, len(cards)):
            raise DemoError("the reader refused the demo whitelist: %s" % reply)
        self.model = FeeModel(cfg, {c.card_id: c for c in cards})
        self._seed_model(prior)
        self.held = version
        self.run_first_seq = rd.status()["next_seq"]

        # ---- the morning ----
        out.line()
        out.line(TAP_HEAD)
        out.line("-" * WIDTH)
        for step in SCRIPT:
            when = self.at(step[0])
            kind = step[1]
            self.set_time(when)
            if kind == "tap":
                c = CARDS[step[2]]
                floor = step[3]
                self.do_tap(
                    when, "TAP %016x%s" % (c.card_id, "" if floor is None else " %d" % floor), c.card_id, floor, None
                )
            elif kind == "fail":
                self.do_tap(when, "FAIL %d %d" % (step[2], step[3]), 0, step[3], step[2])
            elif kind == "raw":
                self.do_tap(when, step[2], None, None, None)
            elif kind == "forged":
                self.send_forged_delta(when)
            elif kind == "lost":
                self.send_lost_delta(when)

        # ---- the log ----
        self.summarise()
        code = rd.quit()
        self.report["reader_exit_code"] = code
        if code != 0:
            self.problem("the reader exited with code %d after QUIT" % code)
        out.line("reader      QUIT: exit code %d" % code, True)
        return self.finish()

    def _seed_model(self, prior: list) -> None:
        # The reader rebuilt each household's spend this month from its log at
        # boot; the reference model starts from the same spend. (FeeModel keeps
        # it per (household, month); it has no public setter.)
        for r in prior:
            if r.result == Result.GRANTED and r.fee:
                k = (r.household, month_key(r.time, self.utc))
                self.model._spent[k] = self.model._spent.get(k, 0) + r.fee

    def write_cards_json(self) -> None:
        rows = []
        for name, c in CARDS.items():
            rec = c.record(self.day)
            rows.append(
                {
                    "name": name,
                    "holder": c.holder,
                    "household": c.household,
                    "household_name": HOUSEHOLDS.get(c.household, "(other building)"),
                    "on_first_list": c.listed,
                    **rec.to_fields(),
                    "status_name": Status(rec.status).name.lower(),
                    "class_name": Klass(rec.klass).name.lower(),
                }
            )
        (self.dir / "cards.json").write_text(json.dumps(rows, indent=2) + "\n")

    # ---- gateway deltas ----

    def send_forged_delta(self, when: int) -> None:
        cfg = self.cfg
        c = CARDS["wang_jun"]
        forged = build_delta(
            secrets.token_bytes(32),
            cfg["reader_id"],
            cfg["building_id"],
            self.held,
            self.held + 1,
            [("remove", c.card_id)],
        )
        p = self.write("forged-delta-v%d-v%d.lcwd" % (self.held, self.held + 1), forged)
        reply, _ = self.reader.command("DELTA %s" % p)
        self.event(when, "intruder", "forged delta: remove %s's card (wrong key)" % c.holder.split(" (")[0], reply)
        if not reply.startswith("ERR"):
            self.problem("the reader accepted a forged delta: %s" % reply)

    def send_lost_delta(self, when: int) -> None:
        cfg = self.cfg
        key = config_key(cfg)
        old = CARDS["wang_jun"]
        new = CARDS["wang_jun_new"]
        lost = CardRecord(old.card_id, old.household, old.record(self.day).floors, Status.LOST, old.klass, NO_END)
        ops = [("upsert", lost), ("upsert", new.record(self.day))]
        base, newv = self.held, self.held + 1
        delta = build_delta(key, cfg["reader_id"], cfg["building_id"], base, newv, ops)
        parse_delta(key, delta, cfg["reader_id"], cfg["building_id"], held_version=base)
        p = self.write("delta-v%d-v%d.lcwd" % (base, newv), delta)
        reply, _ = self.reader.command("DELTA %s" % p)
        self.event(
            when,
            "gateway",
            "delta v%d->v%d (%d bytes): %s's card lost, new card issued" % (base, newv, len(delta), old.holder),
            reply,
        )
        if reply != "OK whitelist v%d" % newv:
            raise DemoError("the reader refused the lost-card delta: %s" % reply)
        self.held = newv
        self.model.cards = {c.card_id: c for c in apply_ops(self.model.cards.values(), ops)}

    # ---- one tap ----

    def do_tap(self, when: int, line: str, card_id, floor, failure) -> None:
        mono_ms = time.monotonic_ns() // 1_000_000
        ride_hex, logged, signals, err = self.reader.tap(line)
        entry = {"line": line, "time": when, "clock": clock_of(when, self.utc)}
        self.taps.append(entry)
        garbled = card_id is None  # a line the reader must refuse with ERR
        if ride_hex is None:
            entry["reader"] = err
            if not garbled:
                self.problem("the reader answered %r with %s" % (line, err))
            self.out.line(
                "%-8s %5s  %-8s  %-27s %-6s %-14s %-10s %6s  %s"
                % (clock_of(when, self.utc), "-", "?", "(garbled tap line)", "", "no record", "", "", err)
            )
            return
        rec = RideRecord.unpack(bytes.fromhex(ride_hex))
        granted = rec.result == Result.GRANTED
        card = next((c for c in CARDS.values() if c.card_id == rec.card_id), None)
        if failure is not None:
            holder = "(credential failed)"
        elif card is None or rec.result == Result.UNKNOWN_CARD:
            holder = "(not on the whitelist)"
        else:
            holder = "%d %s" % (card.household, card.holder)
        entry.update(
            {
                "record": ride_hex,
                "logged": logged,
                "seq": rec.seq,
                "card_id": "%016x" % rec.card_id,
                "holder": holder,
                "household": rec.household,
                "at": floor,
                "floor": None if rec.floor == NO_FLOOR else rec.floor,
                "result": result_name(rec.result),
                "flags": flag_names(rec.flags),
                "fee_fen": rec.fee,
                "fee_yuan": yuan(rec.fee),
                "signals": signals,
            }
        )
        # What the resident saw must match the decision.
        want = ["RELAY ON", "LED GREEN", "BEEP OK"] if granted else ["LED RED", "BEEP DENY"]
        if signals != want:
            self.problem("seq %d: %s but the reader signalled %s" % (rec.seq, entry["result"], signals))
        if not logged:
            self.problem("seq %d was not logged (log full?)" % rec.seq)
        if abs(rec.time - when) > 2:
            self.problem("seq %d: record time %d, the clock was set to %d" % (rec.seq, rec.time, when))
        # The reference model's decision.
        if garbled:
            self.problem("seq %d: the reader took the garbled line %r for a tap" % (rec.seq, line))
            expect = None
        elif failure is not None:
            expect = (failure, 0, 0, NO_FLOOR, 0)
        else:
            d = self.model.tap(card_id, NO_FLOOR if floor is None else floor, mono_ms, rec.time)
            expect = (d.result, d.fee, d.flags, d.floor, d.household)
        got = (rec.result, rec.fee, rec.flags & _MODEL_FLAGS, rec.floor, rec.household)
        entry["model_agrees"] = got == expect
        if got != expect:
            self.problem(
                "seq %d: reader decided result/fee/flags/floor/household %s, the fee model %s" % (rec.seq, got, expect)
            )
        if card_id is not None and rec.card_id != card_id:
            self.problem("seq %d: record names card %016x, tapped %016x" % (rec.seq, rec.card_id, card_id))
        # As signalled by the board, not as decided.
        led = next((x for x in signals if x.startswith("LED ")), "LED --")
        beep = next((x for x in signals if x.startswith("BEEP ")), "BEEP --")
        seen = "%-9s  %-9s  %s" % ("relay ON" if "RELAY ON" in signals else "relay --", led, beep)
        if not logged:
            seen += "  (NOT LOGGED)"
        route = "%s>%s" % (floor_text(floor), floor_text(rec.floor))
        self.out.line(
            "%-8s %5d  %-8s  %-27s %-6s %-14s %-10s %6s  %s"
            % (
                clock_of(rec.time, self.utc),
                rec.seq,
                short_id(rec.card_id),
                holder[:27],
                route,
                entry["result"],
                ",".join(entry["flags"]),
                yuan(rec.fee),
                seen,
            )
        )

    # ---- the log summary ----

    def summarise(self) -> None:
        out = self.out
        rd = self.reader
        log = rd.dump(1)
        status = rd.status()
        out.line("", True)
        out.line("ride log on flash (DUMP 1)", True)
        out.line("-" * WIDTH, True)
        if not log:
            self.problem("the reader's log is empty")
            return
        seqs = [r.seq for r in log]
        gaps = [b for a, b in zip(seqs, seqs[1:]) if b != a + 1]
        if gaps:
            self.problem("the log's sequence numbers jump at %s" % gaps[:5])
        if seqs[-1] + 1 != status["next_seq"]:
            self.problem("the log ends at seq %d but the reader's next seq is %d" % (seqs[-1], status["next_seq"]))
        per = {}
        for r in log:
            h = per.setdefault(r.household, {"taps": 0, "rides": 0, "charged": 0, "fen": 0})
            h["taps"] += 1
            if r.result == Result.GRANTED:
                h["rides"] += 1
                if r.fee:
                    h["charged"] += 1
                    h["fen"] += r.fee
        month = month_key(self.at("12:00:00"), self.utc)
        cap = self.cfg["tariff"]["monthly_cap_fen"]
        month_fen = collections.Counter()
        for r in log:
            if r.result == Result.GRANTED and month_key(r.time, self.utc) == month:
                month_fen[r.household] += r.fee
        out.line(
            "%-22s %6s %6s %8s %10s %10s  %s" % ("household", "taps", "rides", "charged", "fen", "yuan", "this month"),
            True,
        )
        rows = []
        for hh in sorted(per, key=lambda h: (h == 0, -h)):
            h = per[hh]
            name = (
                "%d %s" % (hh, HOUSEHOLDS[hh]) if hh in HOUSEHOLDS else ("(unknown / failed)" if hh == 0 else str(hh))
            )
            note = ""
            if hh:
                note = "%s yuan%s" % (yuan(month_fen[hh]), ", cap reached" if cap and month_fen[hh] >= cap else "")
            rows.append({"household": hh, "name": name, **h, "yuan": yuan(h["fen"]), "month_fen": month_fen[hh]})
            out.line(
                "%-22s %6d %6d %8d %10d %10s  %s"
                % (name, h["taps"], h["rides"], h["charged"], h["fen"], yuan(h["fen"]), note),
                True,
            )
        tot = {k: sum(h[k] for h in per.values()) for k in ("taps", "rides", "charged", "fen")}
        out.line(
            "%-22s %6d %6d %8d %10d %10s"
            % ("total", tot["taps"], tot["rides"], tot["charged"], tot["fen"], yuan(tot["fen"])),
            True,
        )
        out.line("", True)
        # This run's records against what was shown per tap, byte for byte.
        shown = {t["seq"]: t for t in self.taps if "seq" in t}
        run_log = [r for r in log if r.seq >= self.run_first_seq]
        mismatched = [r.seq for r in run_log if r.seq not in shown or shown[r.seq]["record"] != r.pack().hex()]
        missing = sorted(set(shown) - {r.seq for r in run_log})
        if mismatched or missing:
            self.problem(
                "log records differ from the reported rides: seq %s, missing %s" % (mismatched[:5], missing[:5])
            )
        shown_fen = sum(t["fee_fen"] for t in shown.values())
        log_fen = sum(r.fee for r in run_log)
        if shown_fen != log_fen:
            self.problem("fees in the log (%d fen) differ from the fees shown per tap (%d fen)" % (log_fen, shown_fen))
        if tot["fen"] != sum(r.fee for r in log):
            self.problem("the per-household totals do not add up to the log's fees")
        agree = sum(1 for t in shown.values() if t.get("model_agrees"))
        boots = sorted({r.boot for r in log})
        out.line(
            "records     %d on flash, seq %d..%d%s, boot%s %s; this run: %d records, seq %d..%d"
            % (
                len(log),
                seqs[0],
                seqs[-1],
                "" if gaps else " (no gaps)",
                "s" if len(boots) > 1 else "",
                ",".join(map(str, boots)),
                len(run_log),
                run_log[0].seq if run_log else 0,
                run_log[-1].seq if run_log else 0,
            ),
            True,
        )
        out.line(
            "fees        this run's log: %d fen = %s yuan; shown per tap: %d fen = %s yuan: %s"
            % (log_fen, yuan(log_fen), shown_fen, yuan(shown_fen), "equal" if log_fen == shown_fen else "DIFFERENT"),
            True,
        )
        out.line(
            "records     %d/%d reported rides match their log record byte for byte; %d/%d decisions agree "
            "with the reference fee model"
            % (len(shown) - len(mismatched) - len(missing), len(shown), agree, len(shown)),
            True,
        )
        self.report.update(
            {
                "households": rows,
                "totals": tot,
                "log": {
                    "records": len(log),
                    "seq_first": seqs[0],
                    "seq_last": seqs[-1],
                    "gaps": gaps,
                    "boots": boots,
                    "fen": sum(r.fee for r in log),
                },
                "run": {
                    "records": len(run_log),
                    "seq_first": self.run_first_seq,
                    "seq_last": run_log[-1].seq if run_log else None,
                    "log_fen": log_fen,
                    "shown_fen": shown_fen,
                    "model_agrees": agree,
                },
                "month": month,
                "status": status,
            }
        )

    def finish(self) -> int:
        out = self.out
        ok = not self.problems
        for p in self.problems:
            out.line("PROBLEM     %s" % p, True)
        out.line("result      %s" % ("all checks passed" if ok else "%d problem(s)" % len(self.problems)), True)
        if out.mode == "json":
            cfg = {k: v for k, v in self.cfg.items() if k != "key"}  # the key stays secret
            doc = {
                "ok": ok,
                "dir": str(self.dir),
                "day": date_of_day(self.day).isoformat(),
                "config": cfg,
                "events": self.events,
                "taps": self.taps,
                **self.report,
                "problems": self.problems,
            }
            print(json.dumps(doc, indent=2))
        return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG + " --walkthrough",
        description="A virtual elevator-card reader (the real firmware under MicroPython) lives through a "
        "scripted morning: every tap's decision and fee, then the ride log summed per household.",
    )
    p.add_argument(
        "--dir",
        help="work dir for the building's files and the reader's flash images (default: var/demo under the repo)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the reader's flash from the last run: it resumes its sequence numbers "
        "(default: start a fresh reader)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="print only the header and the log summary")
    g.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] == ["bank-setup"]:
        return banksetup.main(argv[1:])
    if "--walkthrough" not in argv:
        return compound_cli.main(argv)
    return walkthrough([a for a in argv if a != "--walkthrough"])


def walkthrough(argv) -> int:
    args = build_parser().parse_args(argv)
    out = Output("json" if args.json else "quiet" if args.quiet else "text")
    try:
        return Demo(args, out).run()
    except DemoError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    except (FormatError, ConfigError) as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
