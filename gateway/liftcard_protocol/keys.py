"""Ed25519 keys and secret files: one set of loaders for every program.

A key is accepted as PEM (PKCS#8 / SubjectPublicKeyInfo, unencrypted), as its
raw 32 bytes, or as 64 hex digits. Private key files must be regular files
with mode 0600; every private file is written atomically with mode 0600.
Errors are `KeyFileError`, one line naming the file (never its content).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_MAX_KEY_FILE = 16384


class KeyFileError(ValueError):
    """A key or key file is refused; the message is one line naming the file
    (or, for bytes, the rule), never the key."""


# -- secret files -------------------------------------------------------------------


def write_private(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically (new file, fsync, rename) with mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.%s.tmp" % (path.name, secrets.token_hex(4)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_public(path: str | os.PathLike, data: bytes) -> Path:
    """Write a public file (a certificate, a public key) with mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


def check_private_file(path: str | os.PathLike) -> None:
    """KeyFileError unless path is a regular file that only its owner can read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError("file not found: %s" % path) from None
    except OSError as e:
        raise KeyFileError("cannot read %s: %s" % (path, e.strerror)) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError("not a regular file: %s" % path)
    if st.st_mode & 0o077:
        raise KeyFileError("%s must have mode 0600 (is %04o): chmod 600 it" % (path, st.st_mode & 0o777))


def read_key_file(path: str | os.PathLike) -> bytes:
    """The first 16 KiB of a key file; KeyFileError naming it if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_KEY_FILE)
    except FileNotFoundError:
        raise KeyFileError("file not found: %s" % path) from None
    except OSError as e:
        raise KeyFileError("cannot read %s: %s" % (path, e.strerror)) from None


# -- Ed25519 ----------------------------------------------------------------------


def _raw32(data: bytes) -> bytes | None:
    if len(data) == 32:
        return bytes(data)
    text = bytes(data).strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def parse_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from bytes: PEM, a raw 32-byte seed or 64 hex digits."""
    data = bytes(data)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data.strip(), password=None)
        except (ValueError, TypeError):
            raise KeyFileError("not a readable unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError("the PEM private key is not an Ed25519 key")
        return key
    raw = _raw32(data)
    if raw is None:
        raise KeyFileError("must hold an Ed25519 private key: PEM, 32 raw bytes or 64 hex digits")
    return Ed25519PrivateKey.from_private_bytes(raw)


def parse_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from bytes: PEM, the raw 32 bytes or 64 hex digits."""
    data = bytes(data)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data.strip())
        except (ValueError, TypeError):
            raise KeyFileError("not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError("the PEM public key is not an Ed25519 key")
        return key
    raw = _raw32(data)
    if raw is None:
        raise KeyFileError("must hold an Ed25519 public key: PEM, 32 raw bytes or 64 hex digits")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_signing_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """An Ed25519 private key from a file with mode 0600."""
    check_private_file(path)
    try:
        return parse_private_key(read_key_file(path))
    except KeyFileError as e:
        if str(path) in str(e):
            raise
        raise KeyFileError("%s: %s" % (path, e)) from None


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a file."""
    data = read_key_file(path)
    try:
        return parse_public_key(data)
    except KeyFileError as e:
        raise KeyFileError("%s: %s" % (path, e)) from None


def public_key_bytes(key) -> bytes:
    """The raw 32 bytes of an Ed25519 public key (a key object or its bytes)."""
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = bytes(key)
    if len(key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    """A public key as PEM (SubjectPublicKeyInfo)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def new_signing_key(priv_path, pub_path=None) -> Ed25519PublicKey:
    """Generate an Ed25519 key pair (OS CSPRNG): private PEM 0600, public PEM."""
    key = Ed25519PrivateKey.generate()
    write_private(
        priv_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    pub = key.public_key()
    if pub_path is not None:
        write_public(pub_path, public_pem(pub))
    return pub
