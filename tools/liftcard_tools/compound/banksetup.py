"""liftcard-demo bank-setup DIR: everything a person needs to run the bank
side by hand on one machine, for a trial with a real gateway (docs/demo.md).

    liftcard-demo bank-setup DIR [--gateway gw-0001] [--compound 1]
                                 [--port 8883] [--bind 127.0.0.1] [--server-name NAME ...]

writes, into DIR (which must not exist yet, or be empty):

    pki/       a development PKI: CA, the broker's server certificate for the
               given names, client certificates (ledger, cards, probe, and the
               gateway's, CN = its gateway id) and Ed25519 signing keys
    broker/    the bank broker's mosquitto.conf and ACL (TLS, client
               certificates required), its data directory
    ledger/    ledger.toml (the ledger's TLS identity, its signing key, the
               gateway registered with its public key)
    bank/      the bank's card-signing key pair and an example card file
    gateway/   bank-link.toml: what the gateway's gw.toml needs for the bank
               link ([gateway] identity, [upstream], [cards])

and prints the commands that start each piece. Private keys are 0600 and
never printed. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from liftcard_protocol.topics import GATEWAY_ID_RE
from liftcard_testing.bankbroker import render_bank_acl, render_bank_conf
from liftcard_testing.configs import write_ledger_config
from liftcard_testing.devpki import make_dev_pki
from liftcard_protocol.keys import write_private
from liftcard_tools.bank import InputError, keygen

PROG = "liftcard-demo bank-setup"
RESERVED = ("ledger", "cards", "probe")


class SetupError(ValueError):
    """Bad input: str() is one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="write the bank side's files (PKI, bank broker, ledger, card key) for a trial by hand"
    )
    p.add_argument("dir", type=Path, help="a new (or empty) directory")
    p.add_argument("--gateway", default="gw-0001", help="the gateway's id (its certificate's CN; default gw-0001)")
    p.add_argument("--compound", type=int, default=1, help="the compound's number the bank signs for (default 1)")
    p.add_argument("--port", type=int, default=8883, help="the bank broker's TLS port (default 8883)")
    p.add_argument("--bind", default="127.0.0.1", help="the bank broker's listen address (default 127.0.0.1)")
    p.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="a name or address the gateway reaches the broker by (repeatable; default 127.0.0.1 and localhost)",
    )
    return p


def _check(args) -> Path:
    d = args.dir.absolute()
    if not GATEWAY_ID_RE.fullmatch(args.gateway) or args.gateway in RESERVED:
        raise SetupError(
            "--gateway: %r must be 1 .. 64 of A-Z a-z 0-9 _ - and not ledger, cards or probe" % args.gateway
        )
    if not 1 <= args.compound <= (1 << 30) - 1:
        raise SetupError("--compound must be 1 .. 2^30-1")
    if not 1 <= args.port <= 65535:
        raise SetupError("--port must be 1 .. 65535")
    if any(c in str(d) for c in " \t\n\"'#"):
        raise SetupError("%s: the broker's config cannot take a path with spaces, quotes or #" % d)
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise SetupError("%s exists and is not an empty directory: not overwriting keys" % d)
    return d


def write_setup(args) -> dict:
    """Writes everything; returns the paths the commands use."""
    d = _check(args)
    names = tuple(args.server_name) or ("127.0.0.1", "localhost")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = make_dev_pki(d / "pki", [args.gateway], names)
    broker = d / "broker"
    (broker / "data").mkdir(parents=True, mode=0o700)
    write_private(broker / "acl", render_bank_acl([args.gateway]).encode())
    conf = render_bank_conf(args.port, args.bind, broker, pki.ca_cert, pki.server_cert, pki.server_key)
    write_private(broker / "mosquitto.conf", conf.encode())
    ledger_cfg = write_ledger_config(
        d / "ledger",
        pki,
        SimpleNamespace(host=names[0], port=args.port),
        [args.gateway],
        client_id="ledger",
    )
    bank = d / "bank"
    bank.mkdir(mode=0o700)
    keygen(bank / "bank.key", bank / "bank.pub")
    cards = bank / "cards-example.json"
    cards.write_text(
        json.dumps(
            {
                "cards": [
                    {
                        "building_id": 1,
                        "card_id": "6217000100000101",
                        "household": 10601,
                        "floors": [0, 6],
                        "status": "active",
                        "class": "resident",
                    },
                    {
                        "building_id": 1,
                        "card_id": "6217000100000102",
                        "household": 10601,
                        "floors": [0, 6],
                        "status": "active",
                        "class": "exempt",
                    },
                ]
            },
            indent=1,
        )
        + "\n"
    )
    g = pki.gateways[args.gateway]
    gw = d / "gateway"
    gw.mkdir()
    (gw / "bank-link.toml").write_text(
        "# The bank link of gateway %s: merge into its gw.toml (the [gateway] keys\n"
        "# beside data_dir). Copy the files named here to the gateway, or keep them here.\n"
        "[gateway]\n"
        'gateway_id = "%s"\n'
        "compound_id = %d\n\n"
        "[upstream]\n"
        'host = "%s"\n'
        "port = %d\n"
        'ca_file = "%s"\n'
        'cert_file = "%s"\n'
        'key_file = "%s"\n'
        'signing_key_file = "%s"\n'
        'ledger_public_key_file = "%s"\n\n'
        "[cards]\n"
        'bank_public_key_file = "%s"\n'
        % (
            args.gateway,
            args.gateway,
            args.compound,
            names[0],
            args.port,
            pki.ca_cert,
            g["cert"],
            g["key"],
            g["signing_key"],
            pki.ledger_public_key,
            bank / "bank.pub",
        )
    )
    return {
        "dir": d,
        "broker_conf": broker / "mosquitto.conf",
        "ledger_cfg": ledger_cfg,
        "bank_key": bank / "bank.key",
        "cards": cards,
        "update": bank / "update-v1.bin",
        "gateway_snippet": gw / "bank-link.toml",
        "gateway_cert": g["cert"],
    }


def commands(args, p: dict) -> list:
    """(what, command line) in the order to run them."""
    q = shlex.quote
    return [
        ("the bank broker (TLS on port %d)" % args.port, "mosquitto -c %s" % q(str(p["broker_conf"]))),
        ("the reference ledger", "liftcard-ledger run --config %s" % q(str(p["ledger_cfg"]))),
        (
            "sign a card update (v1, a snapshot)",
            "liftcard-bank update --key %s --compound %d --version 1 --from %s --out %s"
            % (q(str(p["bank_key"])), args.compound, q(str(p["cards"])), q(str(p["update"]))),
        ),
        (
            "publish it to the gateway",
            "liftcard-ledger publish-card --config %s --gateway %s --file %s"
            % (q(str(p["ledger_cfg"])), q(args.gateway), q(str(p["update"]))),
        ),
        ("the ledger's totals", "liftcard-ledger totals --config %s" % q(str(p["ledger_cfg"]))),
    ]


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        p = write_setup(args)
    except (SetupError, InputError, ValueError) as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 2
    except OSError as e:
        print("%s: cannot write %s: %s" % (PROG, e.filename, e.strerror), file=sys.stderr)
        return 2
    print("wrote the bank side for gateway %s into %s" % (args.gateway, p["dir"]))
    print("the gateway's certificate (CN %s): %s" % (args.gateway, p["gateway_cert"]))
    print("the gateway's settings for the bank link: %s" % p["gateway_snippet"])
    print("run, each in its own terminal or in this order:")
    for what, cmd in commands(args, p):
        print("  # %s" % what)
        print("  %s" % cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
