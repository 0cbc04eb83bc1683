"""Card updates for tests: a fixed test bank key, signed snapshots and
incrementals of card records (liftcard_protocol.cardupdate), a gateway config
with a [cards] section trusting that key, and the whitelist a reader
assembles from WHITELIST chunks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_protocol import cardupdate as cu
from liftcard_protocol import link
from liftcard_protocol.card import CardRecord
from liftcard_protocol.whitelist import parse_whitelist

from .configs import BrokerLogin, write_gateway_config

BANK = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test_cards_db bank key").digest())
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test_cards_db other key").digest())
COMPOUND = 1
READERS = {7: 12, 8: 12, 9: 13}


def card(cid, hh=100, floors=0b100001, status=0, klass=0, until=0xFFFF):
    return CardRecord(cid, hh, floors, status, klass, until)


def snapshot(version, by_building, key=BANK, compound=COMPOUND):
    ops = [cu.CardOp.upsert(b, c) for b, cs in by_building.items() for c in cs]
    return cu.build_update(key, cu.SNAPSHOT, compound, version, 0, ops, 1000)


def incremental(version, base, upserts=(), removes=(), key=BANK, compound=COMPOUND):
    ops = [cu.CardOp.upsert(b, c) for b, c in upserts] + [cu.CardOp.remove(b, cid) for b, cid in removes]
    return cu.build_update(key, cu.INCREMENTAL, compound, version, base, ops, 1000)


def write_cards_config(
    dir: str | os.PathLike,
    *,
    broker_host="127.0.0.1",
    broker_port=1883,
    broker_password="x" * 16,
    keys=None,
    readers=READERS,
    cards_extra="",
    client_id="gw-cards",
    pub=None,
):
    """(dir/gw.toml, reader keys): a gateway config whose [cards] section (last,
    then `cards_extra`) trusts `pub` (default: BANK's public key, in
    dir/bank.pub). Reader keys derive from the reader id unless given."""
    dir = Path(dir)
    keys = keys or {rid: hashlib.sha256(b"reader key %d" % rid).digest() for rid in readers}
    p = write_gateway_config(
        dir,
        BrokerLogin(broker_host, broker_port, broker_password),
        keys,
        readers,
        client_id=client_id,
        compound_id=COMPOUND,
        extra='[cards]\nbank_public_key_file = "bank.pub"\n%s\n' % cards_extra,
    )
    (dir / "bank.pub").write_bytes(
        (pub or BANK.public_key()).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return p, keys


def assemble(msgs, key, rid, bid, held=None):
    """Chunks -> the LCWL file, checked as the reader checks it."""
    assert msgs and all(m.kind == link.WHITELIST for m in msgs)
    total = msgs[0].chunk.total
    buf = bytearray(total)
    pos = 0
    for m in msgs:  # in offset order, one version
        assert m.chunk.offset == pos and m.chunk.total == total and m.chunk.version == msgs[0].chunk.version
        buf[pos : pos + len(m.chunk.data)] = m.chunk.data
        pos += len(m.chunk.data)
    assert pos == total
    return parse_whitelist(key, bytes(buf), rid, bid, held)
