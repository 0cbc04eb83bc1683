"""liftcard-bank: the bank's side of card updates (docs/cards.md).

    liftcard-bank keygen --key bank.key [--pub bank.pub]
    liftcard-bank update --key bank.key --compound 1 --version 8 [--base 7] \\
                         --from cards.json|cards.csv --out update.bin

`keygen` writes a new Ed25519 key pair: the private key as unencrypted PKCS#8
PEM with mode 0600 (never overwritten), the public key as PEM (default: the
key's path with the suffix .pub) for the gateway's `[cards] bank_public_key_file`.

`update` builds and signs one card update (LCCU): a snapshot of every card of
the compound without --base, an incremental update from version --base with it.
The input is JSON (a list of entries, or {"cards": [...]}) or CSV (a header
row), one entry per card:

    building_id  1 .. 2^30-1
    card_id      16 hex digits
    op           "upsert" (default) or "remove" (incremental only; then only
                 building_id and card_id count)
    household    0 .. 2^24-1
    floors       JSON: a list of floor indexes 0..15, or the integer mask;
                 CSV: floor indexes separated by ";" (e.g. "0;5")
    status       active | suspended | lost | expired (or 0..3)
    class        resident | exempt | staff | visitor (or 0..3)
    valid_until  "YYYY-MM-DD" (the last local day the card is valid), a local
                 day number, or empty / null: no end

Bad input: one line on stderr naming the file, the entry and the field, exit 1,
nothing written. The private key is never printed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_protocol import keys
from liftcard_protocol.keys import KeyFileError, check_private_file, write_private
from liftcard_protocol.cardupdate import (
    INCREMENTAL,
    SNAPSHOT,
    CardOp,
    UpdateError,
    build_update,
)
from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import CLASS_NAMES, STATUS_NAMES
from liftcard_protocol.epoch import date_to_day, epoch_from_unix
from liftcard_protocol.errors import FormatError
from liftcard_protocol.fields import ID_MAX, NO_END, U32

PROG = "liftcard-bank"


class InputError(ValueError):
    """Bad input: str() is one line."""


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def keygen(key_path: Path, pub_path: Path) -> None:
    for p in (key_path, pub_path):
        if p.exists():
            raise InputError("%s already exists: not overwriting a key" % p)
    k = Ed25519PrivateKey.generate()  # OpenSSL's CSPRNG
    priv = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        _write_new(key_path, priv, 0o600)
        _write_new(pub_path, pub, 0o644)
    except FileExistsError as e:
        raise InputError("%s already exists: not overwriting a key" % e.filename) from None
    except OSError as e:
        raise InputError("cannot write %s: %s" % (e.filename, e.strerror)) from None


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        check_private_file(path)  # the same rule as every secret file of the gateway
    except KeyFileError as e:
        raise InputError(str(e).replace("file not found", "private key not found")) from None
    try:
        with open(path, "rb") as f:
            data = f.read(8192)
    except OSError as e:
        raise InputError("cannot read %s: %s" % (path, e.strerror)) from None
    try:
        return keys.parse_private_key(data)
    except ValueError as e:
        raise InputError("%s: %s" % (path, e)) from None


# ---------------------------------------------------------------------------
# Card input
# ---------------------------------------------------------------------------


def _int_field(v, name: str, lo: int, hi: int) -> int:
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InputError("%s must be an integer %d .. %d" % (name, lo, hi))
    return v


def _named(v, name: str, names) -> int:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in names:
            return names.index(s)
        if s.isdigit():
            v = int(s)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
        return v
    raise InputError("%s must be one of %s" % (name, ", ".join(names)))


def _floors(v, csv_mode: bool) -> int:
    if csv_mode and isinstance(v, str):
        parts = [p for p in v.replace(" ", ";").split(";") if p]
        v = parts
    if isinstance(v, list):
        mask = 0
        for f in v:
            f = _int_field(f, "floors", 0, 15)
            mask |= 1 << f
        return mask
    return _int_field(v, "floors", 0, 0xFFFF)


def _valid_until(v) -> int:
    if v is None or v == "":
        return NO_END
    if isinstance(v, str) and "-" in v:
        try:
            day = date_to_day(datetime.date.fromisoformat(v.strip()))
        except ValueError:
            raise InputError("valid_until must be YYYY-MM-DD, a day number, or empty") from None
        if not 0 <= day < NO_END:
            raise InputError("valid_until must be between 2024-01-01 and 2203-06-06")
        return day
    return _int_field(v, "valid_until", 0, NO_END)


def _card_id(v) -> int:
    if not isinstance(v, str) or len(v.strip()) != 16:
        raise InputError("card_id must be 16 hex digits")
    try:
        return int(v.strip(), 16)
    except ValueError:
        raise InputError("card_id must be 16 hex digits") from None


def entry_to_op(e, kind: int, csv_mode: bool = False) -> CardOp:
    if not isinstance(e, dict):
        raise InputError("must be an object")
    op = e.get("op") or "upsert"
    op = op.strip().lower() if isinstance(op, str) else op
    if op not in ("upsert", "remove"):
        raise InputError('op must be "upsert" or "remove"')
    bid = _int_field(e.get("building_id"), "building_id", 1, ID_MAX)
    cid = _card_id(e.get("card_id"))
    if op == "remove":
        if kind == SNAPSHOT:
            raise InputError("a snapshot (no --base) cannot remove cards: leave them out")
        return CardOp.remove(bid, cid)
    for need in ("household", "floors", "status"):
        if need not in e:
            raise InputError("%s is missing" % need)
    klass = e.get("class", e.get("klass"))
    if klass is None:
        raise InputError("class is missing")
    try:
        rec = CardRecord(
            cid,
            _int_field(e["household"], "household", 0, 0xFFFFFF),
            _floors(e["floors"], csv_mode),
            _named(e["status"], "status", STATUS_NAMES),
            _named(klass, "class", CLASS_NAMES),
            _valid_until(e.get("valid_until")),
        )
    except FormatError as x:
        raise InputError(str(x)) from None
    return CardOp.upsert(bid, rec)


def read_cards(path: Path, kind: int) -> list[CardOp]:
    """The operations of a JSON or CSV card file; InputError names the entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("card file not found: %s" % path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError("cannot read %s: %s" % (path, getattr(e, "strerror", None) or "not UTF-8 text")) from None
    csv_mode = path.suffix.lower() == ".csv"
    if csv_mode:
        rows = list(csv.DictReader(io.StringIO(text)))
        entries = [{k.strip(): (v if v is None else v.strip()) for k, v in r.items() if k} for r in rows]
    else:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InputError("%s is not valid JSON: %s" % (path, str(e).splitlines()[0])) from None
        entries = doc.get("cards") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise InputError('%s must hold a list of cards (or {"cards": [...]})' % path)
    ops, seen = [], set()
    for i, e in enumerate(entries, 1):
        try:
            o = entry_to_op(e, kind, csv_mode)
        except InputError as x:
            raise InputError("%s: entry %d: %s" % (path, i, x)) from None
        if o.key() in seen:
            raise InputError("%s: entry %d: the same card of the same building is listed twice" % (path, i))
        seen.add(o.key())
        ops.append(o)
    return ops


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def make_update(
    key_path: Path, compound: int, version: int, base: int | None, cards_path: Path, issued: int | None = None
) -> bytes:
    kind = SNAPSHOT if base is None else INCREMENTAL
    if not 1 <= compound <= ID_MAX:
        raise InputError("--compound must be 1 .. 2^30-1")
    if not 1 <= version <= U32:
        raise InputError("--version must be 1 .. 2^32-1")
    if base is not None and not 0 <= base < version:
        raise InputError("--base must be 0 .. version-1")
    key = read_private_key(key_path)
    ops = read_cards(cards_path, kind)
    if issued is None:
        issued = max(0, min(epoch_from_unix(int(time.time())), U32))
    try:
        return build_update(key, kind, compound, version, base or 0, ops, issued)
    except UpdateError as e:
        raise InputError(str(e)) from None


def _write_update(path: Path, data: bytes) -> None:
    """The signed update file, written atomically with mode 0600 (keys.write_private)."""
    try:
        write_private(path, data)
    except OSError as e:
        raise InputError("cannot write %s: %s" % (path, e.strerror)) from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description="build and sign card updates for liftcard gateways")
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="write a new Ed25519 key pair (private key mode 0600)")
    k.add_argument("--key", required=True, type=Path, help="private key file to create")
    k.add_argument("--pub", type=Path, help="public key file to create (default: KEY with suffix .pub)")
    u = sub.add_parser("update", help="build and sign a card update")
    u.add_argument("--key", required=True, type=Path, help="the bank's private key (mode 0600)")
    u.add_argument("--compound", required=True, type=int, help="the compound (gateway) id it is for")
    u.add_argument("--version", required=True, type=int, help="the new card database version")
    u.add_argument("--base", type=int, help="incremental from this version (absent: a full snapshot)")
    u.add_argument("--from", dest="src", required=True, type=Path, help="cards.json or cards.csv")
    u.add_argument("--out", required=True, type=Path, help="the signed update file to write")
    u.add_argument("--issued", type=int, help=argparse.SUPPRESS)  # fixed time for reproducible files
    args = ap.parse_args(argv)
    try:
        if args.cmd == "keygen":
            pub = args.pub or args.key.with_suffix(".pub")
            keygen(args.key, pub)
            print("%s: wrote %s (private, mode 0600) and %s (public)" % (PROG, args.key, pub))
            return 0
        data = make_update(args.key, args.compound, args.version, args.base, args.src, args.issued)
        _write_update(args.out, data)
        kind = "snapshot" if args.base is None else "incremental from %d" % args.base
        print("%s: wrote %s: version %d, %s, %d bytes" % (PROG, args.out, args.version, kind, len(data)))
        return 0
    except InputError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
