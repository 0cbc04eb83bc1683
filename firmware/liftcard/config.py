# Reader configuration on flash (docs/formats.md, "Reader configuration").
#
# A new config is validated in full before it replaces the old one by rename, so
# a bad one is refused with a reason naming the key and the reader keeps its
# last good config. Messages never carry the key's value.

import json
import os

from micropython import const

from . import atomic, codes

PATH = "config.json"
_NEW = "config.new"
# The largest config.json accepted (docs/formats.md). A real one is under 1 KB;
# the limit is checked on the file's size before it is read, since reading a
# large file would take the heap the reader needs for its taps.
MAX_BYTES = const(4096)
_INT_LIMIT = const(1 << 30)
_HEX = "0123456789abcdefABCDEF"
_NAME = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


class ConfigError(Exception):
    pass


def _int(obj, key, lo, hi, default=None, within=""):
    v = obj.get(key, default)
    name = within + key
    if v is None:
        raise ConfigError("config: %s is missing" % name)
    if type(v) is not int:
        raise ConfigError("config: %s must be an integer" % name)
    if not lo <= v <= hi:
        raise ConfigError("config: %s must be %d..%d" % (name, lo, hi))
    return v


def validate(obj):
    # Returns the normalised config (defaults filled, key as bytes).
    if type(obj) is not dict:
        raise ConfigError("config: not a JSON object")
    out = {}
    out["reader_id"] = _int(obj, "reader_id", 1, _INT_LIMIT - 1)
    out["building_id"] = _int(obj, "building_id", 1, _INT_LIMIT - 1)
    floors = out["floors"] = _int(obj, "floors", 2, 16)
    out["ground_floor"] = _int(obj, "ground_floor", 0, floors - 1)
    key = obj.get("key")
    # Checked digit by digit: int(x, 16) would also take "+f" or " f".
    if type(key) is not str or len(key) != 64 or any(c not in _HEX for c in key):
        raise ConfigError("config: key must be 64 hex digits")
    out["key"] = bytes(int(key[i : i + 2], 16) for i in range(0, 64, 2))
    if "read_master" in obj:
        # The building's NFC read master key (docs/nfc.md); never echoed.
        rm = obj["read_master"]
        if type(rm) is not str or len(rm) != 32 or any(c not in _HEX for c in rm):
            raise ConfigError("config: read_master must be 32 hex digits")
        out["read_master"] = bytes(int(rm[i : i + 2], 16) for i in range(0, 32, 2))
    t = obj.get("tariff")
    if type(t) is not dict:
        raise ConfigError("config: tariff is missing or not an object")
    fees = t.get("fee_fen")
    if type(fees) is not list or len(fees) != floors:
        raise ConfigError("config: tariff.fee_fen must list one fee per floor")
    for f in fees:
        if type(f) is not int or not 0 <= f <= 65535:
            raise ConfigError("config: tariff.fee_fen entries must be integers 0..65535 fen")
    free = t.get("free_classes")
    if type(free) is not list:
        raise ConfigError("config: tariff.free_classes must be a list (may be empty)")
    for c in free:
        if c not in codes.CLASS_NAMES:
            raise ConfigError("config: tariff.free_classes has an unknown class")
    out["tariff"] = {
        "fee_fen": list(fees),
        "free_classes": list(free),
        "monthly_cap_fen": _int(t, "monthly_cap_fen", 0, 10000000, within="tariff."),
        "debounce_s": _int(t, "debounce_s", 0, 3600, within="tariff."),
    }
    legacy = obj.get("legacy_uid", False)
    if type(legacy) is not bool:
        raise ConfigError("config: legacy_uid must be true or false")
    out["legacy_uid"] = legacy
    out["relay_ms"] = _int(obj, "relay_ms", 100, 60000, 4000)
    out["utc_offset_min"] = _int(obj, "utc_offset_min", -720, 840, 480)
    if "uplink" in obj:
        out["uplink"] = _uplink(obj["uplink"])
    if "board" in obj:
        # The board profile (profiles.py, docs/board.md); absent: devkit-v1.
        from .profiles import NAMES

        if obj["board"] not in NAMES:
            raise ConfigError("config: board must be one of %s" % ", ".join(NAMES))
        out["board"] = obj["board"]
    if "wifi" in obj:
        out["wifi"] = _wifi(obj["wifi"])
    return out


def _printable(s, lo, hi):
    return type(s) is str and lo <= len(s) <= hi and not any(c < " " or c > "~" for c in s)


