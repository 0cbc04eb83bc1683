"""The reader enrolment file: what a gateway and a technician hand each other
so that a reader can join a gateway (docs/formats.md, "Reader enrolment file").

It is a fragment of the reader configuration (docs/formats.md, "Reader
configuration"): the reader's ids, its key and its uplink to the gateway's
broker, with the broker username spelled out. The gateway writes one for the
technician (`liftcard-gateway readers add`), or reads one the technician made
(`liftcard-gateway readers add --from`). Both hold secrets: files are 0600 and
no error names a value, only the key that is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from .errors import ConfigError
from .fields import ID_MAX, KEY_LEN, is_int
from .readerconfig import _validate_uplink
from .readertls import ca_der, ca_pem
from .topics import reader_user

_HEX = frozenset("0123456789abcdefABCDEF")
_MAX_TEXT = 65536


@dataclass(frozen=True)
class Enrolment:
    """A validated enrolment. `uplink` is normalised as in the reader config
    (port and keepalive_s defaults filled in) plus `username`. repr() never
    shows the key or the password."""

    reader_id: int
    building_id: int
    key: bytes = field(repr=False)
    uplink: dict = field(repr=False)
    tls_ca: bytes | None = field(default=None, repr=False)  # the CA certificate (DER) for uplink.tls

    @property
    def username(self) -> str:
        return self.uplink["username"]

    @property
    def password(self) -> str:
        return self.uplink["password"]

    def doc(self) -> dict:
        """The JSON object of this enrolment (what parse_enrolment reads back)."""
        d = {
            "reader_id": self.reader_id,
            "building_id": self.building_id,
            "key": self.key.hex(),
            "uplink": dict(self.uplink),
        }
        if self.tls_ca is not None:
            d["tls_ca"] = ca_pem(self.tls_ca)
        return d


def _id(obj: Mapping, name: str) -> int:
    if name not in obj:
        raise ConfigError(name, "enrolment: %s is missing" % name)
    v = obj[name]
    if not is_int(v) or not 1 <= v <= ID_MAX:
        raise ConfigError(name, "enrolment: %s must be an integer 1..%d" % (name, ID_MAX))
    return v


def _prefix(e: ConfigError) -> ConfigError:
    # readerconfig says "config: ..."; an operator reading it should know which file.
    msg = str(e)
    if msg.startswith("config: "):
        msg = "enrolment: " + msg[len("config: ") :]
    return ConfigError(e.key, msg)


def parse_enrolment(obj) -> Enrolment:
    """Check an enrolment object (decoded JSON). Unknown top-level keys are
    refused (a whole reader config is not an enrolment); inside `uplink` the
    keys the reader config allows are checked by its rules, `username` must be
    ``reader-<reader_id>``, and keys the reader config does not know are
    dropped, as the reader drops them. ConfigError names the key, never the value."""
    if not isinstance(obj, Mapping):
        raise ConfigError("", "enrolment: not a JSON object")
    extra = sorted(k for k in obj if k not in ("reader_id", "building_id", "key", "uplink", "tls_ca"))
    if extra:
        raise ConfigError(str(extra[0]), "enrolment: unknown key %s" % str(extra[0])[:40])
    reader_id = _id(obj, "reader_id")
    building_id = _id(obj, "building_id")
    if "key" not in obj:
        raise ConfigError("key", "enrolment: key is missing")
    key = obj["key"]
    # Checked by character, not int(x, 16), which would also take "+f", " f" or "0x".
    if not isinstance(key, str) or len(key) != 2 * KEY_LEN or not set(key) <= _HEX:
        raise ConfigError("key", "enrolment: key must be exactly 64 hex digits")
    if "uplink" not in obj:
        raise ConfigError("uplink", "enrolment: uplink is missing")
    up = obj["uplink"]
    try:
        uplink = _validate_uplink(up)
    except ConfigError as e:
        raise _prefix(e) from None
    if "username" not in up:
        raise ConfigError("uplink.username", "enrolment: uplink.username is missing")
    if up["username"] != reader_user(reader_id):
        raise ConfigError("uplink.username", "enrolment: uplink.username must be reader-<reader_id>")
    uplink["username"] = up["username"]
    tls_ca = None
    if "tls_ca" in obj:
        # The CA the reader's uplink.tls checks the broker with (PEM);
        # configure writes it to the reader's flash as DER.
        if "tls" not in uplink:
            raise ConfigError("tls_ca", "enrolment: tls_ca goes with uplink.tls")
        try:
            tls_ca = ca_der(obj["tls_ca"])
        except ConfigError as e:
            raise ConfigError("tls_ca", "enrolment: %s" % e) from None
    return Enrolment(reader_id, building_id, bytes.fromhex(key), uplink, tls_ca)


def enrolment_doc(
    reader_id: int,
    building_id: int,
    key: bytes,
    host: str,
    password: str,
    port: int | None = None,
    tls_ca: bytes | None = None,
    **uplink_extra,
) -> dict:
    """The enrolment object for a reader, checked by parse_enrolment (so a bad
    host or password is refused here, naming the key). `uplink_extra` carries
    the other uplink keys the reader config allows (keepalive_s, tls);
    `tls_ca` the CA certificate (DER) that goes with uplink.tls."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise ConfigError("key", "enrolment: key must be %d bytes" % KEY_LEN)
    uplink = {"host": host, "username": None, "password": password}
    if port is not None:  # otherwise the reader config's default: 1883, 8883 with tls
        uplink["port"] = port
    uplink.update(uplink_extra)
    if is_int(reader_id) and 1 <= reader_id <= ID_MAX:
        uplink["username"] = reader_user(reader_id)
    doc = {"reader_id": reader_id, "building_id": building_id, "key": bytes(key).hex(), "uplink": uplink}
    if tls_ca is not None:
        doc["tls_ca"] = ca_pem(tls_ca)
    return parse_enrolment(doc).doc()


def loads_enrolment(text: str | bytes) -> Enrolment:
    """An enrolment from the text of a file: JSON, then parse_enrolment."""
    if len(text) > _MAX_TEXT:
        raise ConfigError("", "enrolment: file too large")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError("", "enrolment: not valid JSON") from None
    return parse_enrolment(obj)


def dumps_enrolment(enr: Enrolment) -> bytes:
    """The file text of an enrolment (JSON, sorted keys, newline-terminated)."""
    return (json.dumps(enr.doc(), indent=2, sort_keys=True) + "\n").encode()
