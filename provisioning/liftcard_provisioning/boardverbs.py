"""The verbs that talk to a reader board over USB (docs/technicians.md):
deploy, configure, selftest, console. cli.py adds them with ``add_parsers``;
each verb's logic is in its own module (deploy.py, configure.py,
selftest.py), the connection in boardlink.py.

Errors are one line on stderr: exit 2 for what the technician can fix (no
board, busy port, no MicroPython, a refused config, an interrupted transfer),
1 for a selftest that found a fault.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import boardlink
from .boardlink import BoardError

PROG = "liftcard-provision"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except BoardError as e:
            print("%s: %s" % (PROG, e), file=sys.stderr)
            return e.code

    return run


@_guard
def cmd_deploy(args) -> int:
    from . import deploy as D

    files, packages = D.firmware_files()
    b = boardlink.connect(args.port)
    _say("deploying %d firmware files to %s" % (len(files), b.port))
    ok = False
    try:
        done = D.deploy(b, files, packages, say=_say)
        ok = True
    finally:
        b.close(run=ok and not args.no_run)
    if args.json:
        print(json.dumps(dict(done, port=b.port)))
    elif done["copied"] + done["staged_before"] + done["removed"] == 0:
        print("firmware on %s is up to date (%d files): nothing copied" % (b.port, done["unchanged"]))
    else:
        print(
            "deployed to %s: %d copied, %d already staged, %d unchanged, %d stale removed%s"
            % (
                b.port,
                done["copied"],
                done["staged_before"],
                done["unchanged"],
                done["removed"],
                "" if args.no_run else "; reader restarted",
            )
        )
    return 0


@_guard
def cmd_configure(args) -> int:
    from . import configure as C

    cfg = C.build_config(args)  # refused here, before the board is opened
    b = boardlink.connect(args.port)
    ok = False
    try:
        C.write(b, cfg)
        ok = True
    except C.Refused:
        ok = True  # nothing was written: the reader goes on as it was
        raise
    finally:
        b.close(run=ok)
    print("configured %s: %s; reader restarted" % (b.port, C.summary(cfg)))
    return 0


@_guard
def cmd_selftest(args) -> int:
    from . import selftest as S

    b = boardlink.connect(args.port)
    try:
        _say(
            "booting the reader logic on %s; up to %g s for Wi-Fi, the gateway link and the gateway's time "
            "and whitelist" % (b.port, args.settle)
        )
        st = S.gather(b, args.settle)
    finally:
        b.close(run=True)
    rows = S.checks(st)
    if args.json:
        print(json.dumps({"port": b.port, "checks": [dict(zip(("check", "state", "detail"), r)) for r in rows]}))
    else:
        print("selftest of the reader on %s" % b.port)
        print(S.table(rows))
    return 1 if any(r[1] == "FAIL" for r in rows) else 0


@_guard
def cmd_console(args) -> int:
    """mpremote's own terminal (its repl) on the board's port: the reader's
    output, Ctrl-C to stop it at the REPL, Ctrl-D to restart it, Ctrl-] to leave."""
    from mpremote.main import State
    from mpremote.repl import do_repl
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    from . import ports as P

    try:
        port = P.board_port(args.port)
        P.check_free(port)
    except P.PortError as e:
        raise BoardError(str(e)) from None
    if not sys.stdin.isatty():
        raise BoardError("console needs a terminal (run it in a terminal window, not a pipe)")
    state = State()
    try:
        state.transport = SerialTransport(port, baudrate=115200)
    except (TransportError, OSError) as e:
        raise BoardError("cannot open %s: %s" % (port, e)) from None
    try:
        do_repl(state, argparse.Namespace(escape_non_printable=False, capture=None, inject_code=None, inject_file=None))
    finally:
        state.transport.close()
    return 0


MAX_SETTLE_S = 600  # a board's ticks_ms wraps long after; a technician waits less


def settle_seconds(text: str) -> float:
    """--settle: seconds, 0 .. MAX_SETTLE_S (argparse makes a refusal one line)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v <= MAX_SETTLE_S:  # NaN fails this too
        raise argparse.ArgumentTypeError("seconds from 0 to %d, got %r" % (MAX_SETTLE_S, text))
    return v