def _ipv4(w, key):
    v = w.get(key)
    parts = v.split(".") if type(v) is str else ()
    if len(parts) != 4 or any(not p.isdigit() or len(p) > 3 or int(p) > 255 for p in parts):
        raise ConfigError("config: wifi.%s must be an IPv4 address (a.b.c.d)" % key)
    return v


def _wifi(w):
    # Optional: the Wi-Fi station (docs/board.md). The password is a secret:
    # never echoed, not even its length.
    if type(w) is not dict:
        raise ConfigError("config: wifi must be an object")
    if not _printable(w.get("ssid"), 1, 32):
        raise ConfigError("config: wifi.ssid must be 1..32 printable ASCII characters")
    pw = w.get("password")
    if not _printable(pw, 0, 63) or 0 < len(pw) < 8:
        raise ConfigError("config: wifi.password must be empty (open network) or 8..63 printable ASCII characters")
    out = {"ssid": w["ssid"], "password": pw}
    if "address" in w or "netmask" in w or "gateway" in w or "dns" in w:
        # A static address: all of address, netmask and gateway; dns defaults to the gateway.
        for k in ("address", "netmask", "gateway"):
            out[k] = _ipv4(w, k)
        out["dns"] = _ipv4(w, "dns") if "dns" in w else out["gateway"]
    return out


def _uplink(u):
    # Optional: the reader's MQTT link to its gateway (docs/uplink.md,
    # "Reader side"). Absent: an offline reader. The password is never echoed.
    if type(u) is not dict:
        raise ConfigError("config: uplink must be an object")
    host = u.get("host")
    if type(host) is not str or not 1 <= len(host) <= 253 or any(c <= " " or c > "~" for c in host):
        raise ConfigError("config: uplink.host must be a host name or IP address (1..253 printable characters)")
    pw = u.get("password")
    if type(pw) is not str or not 1 <= len(pw) <= 128 or any(c < " " or c > "~" for c in pw):
        raise ConfigError("config: uplink.password must be 1..128 printable ASCII characters")
    out = {"host": host, "password": pw}
    if "tls" in u:
        out["tls"] = _tls(u["tls"], host)
    out["port"] = _int(u, "port", 1, 65535, 8883 if "tls" in out else 1883, within="uplink.")
    out["keepalive_s"] = _int(u, "keepalive_s", 4, 3600, 60, within="uplink.")
    return out


def _tls(t, host):
    # Optional: the uplink over TLS (docs/uplink.md, "TLS on the local link").
    # The CA certificate is a DER file on flash, not PEM in this file: the
    # config stays small, and this MicroPython's mbedTLS takes DER only.
    if type(t) is not dict:
        raise ConfigError("config: uplink.tls must be an object")
    ca = t.get("ca", "ca.der")
    if type(ca) is not str or not 1 <= len(ca) <= 32 or ca[0] == "." or any(c not in _NAME for c in ca):
        raise ConfigError(
            "config: uplink.tls.ca must be a file name on the reader's flash"
            " (1..32 of A-Z a-z 0-9 . _ -, not starting with a dot)"
        )
    name = t.get("server_name", host)
    if type(name) is not str or not 1 <= len(name) <= 253 or any(c <= " " or c > "~" for c in name):
        raise ConfigError(
            "config: uplink.tls.server_name must be a host name or IP address (1..253 printable characters)"
        )
    return {"ca": ca, "server_name": name}


def parse(text):
    try:
        obj = json.loads(text)
    except ValueError:
        raise ConfigError("config: not valid JSON")
    return validate(obj)


def _read(path, missing):
    try:
        n = os.stat(path)[6]
        if n <= MAX_BYTES:
            with open(path) as f:
                return f.read()
    except OSError:
        raise ConfigError(missing % path)
    raise ConfigError("config: %s is %d bytes, more than the %d a config may be" % (path, n, MAX_BYTES))


def load(path=PATH):
    return parse(_read(path, "config: no %s on flash"))


def install(src, check=None):
    # Validates the config at `src` (any path) and makes it current. check:
    # the caller's own refusal (ConfigError), before anything is written.
    text = _read(src, "config: cannot read %s")
    cfg = parse(text)
    if check is not None:
        check(cfg)
    atomic.write(PATH, _NEW, text)
    return cfg


def board_name(path=PATH):
    # The config's "board" before the reader loads the config in full (main.py
    # needs the pins first); None: no config or no profile named, the default.
    try:
        with open(path) as f:
            b = json.load(f).get("board")
    except (OSError, ValueError, AttributeError):
        return None
    return b if type(b) is str else None
