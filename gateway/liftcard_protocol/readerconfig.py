"""The reader configuration (config.json): its rules, defaults and
normalisation (docs/formats.md, "Reader configuration"); the firmware applies
the same rules in firmware/liftcard/config.py."""

from __future__ import annotations

from typing import Mapping

from .codes import CLASS_NAMES
from .errors import ConfigError
from .fields import ID_MAX, KEY_LEN, U16, is_int


_HEX = frozenset("0123456789abcdefABCDEF")
# The board profiles the firmware knows (firmware/liftcard/profiles.py, docs/board.md).
BOARD_PROFILES = ("devkit-v1", "devkit-v1-i2c", "wrover-v1")
CONFIG_DEFAULTS = {"legacy_uid": False, "relay_ms": 4000, "utc_offset_min": 480}
# The uplink over TLS (docs/uplink.md, "TLS on the local link"): its default
# port, and the CA certificate's default file name on the reader's flash.
TLS_PORT = 8883
DEFAULT_CA_FILE = "ca.der"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _cfg_int(obj: Mapping, key: str, lo: int, hi: int, path: str | None = None, default=None) -> int:
    name = path or key
    if key not in obj:
        if default is None:
            raise ConfigError(name, "config: %s is missing" % name)
        return default
    v = obj[key]
    if not is_int(v):
        raise ConfigError(name, "config: %s must be an integer" % name)
    if not lo <= v <= hi:
        raise ConfigError(name, "config: %s must be %d..%d" % (name, lo, hi))
    return v


def validate_config(obj: Mapping) -> dict:
    """Checks a reader config against the rules table in docs/formats.md and
    returns it normalised: defaults filled in (legacy_uid false, relay_ms 4000,
    utc_offset_min 480), the key in lowercase hex, free_classes deduplicated in
    class order, unknown keys dropped. The doc gives no defaults for the tariff
    keys, so all four are required. Validating a normalised config returns it
    unchanged. A refusal raises ConfigError naming the key, never its value."""
    if not isinstance(obj, Mapping):
        raise ConfigError("", "config: not a JSON object")
    out = {}
    out["reader_id"] = _cfg_int(obj, "reader_id", 1, ID_MAX)
    out["building_id"] = _cfg_int(obj, "building_id", 1, ID_MAX)
    floors = out["floors"] = _cfg_int(obj, "floors", 2, 16)
    out["ground_floor"] = _cfg_int(obj, "ground_floor", 0, floors - 1)
    if "key" not in obj:
        raise ConfigError("key", "config: key is missing")
    key = obj["key"]
    # Checked by character, not int(x, 16), which would also take "+f", " f" or "0x".
    if not isinstance(key, str) or len(key) != 2 * KEY_LEN or not set(key) <= _HEX:
        raise ConfigError("key", "config: key must be exactly 64 hex digits")
    out["key"] = key.lower()

    t = obj.get("tariff")
    if t is None:
        raise ConfigError("tariff", "config: tariff is missing")
    if not isinstance(t, Mapping):
        raise ConfigError("tariff", "config: tariff must be an object")
    if "fee_fen" not in t:
        raise ConfigError("tariff.fee_fen", "config: tariff.fee_fen is missing")
    fees = t["fee_fen"]
    if not isinstance(fees, list) or len(fees) != floors:
        raise ConfigError("tariff.fee_fen", "config: tariff.fee_fen must list one fee per floor (%d)" % floors)
    for f in fees:
        if not is_int(f) or not 0 <= f <= U16:
            raise ConfigError("tariff.fee_fen", "config: tariff.fee_fen entries must be integers 0..65535 fen")
    if "free_classes" not in t:
        raise ConfigError("tariff.free_classes", "config: tariff.free_classes is missing")
    free = t["free_classes"]
    if not isinstance(free, list):
        raise ConfigError("tariff.free_classes", "config: tariff.free_classes must be a list")
    for c in free:
        if c not in CLASS_NAMES:
            raise ConfigError(
                "tariff.free_classes", "config: tariff.free_classes may hold only %s" % ", ".join(CLASS_NAMES)
            )
    out["tariff"] = {
        "fee_fen": list(fees),
        "free_classes": [c for c in CLASS_NAMES if c in free],
        "monthly_cap_fen": _cfg_int(t, "monthly_cap_fen", 0, 10_000_000, "tariff.monthly_cap_fen"),
        "debounce_s": _cfg_int(t, "debounce_s", 0, 3600, "tariff.debounce_s"),
    }
    legacy = obj.get("legacy_uid", CONFIG_DEFAULTS["legacy_uid"])
    if type(legacy) is not bool:
        raise ConfigError("legacy_uid", "config: legacy_uid must be true or false")
    out["legacy_uid"] = legacy
    out["relay_ms"] = _cfg_int(obj, "relay_ms", 100, 60000, default=CONFIG_DEFAULTS["relay_ms"])
    out["utc_offset_min"] = _cfg_int(obj, "utc_offset_min", -720, 840, default=CONFIG_DEFAULTS["utc_offset_min"])
    if "uplink" in obj:
        out["uplink"] = _validate_uplink(obj["uplink"])
    if "board" in obj:
        if not isinstance(obj["board"], str) or obj["board"] not in BOARD_PROFILES:
            raise ConfigError("board", "config: board must be one of %s" % ", ".join(BOARD_PROFILES))
        out["board"] = obj["board"]
    if "wifi" in obj:
        out["wifi"] = _validate_wifi(obj["wifi"])
    return out


