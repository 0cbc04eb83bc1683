"""Every MQTT topic name, built and parsed here and nowhere else.

The local link (docs/broker.md):

    lc/<building_id>/reader-<reader_id>/up      reader -> gateway: ride batches, SUN counters
    lc/<building_id>/reader-<reader_id>/status  reader -> gateway: heartbeat, Last Will
    lc/<building_id>/reader-<reader_id>/down    gateway -> reader: acks, whitelists, time

The upstream to the bank (docs/upstream.md):

    liftcard/gw/<gateway_id>/batches            gateway -> ledger
    liftcard/gw/<gateway_id>/acks               ledger -> gateway
    liftcard/gw/<gateway_id>/cards              bank -> gateway
"""

from __future__ import annotations

import re

from .fields import ID_MAX

LOCAL_ROOT = "lc"
LOCAL_ALL = LOCAL_ROOT + "/#"
READER_LEAVES = ("up", "status", "down")
_READER_RE = re.compile(r"^lc/([0-9]{1,10})/reader-([0-9]{1,10})/(up|status|down)$")

UPSTREAM_ROOT = "liftcard/gw"
UPSTREAM_LEAVES = ("batches", "acks", "cards")
GATEWAY_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_UPSTREAM_RE = re.compile(r"^liftcard/gw/([A-Za-z0-9_\-]{1,64})/(batches|acks|cards)$")


def check_id(name: str, value) -> int:
    """value, if it is a reader or building id (1 .. 2^30-1); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ID_MAX:
        raise ValueError(f"{name} must be an integer 1 .. {ID_MAX}, got {value!r}")
    return value


def reader_user(reader_id: int) -> str:
    """The MQTT username (and client id) of a reader: ``reader-<reader_id>``."""
    return f"reader-{check_id('reader_id', reader_id)}"


def reader_topics(building_id: int, reader_id: int) -> dict[str, str]:
    """The three topics of one reader: keys ``up``, ``status``, ``down``."""
    base = f"{LOCAL_ROOT}/{check_id('building_id', building_id)}/{reader_user(reader_id)}"
    return {leaf: f"{base}/{leaf}" for leaf in READER_LEAVES}


def parse_reader_topic(topic: str) -> tuple[int, int, str] | None:
    """(building_id, reader_id, leaf) of a reader topic; None for anything else."""
    m = _READER_RE.match(topic)
    if m is None:
        return None
    building_id, reader_id = int(m.group(1)), int(m.group(2))
    if not (1 <= building_id <= ID_MAX and 1 <= reader_id <= ID_MAX):
        return None
    return building_id, reader_id, m.group(3)


def upstream_topics(gateway_id: str) -> dict[str, str]:
    """The three upstream topics of one gateway: keys ``batches``, ``acks``, ``cards``."""
    if not GATEWAY_ID_RE.fullmatch(gateway_id or ""):
        raise ValueError("bad gateway id")
    return {leaf: f"{UPSTREAM_ROOT}/{gateway_id}/{leaf}" for leaf in UPSTREAM_LEAVES}


def upstream_all(leaf: str) -> str:
    """The wildcard subscription for one leaf of every gateway: liftcard/gw/+/<leaf>."""
    if leaf not in UPSTREAM_LEAVES:
        raise ValueError("unknown upstream topic %r" % leaf)
    return f"{UPSTREAM_ROOT}/+/{leaf}"


def parse_upstream_topic(topic: str) -> tuple[str, str] | None:
    """(gateway_id, leaf) of an upstream topic; None for anything else."""
    m = _UPSTREAM_RE.match(topic)
    return (m.group(1), m.group(2)) if m else None
