"""liftcard-provision configure: a reader's config.json (docs/formats.md,
"Reader configuration") from a JSON/TOML file and/or options.

The config is checked on the laptop with liftcard_protocol.readerconfig's
validate_config (the rules the firmware applies) before the board is
touched; a refusal is one line naming the key, never its value. On the board
it is written to ``config.new`` and renamed over ``config.json`` (littlefs
renames are atomic: the reader boots the old config or the new one), then
read back and compared.

Secrets (the reader's key, the broker password, the Wi-Fi password) come from
the file or from the environment (``LIFTCARD_READER_KEY``,
``LIFTCARD_BROKER_PASSWORD``, ``LIFTCARD_WIFI_PASSWORD``), never from an
option (a command line is visible to every user of the laptop); they are never
printed or logged.
"""

from __future__ import annotations

import json
import os
import secrets

from liftcard_protocol.errors import ConfigError
from liftcard_protocol.readerconfig import validate_config
from liftcard_protocol.readertls import ca_der

from .boardlink import Board, BoardError

PATH = "config.json"
NEW = "config.new"
SECRET_ENV = {
    ("key",): "LIFTCARD_READER_KEY",
    ("uplink", "password"): "LIFTCARD_BROKER_PASSWORD",
    ("wifi", "password"): "LIFTCARD_WIFI_PASSWORD",
}
FREE_CLASSES = ("resident", "exempt", "staff", "visitor")