def _printable(s, lo: int, hi: int, space: bool) -> bool:
    first = " " if space else "!"
    return isinstance(s, str) and lo <= len(s) <= hi and all(first <= c <= "~" for c in s)


def _validate_uplink(u) -> dict:
    """The optional MQTT link of a reader (docs/uplink.md, "Reader side");
    the same rules as firmware/liftcard/config.py. The password is never echoed."""
    if not isinstance(u, Mapping):
        raise ConfigError("uplink", "config: uplink must be an object")
    if not _printable(u.get("host"), 1, 253, space=False):
        raise ConfigError(
            "uplink.host", "config: uplink.host must be a host name or IP address (1..253 printable characters)"
        )
    if not _printable(u.get("password"), 1, 128, space=True):
        raise ConfigError("uplink.password", "config: uplink.password must be 1..128 printable ASCII characters")
    out = {"host": u["host"]}
    if "tls" in u:
        out["tls"] = _validate_tls(u["tls"], u["host"])
    out["port"] = _cfg_int(u, "port", 1, 65535, "uplink.port", default=TLS_PORT if "tls" in out else 1883)
    out["password"] = u["password"]
    out["keepalive_s"] = _cfg_int(u, "keepalive_s", 4, 3600, "uplink.keepalive_s", default=60)
    return out


def is_flash_name(name) -> bool:
    """A plain file name on the reader's flash: 1..32 of A-Z a-z 0-9 . _ -,
    not starting with a dot."""
    return isinstance(name, str) and 1 <= len(name) <= 32 and name[0] != "." and all(c in _NAME_CHARS for c in name)


def _validate_tls(t, host: str) -> dict:
    """The optional TLS of the uplink (docs/uplink.md, "TLS on the local
    link"): the CA file on the reader's flash (DER, default ca.der) and the
    name the broker's certificate must carry (default: the host)."""
    if not isinstance(t, Mapping):
        raise ConfigError("uplink.tls", "config: uplink.tls must be an object")
    ca = t.get("ca", DEFAULT_CA_FILE)
    if not is_flash_name(ca):
        raise ConfigError(
            "uplink.tls.ca",
            "config: uplink.tls.ca must be a file name on the reader's flash "
            "(1..32 of A-Z a-z 0-9 . _ -, not starting with a dot)",
        )
    name = t.get("server_name", host)
    if not _printable(name, 1, 253, space=False):
        raise ConfigError(
            "uplink.tls.server_name",
            "config: uplink.tls.server_name must be a host name or IP address (1..253 printable characters)",
        )
    return {"ca": ca, "server_name": name}


def _ipv4(w: Mapping, key: str) -> str:
    v = w.get(key)
    parts = v.split(".") if isinstance(v, str) else []
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        raise ConfigError("wifi." + key, "config: wifi.%s must be an IPv4 address (a.b.c.d)" % key)
    return v


def _validate_wifi(w) -> dict:
    """The optional Wi-Fi station of a reader (docs/board.md); the same rules
    as firmware/liftcard/config.py. The password is never echoed."""
    if not isinstance(w, Mapping):
        raise ConfigError("wifi", "config: wifi must be an object")
    if not _printable(w.get("ssid"), 1, 32, space=True):
        raise ConfigError("wifi.ssid", "config: wifi.ssid must be 1..32 printable ASCII characters")
    pw = w.get("password")
    if not _printable(pw, 0, 63, space=True) or 0 < len(pw) < 8:
        raise ConfigError(
            "wifi.password",
            "config: wifi.password must be empty (open network) or 8..63 printable ASCII characters",
        )
    out = {"ssid": w["ssid"], "password": pw}
    if any(k in w for k in ("address", "netmask", "gateway", "dns")):
        for k in ("address", "netmask", "gateway"):
            out[k] = _ipv4(w, k)
        out["dns"] = _ipv4(w, "dns") if "dns" in w else out["gateway"]
    return out


def config_key(cfg: Mapping) -> bytes:
    """The 32-byte reader key of a validated config."""
    return bytes.fromhex(cfg["key"])


def free_class_mask(cfg: Mapping) -> int:
    """Bit n set when class n rides free (validated config)."""
    mask = 0
    for name in cfg["tariff"]["free_classes"]:
        mask |= 1 << CLASS_NAMES.index(name)
    return mask
