"""Vectors for the reader's config.json rules."""

from __future__ import annotations

import json

from liftcard_protocol.readerconfig import validate_config
from liftcard_protocol.fields import ID_MAX
from .common import BUILDING_ID, KEY, READER_ID


def base_config(**tariff) -> dict:
    """The doc's example config with the vector key; tariff keys overridable."""
    t = {
        "fee_fen": [0, 0, 10, 20, 30, 40, 50],
        "free_classes": ["exempt", "staff"],
        "monthly_cap_fen": 3000,
        "debounce_s": 30,
    }
    t.update(tariff)
    return {
        "reader_id": READER_ID,
        "building_id": BUILDING_ID,
        "floors": len(t["fee_fen"]),
        "ground_floor": 0,
        "key": KEY.hex(),
        "tariff": t,
        "legacy_uid": False,
        "relay_ms": 4000,
        "utc_offset_min": 480,
    }


def with_value(cfg: dict, path: str, value) -> dict:
    out = json.loads(json.dumps(cfg))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


def without_key(cfg: dict, path: str) -> dict:
    out = json.loads(json.dumps(cfg))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[last]
    return out


def gen_config():
    base = base_config()
    defaults = {k: v for k, v in base.items() if k not in ("legacy_uid", "relay_ms", "utc_offset_min")}
    low = base_config(fee_fen=[0, 65535], free_classes=[], monthly_cap_fen=0, debounce_s=0)
    low.update(reader_id=1, building_id=1, ground_floor=1, legacy_uid=True, relay_ms=100, utc_offset_min=-720)
    high = base_config(
        fee_fen=list(range(0, 16 * 4096, 4096)),
        free_classes=list(("resident", "exempt", "staff", "visitor")),
        monthly_cap_fen=10_000_000,
        debounce_s=3600,
    )
    high.update(
        reader_id=ID_MAX,
        building_id=ID_MAX,
        ground_floor=15,
        relay_ms=60000,
        utc_offset_min=840,
        key=KEY.hex().upper(),
    )
    linked = dict(base, uplink={"host": "192.168.4.1", "port": 1883, "password": "s3cret pass~word", "keepalive_s": 60})
    wifi = {"ssid": "Lift Net 7", "password": "wpa2 pass~word"}
    wireless = dict(linked, board="devkit-v1", wifi=wifi)
    static = dict(
        base,
        reader_id=READER_ID + 1,
        board="wrover-v1",
        wifi={
            "ssid": "s" * 32,
            "password": "",
            "address": "10.0.7.21",
            "netmask": "255.255.255.0",
            "gateway": "10.0.7.1",
        },
    )
    # The uplink over TLS: defaults filled (ca.der, the host, port 8883), or all given.
    tls_default = dict(base, reader_id=READER_ID + 2, uplink=dict(linked["uplink"], port=8883, tls={}))
    tls_named = dict(
        base,
        reader_id=READER_ID + 3,
        uplink={"host": "10.0.7.1", "password": "s3cret", "tls": {"ca": "gw-ca_2.der", "server_name": "gw.lift"}},
    )
    valid = [base, defaults, low, high, linked, wireless, static, tls_default, tls_named]
    for v in valid:
        validate_config(v)

    key = KEY.hex()
    bad = [
        ("reader_id", 0),
        ("reader_id", 1 << 30),
        ("reader_id", -1),
        ("reader_id", "1017"),
        ("reader_id", True),
        ("reader_id", 1017.0),
        ("reader_id", None),
        ("building_id", 0),
        ("building_id", 1 << 30),
        ("building_id", "12"),
        ("floors", 1),
        ("floors", 17),
        ("floors", "7"),
        ("ground_floor", -1),
        ("ground_floor", 7),
        ("ground_floor", 0.5),
        ("key", key[:63]),
        ("key", key + "0"),
        ("key", "g" + key[1:]),
        ("key", "+f" * 32),
        ("key", " " + key[1:]),
        ("key", "0x" + key[2:]),
        ("key", 12345),
        ("key", None),
        ("tariff", None),
        ("tariff", [0, 10]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, 50, 60]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, 65536]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, -1]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, 50.0]),
        ("tariff.fee_fen", [0, 0, 10, 20, 30, 40, "50"]),
        ("tariff.fee_fen", 50),
        ("tariff.free_classes", ["vip"]),
        ("tariff.free_classes", ["Exempt"]),
        ("tariff.free_classes", "exempt"),
        ("tariff.free_classes", [1]),
        ("tariff.monthly_cap_fen", -1),
        ("tariff.monthly_cap_fen", 10_000_001),
        ("tariff.monthly_cap_fen", 30.5),
        ("tariff.debounce_s", -1),
        ("tariff.debounce_s", 3601),
        ("tariff.debounce_s", "30"),
        ("legacy_uid", 0),
        ("legacy_uid", "false"),
        ("legacy_uid", None),
        ("relay_ms", 99),
        ("relay_ms", 60001),
        ("relay_ms", "4000"),
        ("utc_offset_min", -721),
        ("utc_offset_min", 841),
        ("utc_offset_min", 480.0),
    ]
    invalid = [{"config": with_value(base, k, v), "key": k} for k, v in bad]
    bad_uplink = [
        ("uplink", "192.168.4.1"),
        ("uplink", None),
        ("uplink.host", ""),
        ("uplink.host", "gate way"),
        ("uplink.host", "h" * 254),
        ("uplink.host", None),
        ("uplink.port", 0),
        ("uplink.port", 65536),
        ("uplink.port", "1883"),
        ("uplink.password", ""),
        ("uplink.password", "p" * 129),
        ("uplink.password", "line\nbreak"),
        ("uplink.password", None),
        ("uplink.keepalive_s", 3),
        ("uplink.keepalive_s", 3601),
        ("uplink.keepalive_s", 60.0),
    ]
    invalid += [{"config": with_value(linked, k, v), "key": k} for k, v in bad_uplink]
    bad_tls = [
        ("uplink.tls", "on"),
        ("uplink.tls", None),
        ("uplink.tls", True),
        ("uplink.tls.ca", ""),
        ("uplink.tls.ca", ".ca.der"),
        ("uplink.tls.ca", "certs/ca.der"),
        ("uplink.tls.ca", "c" * 33),
        ("uplink.tls.ca", "ca der"),
        ("uplink.tls.ca", 1),
        ("uplink.tls.ca", None),
        ("uplink.tls.server_name", ""),
        ("uplink.tls.server_name", "gate way"),
        ("uplink.tls.server_name", "h" * 254),
        ("uplink.tls.server_name", None),
    ]
    invalid += [{"config": with_value(tls_named, k, v), "key": k} for k, v in bad_tls]
    bad_wireless = [
        ("board", "no-such-board"),
        ("board", "DEVKIT-V1"),
        ("board", ""),
        ("board", 1),
        ("wifi", "Lift Net 7"),
        ("wifi", None),
        ("wifi.ssid", ""),
        ("wifi.ssid", "s" * 33),
        ("wifi.ssid", "tab\there"),
        ("wifi.ssid", None),
        ("wifi.password", "short77"),
        ("wifi.password", "p" * 64),
        ("wifi.password", "line\nbreak pass"),
        ("wifi.password", None),
    ]
    invalid += [{"config": with_value(wireless, k, v), "key": k} for k, v in bad_wireless]
    bad_static = [
        ("wifi.address", "10.0.7"),
        ("wifi.address", "10.0.7.256"),
        ("wifi.address", "10.0.7.x"),
        ("wifi.address", "10.0.7.+1"),
        ("wifi.address", 10),
        ("wifi.netmask", "255.255.255.0.0"),
        ("wifi.gateway", ""),
        ("wifi.dns", "dns.example"),
    ]
    invalid += [{"config": with_value(static, k, v), "key": k} for k, v in bad_static]
    # A static address needs all three of address, netmask and gateway.
    static_wifi = {"ssid": "Lift Net 7", "password": "wpa2 pass~word", "address": "10.0.7.21"}
    invalid.append({"config": dict(base, wifi=dict(static_wifi, netmask="255.255.255.0")), "key": "wifi.gateway"})
    invalid.append({"config": dict(base, wifi=dict(static_wifi, gateway="10.0.7.1")), "key": "wifi.netmask"})
    invalid.append({"config": without_key(wireless, "wifi.ssid"), "key": "wifi.ssid"})
    invalid.append({"config": without_key(wireless, "wifi.password"), "key": "wifi.password"})
    for k in (
        "reader_id",
        "building_id",
        "floors",
        "ground_floor",
        "key",
        "tariff",
        "tariff.fee_fen",
        "tariff.free_classes",
        "tariff.monthly_cap_fen",
        "tariff.debounce_s",
    ):
        invalid.append({"config": without_key(base, k), "key": k})
    # ground_floor is checked against this config's own floor count.
    invalid.append({"config": with_value(base_config(fee_fen=[0, 10, 20]), "ground_floor", 3), "key": "ground_floor"})
    return {"valid": valid, "invalid": invalid}
