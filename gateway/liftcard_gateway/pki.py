"""Key material for the upstream link (docs/upstream.md, "TLS and keys").

- Ed25519 signing keys: liftcard_protocol.keys (loaders, `new_signing_key`);
  `signing-key` below makes a gateway's on the Pi.
- The MQTT identities on the bank broker, which are the CNs of the client
  certificates (`gw-<gateway_id>`, `ledger`, `cards`, `probe`). The bank's CA
  signs them; a development PKI for tests and a bench is
  liftcard_testing.devpki.

Every private file is written atomically with mode 0600. Nothing here prints
or logs key material; errors name the file, never its content.

    python -m liftcard_gateway.pki signing-key --out gw1.key --pub gw1.pub
"""

from __future__ import annotations

import argparse
import sys

from liftcard_protocol.keys import KeyFileError, new_signing_key


def gateway_identity(gateway_id: str) -> str:
    """The TLS client certificate CN (= MQTT username on the bank broker) of a gateway."""
    return "gw-%s" % gateway_id


LEDGER_IDENTITY = "ledger"
PROBE_IDENTITY = "probe"  # a certificate that may connect and nothing else (test brokers' readiness probe)
CARDS_IDENTITY = "cards"  # the bank's card publisher: writes card updates, nothing else


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liftcard_gateway.pki", description="liftcard upstream keys")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("signing-key", help="a new Ed25519 signing key (private PEM 0600 + public PEM)")
    s.add_argument("--out", required=True)
    s.add_argument("--pub", required=True)
    args = ap.parse_args(argv)
    try:
        new_signing_key(args.out, args.pub)
        print("wrote %s and %s" % (args.out, args.pub))
    except (KeyFileError, OSError) as e:
        print(
            "liftcard pki: %s" % (e if isinstance(e, KeyFileError) else "%s: %s" % (e.filename, e.strerror)),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