def load_file(path: str) -> dict:
    """A JSON or TOML (by extension .toml) config file -> dict; BoardError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BoardError("config file %s: %s" % (path, e.strerror)) from None
    try:
        if path.endswith(".toml"):
            import tomllib

            doc = tomllib.loads(raw.decode("utf-8"))
        else:
            doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        # The parser's message can quote the line (a key): not shown.
        raise BoardError(
            "config file %s is not valid %s" % (path, "TOML" if path.endswith(".toml") else "JSON")
        ) from None
    if not isinstance(doc, dict):
        raise BoardError("config file %s: expected an object (a table) at the top" % path)
    return doc


def _ints(s: str, what: str) -> list[int]:
    try:
        return [int(x, 10) for x in s.split(",")]
    except ValueError:
        raise BoardError("%s: a comma-separated list of integers, got %r" % (what, s)) from None


def gateway_arg(s: str) -> tuple[str, int | None]:
    """HOST or HOST:PORT."""
    host, sep, port = s.rpartition(":")
    if not sep:
        return s, None
    try:
        return host, int(port, 10)
    except ValueError:
        raise BoardError("--gateway: HOST or HOST:PORT, got %r" % s) from None


def build_config(args, env=os.environ) -> dict:
    """The config from --file, the options over it, the secrets from the
    environment; validated and normalised (BoardError with the key's name)."""
    cfg = load_file(args.file) if args.file else {}
    tls_ca = cfg.pop("tls_ca", None)  # the enrolment file's CA (PEM), for uplink.tls
    simple = {
        "reader_id": args.reader_id,
        "building_id": args.building_id,
        "floors": args.floors,
        "ground_floor": args.ground_floor,
        "board": args.board,
    }
    cfg.update({k: v for k, v in simple.items() if v is not None})
    tariff = dict(cfg.get("tariff") or {}) if isinstance(cfg.get("tariff", {}), dict) else cfg["tariff"]
    if isinstance(tariff, dict):
        if args.fees is not None:
            tariff["fee_fen"] = _ints(args.fees, "--fees")
        if args.free_classes is not None:
            tariff["free_classes"] = [c for c in args.free_classes.split(",") if c]
        if args.monthly_cap is not None:
            tariff["monthly_cap_fen"] = args.monthly_cap
        if args.debounce is not None:
            tariff["debounce_s"] = args.debounce
        if tariff:
            cfg["tariff"] = tariff
    if args.wifi_ssid is not None:
        w = cfg.setdefault("wifi", {})
        if isinstance(w, dict):
            w["ssid"] = args.wifi_ssid
    if args.gateway is not None:
        host, port = gateway_arg(args.gateway)
        u = cfg.setdefault("uplink", {})
        if isinstance(u, dict):
            u["host"] = host
            if port is not None:
                u["port"] = port
    for path, var in SECRET_ENV.items():
        v = env.get(var)
        if v is not None:
            _secret_from_env(cfg, path, var, v, args.file)
    if getattr(args, "new_key", False):
        if cfg.get("key") is not None:
            raise BoardError(
                "refused, nothing written to the board: --new-key, but the key is given already "
                "(the file or LIFTCARD_READER_KEY): one or the other"
            )
        # A new reader's key is born here, from the OS CSPRNG, and goes only to
        # the board; register carries it to the gateway from there.
        cfg["key"] = secrets.token_hex(32)
    try:
        out = Config(validate_config(cfg))
        if tls_ca is not None:
            if "tls" not in out.get("uplink", {}):
                raise ConfigError("tls_ca", "config: tls_ca goes with uplink.tls")
            out.ca_der = ca_der(tls_ca, "config: tls_ca")
        return out
    except ConfigError as e:
        hint = ""
        for path, var in SECRET_ENV.items():
            if str(e).startswith("config: %s " % ".".join(path)):
                hint = " (a secret: from the file or %s, never an option)" % var
        raise BoardError("refused, nothing written to the board: %s%s" % (e, hint)) from None


# What each secret is, and the option that gives the object it belongs to.
_SECRET_WHAT = {
    "LIFTCARD_READER_KEY": ("the reader's key", None),
    "LIFTCARD_BROKER_PASSWORD": ("the broker password", "--gateway HOST[:PORT]"),
    "LIFTCARD_WIFI_PASSWORD": ("the Wi-Fi password", "--wifi-ssid SSID"),
}


def _secret_from_env(cfg: dict, path: tuple, var: str, value: str, file: str | None) -> None:
    """Put a secret from the environment into the config. A variable exported
    for an earlier reader must not silently replace what a file (the
    gateway's enrolment file) says, nor conjure up a Wi-Fi or an uplink with
    no address: both are refused, naming the variable, never a value."""
    what, option = _SECRET_WHAT[var]
    obj = cfg
    for k in path[:-1]:
        if obj.get(k) is None:
            raise BoardError(
                "refused, nothing written to the board: %s is set but the config has no %s: pass %s, "
                "or unset %s" % (var, k, option, var)
            )
        obj = obj[k]
    if not isinstance(obj, dict):
        return  # the config's own rules refuse it, by its key
    have = obj.get(path[-1])
    if have is not None and have != value:
        raise BoardError(
            "refused, nothing written to the board: %s is in %s and in %s, and they differ: "
            "unset %s to keep the file's" % (what, file or "the config", var, var)
        )
    obj[path[-1]] = value


class Config(dict):
    """A validated reader config, and the CA certificate (DER) its uplink.tls
    names, when the file gave one: written to the reader beside the config."""

    ca_der: bytes | None = None


def encode(cfg: dict) -> bytes:
    return (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode()


class Refused(BoardError):
    """Refused after reading the board, before writing anything to it."""


def check_owner(board: Board, cfg: dict) -> None:
    """Refuses a config naming another reader, building or key than the one
    the board's unacknowledged rides were logged under: they would reach the
    gateway as the new reader's (docs/technicians.md, "A reader given another
    identity")."""
    from .harvest import HarvestError, survey

    try:
        s = survey(board)
    except HarvestError as e:
        raise Refused("refused, nothing written to the board: %s" % e) from None
    if s.backlog and s.owner is not None and not s.owner.same(cfg):
        raise Refused(
            "refused, nothing written to the board: reader %d still holds %d rides not acknowledged by a "
            "gateway: harvest them first (liftcard-provision harvest --clear, then liftcard-gateway import "
            "the file)" % (s.owner.reader_id, s.backlog)
        )


def _write_ca(board: Board, name: str, der: bytes) -> None:
    new = name + ".new"
    board.write_file(new, der)
    if board.read_file(new) != der:
        board.remove(new)
        raise BoardError("the CA file arrived damaged on %s; the old one is kept: run configure again" % board.port)
    board.rename(new, name)
    if board.read_file(name) != der:
        raise BoardError("%s read back from %s differs from what was written: run configure again" % (name, board.port))


def write(board: Board, cfg: dict) -> None:
    """config.new, renamed over config.json, read back and compared; refused
    first if it would give the board's unacknowledged rides another owner."""
    check_owner(board, cfg)
    der = getattr(cfg, "ca_der", None)
    if der is not None:  # the CA file of uplink.tls first, as the config is written
        _write_ca(board, cfg["uplink"]["tls"]["ca"], der)
    data = encode(cfg)
    board.write_file(NEW, data)
    back = board.read_file(NEW)
    if back != data:
        board.remove(NEW)
        raise BoardError("the config arrived damaged on %s; the old one is kept: run configure again" % board.port)
    board.rename(NEW, PATH)
    back = board.read_file(PATH)
    try:
        same = back is not None and validate_config(json.loads(back)) == cfg
    except (ValueError, ConfigError):
        same = False
    if not same:
        raise BoardError(
            "config.json read back from %s differs from what was written: run configure again" % board.port
        )


def summary(cfg: dict) -> str:
    """What was configured, without a secret."""
    parts = ["reader %d, building %d, %d floors" % (cfg["reader_id"], cfg["building_id"], cfg["floors"])]
    if "uplink" in cfg:
        parts.append("gateway %s:%d" % (cfg["uplink"]["host"], cfg["uplink"]["port"]))
        if "tls" in cfg["uplink"]:
            parts.append("TLS to %s, CA %s" % (cfg["uplink"]["tls"]["server_name"], cfg["uplink"]["tls"]["ca"]))
    if "wifi" in cfg:
        parts.append("Wi-Fi %r" % cfg["wifi"]["ssid"])
    secrets = ["key"] + (["broker password"] if "uplink" in cfg else []) + (["Wi-Fi password"] if "wifi" in cfg else [])
    return "%s (%s written, not shown)" % (", ".join(parts), ", ".join(secrets))
