"""`liftcard-provision register`: the reader on a board made known to its
gateway in one step (docs/technicians.md, "Register").

The reader's own config.json, read over USB (boardlink: the reader is
stopped, then restarted), gives its id, building, key and uplink (the
gateway's broker address and the reader's broker password). From them the
**enrolment file** (liftcard_protocol.enrolment, docs/formats.md "Reader
enrolment file") is written, mode 0600, atomically. Then either:

- ``--gateway-config GW.toml`` (the technician is on the gateway, or has its
  config): the gateway's own command, ``liftcard-gateway readers add --from
  FILE --config GW.toml``, is run as a subprocess. It registers the key, gives
  the reader its broker login and ACL and reloads Mosquitto: one
  implementation of that, the gateway's. Its refusal is passed through as
  one line. Without ``--out`` the file is a temporary one, removed after.
- otherwise the file (``--out``, default ``reader-<id>.json``) is for the
  gateway's operator, who runs that same command.

The key and the broker password go only into the 0600 file: never on a
command line (the file's path is), a terminal or an error message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from liftcard_protocol.enrolment import dumps_enrolment, enrolment_doc, parse_enrolment
from liftcard_protocol.errors import ConfigError
from liftcard_protocol.keys import write_private
from liftcard_protocol.readerconfig import validate_config
from liftcard_protocol.topics import reader_user

from .boardlink import Board, BoardError

PROG = "liftcard-provision"
GATEWAY_TIMEOUT_S = 120  # renders the broker's files and reloads it: seconds at most


class RegisterError(BoardError):
    """One line for the technician; `code` the exit status."""

    def __init__(self, msg: str, code: int = 2):
        super().__init__(msg)
        self.code = code


def board_config(board: Board) -> dict:
    """The reader's config.json, checked by the reader's rules (RegisterError
    naming the key, never a value)."""
    raw = board.read_file("config.json")
    if raw is None:
        raise RegisterError(
            "the reader on %s has no config.json: deploy and configure it first "
            "(liftcard-provision deploy, then configure)" % board.port
        )
    try:
        return validate_config(json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        raise RegisterError(
            "the reader's config.json on %s is not valid JSON: configure it again" % board.port
        ) from None
    except ConfigError as e:
        raise RegisterError(
            "the reader's config.json on %s is refused (%s): configure it again" % (board.port, e)
        ) from None


def enrolment(cfg: dict, port: str) -> bytes:
    """The enrolment file's bytes for a validated reader config."""
    up = cfg.get("uplink")
    if up is None:
        raise RegisterError(
            "the reader on %s has no uplink in its config.json, so there is nothing to register with: "
            "configure it with --gateway HOST[:PORT] and its broker password (LIFTCARD_BROKER_PASSWORD) first" % port
        )
    try:
        doc = enrolment_doc(
            cfg["reader_id"],
            cfg["building_id"],
            bytes.fromhex(cfg["key"]),
            up["host"],
            up["password"],
            port=up["port"],
            keepalive_s=up["keepalive_s"],
        )
        return dumps_enrolment(parse_enrolment(doc))
    except ConfigError as e:
        raise RegisterError("the reader's config.json on %s cannot be enrolled (%s)" % (port, e)) from None


def gateway_command() -> list[str]:
    """How to run `liftcard-gateway`: its console script beside this
    interpreter (the same venv), else on PATH, else the module."""
    here = Path(sys.executable).parent / "liftcard-gateway"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("liftcard-gateway")
    return [found] if found else [sys.executable, "-m", "liftcard_gateway"]


def gateway_add(path: Path, gateway_config: str, say=print) -> None:
    """`liftcard-gateway readers add --from PATH --config GATEWAY_CONFIG`; its
    output lines go to `say`; RegisterError with its one line if it fails."""
    argv = [*gateway_command(), "readers", "add", "--from", str(path), "--config", gateway_config]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=GATEWAY_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RegisterError("could not run liftcard-gateway readers add (%s)" % type(e).__name__, 1) from None
    for line in p.stdout.splitlines():
        if line.strip():
            say(line)
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()] or ["exit status %d" % p.returncode]
        raise RegisterError("the gateway refused the reader: %s" % lines[-1].strip(), 2 if p.returncode == 2 else 1)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_register(args) -> int:
    from . import boardlink

    try:
        out = Path(args.out) if args.out else None
        if out is not None and out.exists():
            raise RegisterError("%s exists: move it away or name another --out" % out)
        if args.gateway_config and not Path(args.gateway_config).is_file():
            raise RegisterError("gateway config %s does not exist" % args.gateway_config)
        b = boardlink.connect(args.port)
        try:
            cfg = board_config(b)
        finally:
            b.close(run=not args.stay_stopped)
        data = enrolment(cfg, b.port)
        rid, bid = cfg["reader_id"], cfg["building_id"]
        who = "reader %d (building %d, broker user %s)" % (rid, bid, reader_user(rid))
        if args.gateway_config is None:
            out = out or Path("reader-%d.json" % rid)
            if out.exists():
                raise RegisterError("%s exists: move it away or name another --out" % out)
            write_private(out, data)
            print(
                "wrote %s (0600) for %s: the gateway's operator runs "
                "liftcard-gateway readers add --from %s --config GW.toml" % (out, who, out)
            )
            return 0
        if out is not None:
            write_private(out, data)
            _say("wrote %s (0600)" % out)
            gateway_add(out, args.gateway_config, _say)
        else:
            with tempfile.TemporaryDirectory(prefix="liftcard-enrol-") as d:
                tmp = write_private(Path(d) / ("reader-%d.json" % rid), data)
                gateway_add(tmp, args.gateway_config, _say)
        print("registered %s with the gateway of %s (key, broker password not shown)" % (who, args.gateway_config))
        return 0
    except BoardError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return e.code
    except OSError as e:
        print("%s: cannot write the enrolment file: %s" % (PROG, e.strerror or type(e).__name__), file=sys.stderr)
        return 2


def add_parser(sub) -> None:
    r = sub.add_parser(
        "register",
        help="enrol the reader on a board with its gateway (key, broker login) from its config.json",
        description="Read the reader's config.json over USB and write its enrolment file (0600: its key and "
        "broker password, never shown). With --gateway-config, run the gateway's `liftcard-gateway readers "
        "add --from FILE` on it (key, broker login and ACL, broker reloaded); otherwise hand the file to the "
        "gateway's operator (docs/technicians.md, Register).",
    )
    r.add_argument("--port", help="the board's serial port (default: the one ESP32 board plugged in)")
    r.add_argument(
        "--gateway-config", metavar="GW.toml", help="the gateway's config: register the reader on it right away"
    )
    r.add_argument(
        "--out",
        metavar="FILE",
        help="the enrolment file (default reader-<id>.json here; with --gateway-config, a temporary one)",
    )
    r.add_argument("--stay-stopped", action="store_true", help="leave the reader at the REPL afterwards")
    r.set_defaults(func=cmd_register)
