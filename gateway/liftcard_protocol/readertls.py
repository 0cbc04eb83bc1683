"""The CA certificate a reader trusts on the local link over TLS (docs/uplink.md,
"TLS on the local link"): carried as PEM text in the enrolment file, written to
the reader's flash as DER (its mbedTLS takes DER only, and DER is the smaller),
and found by the gateway at the end of its TLS listener's certificate chain."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import ConfigError

# The largest CA certificate a reader reads (firmware/liftcard/tlsctx.py).
MAX_CA_DER = 4096


def _checked(cert: x509.Certificate, key: str) -> bytes:
    der = cert.public_bytes(Encoding.DER)
    if len(der) > MAX_CA_DER:
        raise ConfigError(key, "%s: the CA certificate is %d bytes as DER, more than %d" % (key, len(der), MAX_CA_DER))
    return der


def ca_der(pem, key: str = "tls_ca") -> bytes:
    """One PEM certificate (text or bytes) -> its DER bytes; ConfigError
    naming `key` when it is not exactly one certificate."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    if not isinstance(pem, bytes):
        raise ConfigError(key, "%s must be the CA certificate as PEM text" % key)
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if len(certs) != 1:
        raise ConfigError(key, "%s must be exactly one PEM certificate" % key)
    return _checked(certs[0], key)


def ca_pem(der: bytes) -> str:
    """The PEM text of a DER certificate."""
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode("ascii")


def trust_anchor(chain_pem: bytes) -> bytes | None:
    """The DER of the last self-signed certificate of a PEM chain (the server
    certificate followed by its CA's, as Mosquitto's certfile takes it), or
    None when the chain holds none: a lone CA-issued certificate names no CA
    a reader could be given."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        return None
    roots = [c for c in certs if c.issuer == c.subject]
    return _checked(roots[-1], "broker.tls_cert_file") if roots else None
