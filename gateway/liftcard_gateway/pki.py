"""Key material for the upstream link (docs/upstream.md, "TLS and keys").

- Ed25519 signing keys: liftcard_protocol.keys (loaders, `new_signing_key`);
  `signing-key` below makes a gateway's on the Pi.
- The MQTT identities on the bank broker, which are the CNs of the client
  certificates: a gateway's is its `[gateway] gateway_id`, exactly (`gw-0001`);
  the bank's own are `ledger`, `cards` and `probe`, which no gateway may take.
  The bank's CA signs them; `new_tls_request` makes a gateway's key and CSR on
  the Pi (`liftcard-gateway init`); a development PKI for tests and a bench
  is liftcard_testing.devpki.

Every private file is written atomically with mode 0600. Nothing here prints
or logs key material; errors name the file, never its content.

    python -m liftcard_gateway.pki signing-key --out gw1.key --pub gw1.pub
"""

from __future__ import annotations

import argparse
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from liftcard_protocol.keys import KeyFileError, new_signing_key, write_private, write_public


def gateway_identity(gateway_id: str) -> str:
    """The TLS client certificate CN (= MQTT username on the bank broker) of a
    gateway: its gateway id, unchanged, so one name is spelled one way everywhere."""
    return gateway_id


LEDGER_IDENTITY = "ledger"
PROBE_IDENTITY = "probe"  # a certificate that may connect and nothing else (test brokers' readiness probe)
CARDS_IDENTITY = "cards"  # the bank's card publisher: writes card updates, nothing else
# The bank broker's identities that are not gateways: a gateway id may not be one.
RESERVED_IDENTITIES = (LEDGER_IDENTITY, CARDS_IDENTITY, PROBE_IDENTITY)


def new_tls_request(key_path: str | os.PathLike, csr_path: str | os.PathLike, gateway_id: str) -> None:
    """A fresh ECDSA P-256 TLS client key (PEM, 0600) and its certificate
    signing request whose subject is CN=<gateway id> (the bank signs it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "liftcard"),
                    x509.NameAttribute(NameOID.COMMON_NAME, gateway_identity(gateway_id)),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    write_public(csr_path, csr.public_bytes(serialization.Encoding.PEM))


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
