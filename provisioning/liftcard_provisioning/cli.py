"""liftcard-provision: the technicians' command line (docs/provisioning.md).

    liftcard-provision ports [--json]
    liftcard-provision flash IMAGE [--port PORT] [--baud N] [--json] [-v]
    liftcard-provision deploy | configure | selftest | console [--port PORT] ...
    liftcard-provision register [--port PORT] [--gateway-config GW.toml] [--out FILE]
    liftcard-provision harvest [--port PORT | --image LOG.img ...] [--out FILE]
    liftcard-provision card personalise --port PORT|auto --keys building-keys.json \\
        --card-id HEX16 --valid-from YYYY-MM-DD --valid-until YYYY-MM-DD|never [--issuer N]
    liftcard-provision card read --port PORT|auto --keys building-keys.json [--json]

This module is the table of commands; each verb's work is in its own module:
ports.py, flashing.py, boardverbs.py (deploy, configure, selftest, console),
register.py, harvest.py, cardverbs.py (card personalise / read through a USB PN532).
"""

from __future__ import annotations

import argparse
import json
import sys

from liftcard_provisioning.errors import Fail

PROG = "liftcard-provision"


def cmd_ports(args) -> int:
    from liftcard_provisioning import ports as P

    found = P.list_ports()
    if args.json:
        print(json.dumps([p.as_json() for p in found]))
        return 0
    if not found:
        print("no serial ports found")
        return 0
    for p in found:
        mark = {"esp32": "ESP32 board", "pn532": "PN532 adapter"}.get(p.kind, "")
        if mark and p.bridge:
            mark += " (%s)" % p.bridge
        print("%-20s %-9s  %-28s %s" % (p.device, p.ids(), p.description[:28], "<- " + mark if mark else ""))
    return 0


def cmd_flash(args) -> int:
    from liftcard_provisioning import flashing
    from liftcard_provisioning import ports as P

    try:
        flashing.read_image(args.image)  # a wrong file is refused before a port is chosen or opened
        port = P.resolve(args.port)
        done = flashing.flash(args.image, port, baud=args.baud, verbose=args.verbose)
    except P.PortError as e:
        raise Fail(str(e), 2) from None
    except flashing.FlashError as e:
        raise Fail(str(e), e.code) from None
    if args.json:
        print(json.dumps(done))
    else:
        print(
            "flashed %s on %s (%s flash): reader layout with room for %d whitelist cards and %d buffered rides"
            % (done["image"], done["port"], done["flash_size"], done["max_cards"], done["max_rides"])
        )
    return 0


# ---------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------


def baud(text: str) -> int:
    """--baud: a rate esptool can ask the stub for, or 0 to stay at the ROM's."""
    try:
        v = int(text, 10)
    except ValueError:
        v = -1
    if not (v == 0 or 9600 <= v <= 5_000_000):
        raise argparse.ArgumentTypeError("a baud rate from 9600 to 5000000 (0: keep the ROM's), got %r" % text)
    return v


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, "%s: %s (see %s --help)\n" % (PROG, message, self.prog))


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="liftcard technicians' tool: find, flash, deploy, configure and self-test reader boards, "
        "rescue the rides a reader holds, and personalise and read DESFire cards through a USB PN532 "
        "(docs/technicians.md).",
        epilog="Examples:\n  %(prog)s ports\n  %(prog)s flash ESP32_GENERIC-v1.28.0.bin\n"
        "  %(prog)s register --gateway-config /etc/liftcard/gateway.toml\n"
        "  %(prog)s card personalise --port auto --keys building-12.json --card-id 00000000075BCD15 \\\n"
        "      --valid-from 2026-01-01 --valid-until 2027-12-31\n"
        "  %(prog)s card read --port /dev/ttyUSB0 --keys building-12.json\n"
        "Errors are one line on stderr and a non-zero exit (2: bad input, 1: chip/card).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    sp = sub.add_parser(
        "ports",
        help="list serial ports, marking ESP32 boards and PN532 adapters",
        description="Serial ports with their USB VID:PID. ESP32 boards are marked by their USB bridge "
        "(CP210x, CH340, CH9102, FTDI, Espressif USB-Serial/JTAG); a port whose USB description "
        "names a PN532/NFC reader is marked as a PN532 adapter.",
    )
    sp.add_argument("--json", action="store_true", help="print one JSON array")
    sp.set_defaults(func=cmd_ports)
    fp = sub.add_parser(
        "flash",
        help="write MicroPython and the reader partition table (vfs + ridelog) to a board",
        description="Check IMAGE (an ESP32 firmware .bin from micropython.org: the merged release "
        "image, or an app image alone) against the board's chip, then write it with the reader "
        "partition table for the detected flash size and an erased ridelog partition, verifying "
        "each by MD5 (docs/technicians.md, docs/partitions.md). Nothing is written if a check fails.",
    )
    fp.add_argument("image", metavar="IMAGE", help="MicroPython firmware .bin for the board's chip")
    fp.add_argument("--port", help="the board's serial port (default: the one ESP32 board plugged in)")
    fp.add_argument("--baud", type=baud, default=460800, help="transfer baud rate (default 460800; 0: keep 115200)")
    fp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    fp.add_argument("-v", "--verbose", action="store_true", help="show esptool's messages")
    fp.set_defaults(func=cmd_flash)
    from liftcard_provisioning import boardverbs  # deploy, configure, selftest, console

    boardverbs.add_parsers(sub)
    from liftcard_provisioning import harvest  # docs/technicians.md, Harvest

    harvest.add_parser(sub)
    from liftcard_provisioning import register  # docs/technicians.md, Register

    register.add_parser(sub)
    from liftcard_provisioning import cardverbs  # card personalise, card read

    cardverbs.add_parsers(sub, Parser)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Fail as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
