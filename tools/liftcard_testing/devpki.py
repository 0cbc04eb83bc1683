"""A development PKI for the upstream link (docs/upstream.md, "TLS and keys"):
tests, the benchmarks and a first installation on a bench.

A CA (Ed25519-free: ECDSA P-256, which every TLS stack and broker accepts), a
server certificate for the broker's names/addresses, client certificates
whose CN is the MQTT identity (liftcard_gateway.pki: a gateway's is its
gateway id exactly, `gw-0001`; the bank's `ledger`, `cards`, `probe`), and Ed25519 signing keys for the ledger and
each gateway (liftcard_protocol.keys).

Every private file is written atomically with mode 0600. Nothing here prints
or logs key material; errors name the file, never its content.

    python -m liftcard_testing.devpki --out DIR --gateway gw-0001 [--gateway gw-0002] [--server-name HOST]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liftcard_gateway.pki import CARDS_IDENTITY, LEDGER_IDENTITY, PROBE_IDENTITY, RESERVED_IDENTITIES, gateway_identity
from liftcard_protocol.keys import KeyFileError, new_signing_key, write_private, write_public
from liftcard_protocol.topics import GATEWAY_ID_RE


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "liftcard"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _pem_key(k) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert_pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


@dataclass
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def __repr__(self) -> str:
        return "<CA %s>" % self.cert.subject.rfc4514_string()


def make_ca(cn: str = "liftcard test CA", days: int = 3650) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert)


def issue(
    ca: CA, cn: str, *, server_names: tuple[str, ...] = (), client: bool = True, days: int = 825
) -> tuple[bytes, bytes]:
    """(key PEM, cert PEM) for cn signed by ca. server_names (DNS names or IP
    addresses) make it a server certificate; client adds clientAuth."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server_names:
        alt = []
        for n in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    return _pem_key(key), _cert_pem(cert)


@dataclass
class DevPKI:
    """Paths of a generated development PKI (see make_dev_pki)."""

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ledger_cert: Path
    ledger_key: Path
    ledger_signing_key: Path
    ledger_public_key: Path
    gateways: dict  # gateway_id -> dict(cert, key, signing_key, public_key)
    others: dict  # identity -> dict(cert, key): the card publisher, the readiness probe, test clients

    @property
    def cards_cert(self) -> Path:
        return self.others[CARDS_IDENTITY]["cert"]

    @property
    def cards_key(self) -> Path:
        return self.others[CARDS_IDENTITY]["key"]


def make_dev_pki(
    out: str | os.PathLike,
    gateway_ids=("gw1",),
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    others: tuple[str, ...] = (),
) -> DevPKI:
    """A CA, a broker server certificate, client certificates for the ledger and
    each gateway (CN `ledger`, the gateway id), and Ed25519 signing keys for all;
    client certificates for CARDS_IDENTITY (the card publisher), PROBE_IDENTITY
    (the broker's readiness probe) and each of `others` (CN as given). Private files 0600, directory 0700."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)
    ca = make_ca()
    write_private(out / "ca.key", _pem_key(ca.key))
    write_public(out / "ca.crt", _cert_pem(ca.cert))
    k, c = issue(ca, "liftcard bank broker", server_names=tuple(server_names), client=False)
    write_private(out / "server.key", k)
    write_public(out / "server.crt", c)
    k, c = issue(ca, LEDGER_IDENTITY)
    write_private(out / "ledger.key", k)
    write_public(out / "ledger.crt", c)
    new_signing_key(out / "ledger-signing.key", out / "ledger-signing.pub")
    gws = {}
    for gid in gateway_ids:
        ident = gateway_identity(gid)
        # A gateway's files are named by its identity, beside the CA's and the bank's.
        if ident in RESERVED_IDENTITIES or ident in ("ca", "server"):
            raise ValueError("gateway id %r is taken by the bank's own files" % gid)
        k, c = issue(ca, ident)
        write_private(out / ("%s.key" % ident), k)
        write_public(out / ("%s.crt" % ident), c)
        new_signing_key(out / ("%s-signing.key" % ident), out / ("%s-signing.pub" % ident))
        gws[gid] = {
            "cert": out / ("%s.crt" % ident),
            "key": out / ("%s.key" % ident),
            "signing_key": out / ("%s-signing.key" % ident),
            "public_key": out / ("%s-signing.pub" % ident),
        }
    extra = {}
    for ident in (CARDS_IDENTITY, PROBE_IDENTITY, *others):
        k, c = issue(ca, ident)
        write_private(out / ("%s.key" % ident), k)
        write_public(out / ("%s.crt" % ident), c)
        extra[ident] = {"cert": out / ("%s.crt" % ident), "key": out / ("%s.key" % ident)}
    return DevPKI(
        out,
        out / "ca.crt",
        out / "server.crt",
        out / "server.key",
        out / "ledger.crt",
        out / "ledger.key",
        out / "ledger-signing.key",
        out / "ledger-signing.pub",
        gws,
        extra,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m liftcard_testing.devpki",
        description="a development PKI: CA, broker server certificate, ledger, card "
        "publisher, probe and gateway client certificates, signing keys",
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--gateway", action="append", default=[], help="gateway id (repeatable)")
    ap.add_argument("--server-name", action="append", default=[], help="broker DNS name or IP (repeatable)")
    args = ap.parse_args(argv)
    try:
        for g in args.gateway or ["gw1"]:
            if not GATEWAY_ID_RE.fullmatch(g) or g in RESERVED_IDENTITIES or g in ("ca", "server"):
                raise KeyFileError(
                    "bad gateway id %r: 1 .. 64 of [A-Za-z0-9_-], not ca, server, %s"
                    % (g, ", ".join(RESERVED_IDENTITIES))
                )
        p = make_dev_pki(args.out, args.gateway or ["gw1"], tuple(args.server_name) or ("127.0.0.1", "localhost"))
        print("wrote %s" % p.dir)
    except (KeyFileError, OSError) as e:
        print(
            "liftcard devpki: %s" % (e if isinstance(e, KeyFileError) else "%s: %s" % (e.filename, e.strerror)),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