def add_parsers(sub) -> None:
    port_help = "the board's serial port (default: the one ESP32 board plugged in)"
    d = sub.add_parser(
        "deploy",
        help="copy the reader firmware (.mpy, as the manifest lists) to a board; only changed files",
        description="Build the firmware if needed (mpybuild), hash every file on the board, stage the "
        "changed ones in .fw-new/, then switch them in with renames behind a commit marker: an interrupted "
        "deploy leaves the old set or the new one, never a mix; run it again to finish. Then the reader restarts.",
    )
    d.add_argument("--port", help=port_help)
    d.add_argument("--no-run", action="store_true", help="leave the board at the REPL (do not restart the reader)")
    d.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    d.set_defaults(func=cmd_deploy)

    c = sub.add_parser(
        "configure",
        help="write the reader's config.json (ids, floors, tariff, Wi-Fi, gateway, secrets)",
        description="Build the config from --file (JSON, or TOML by its .toml name) and the options over it; "
        "secrets only from the file or the environment (LIFTCARD_READER_KEY, LIFTCARD_BROKER_PASSWORD, "
        "LIFTCARD_WIFI_PASSWORD), never printed. Checked here with the reader's rules, then written to "
        "config.new, renamed over config.json, read back and compared; a refused config changes nothing.",
    )
    c.add_argument("--port", help=port_help)
    c.add_argument("--file", metavar="FILE", help="a config (docs/formats.md, 'Reader configuration'), .json or .toml")
    c.add_argument(
        "--new-key",
        action="store_true",
        help="give the reader a new random key (never shown; `register` hands it to the gateway)",
    )
    c.add_argument("--reader-id", type=int)
    c.add_argument("--building-id", type=int)
    c.add_argument("--floors", type=int)
    c.add_argument("--ground-floor", type=int)
    c.add_argument("--board", help="board profile: devkit-v1, devkit-v1-i2c, wrover-v1")
    c.add_argument("--fees", metavar="F0,F1,...", help="tariff.fee_fen: one fee in fen per floor")
    c.add_argument("--free-classes", metavar="C,...", help="tariff.free_classes (resident, exempt, staff, visitor)")
    c.add_argument("--monthly-cap", type=int, metavar="FEN", help="tariff.monthly_cap_fen (0: no cap)")
    c.add_argument("--debounce", type=int, metavar="S", help="tariff.debounce_s")
    c.add_argument("--wifi-ssid", metavar="SSID", help="wifi.ssid (its password: the file or LIFTCARD_WIFI_PASSWORD)")
    c.add_argument(
        "--gateway", metavar="HOST[:PORT]", help="uplink.host/port (the password: file or LIFTCARD_BROKER_PASSWORD)"
    )
    c.set_defaults(func=cmd_configure)

    s = sub.add_parser(
        "selftest",
        help="the reader's own checks: flash log, whitelist, clock, heap, Wi-Fi/uplink, NFC chip",
        description="Boot the reader logic on the board (not its loop), let Wi-Fi and the uplink try for "
        "--settle seconds, and print its STATUS as a table; exit 1 if a check FAILs.",
    )
    s.add_argument("--port", help=port_help)
    s.add_argument(
        "--settle", type=settle_seconds, default=15.0, metavar="S", help="wait up to S s for Wi-Fi/uplink (15)"
    )
    s.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    s.set_defaults(func=cmd_selftest)

    r = sub.add_parser(
        "console",
        help="the reader's REPL on a terminal (mpremote's terminal; Ctrl-] leaves)",
        description="Attach this terminal to the board: the reader's output; Ctrl-C stops it at the REPL, "
        "Ctrl-D restarts it, Ctrl-] or Ctrl-X leaves.",
    )
    r.add_argument("--port", help=port_help)
    r.set_defaults(func=cmd_console)
