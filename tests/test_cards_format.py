"""The bank's signed card update (LCCU, docs/cards.md): codec, shared vectors, hypothesis."""

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftcard_protocol import cardupdate as cu
from liftcard_protocol.card import CardRecord
from liftcard_protocol import keys
from liftcard_tools import card_vectors

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test_cards_format bank key").digest())
PUB = KEY.public_key()
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test_cards_format other key").digest())
VEC = card_vectors.load()


# -- shared vectors ----------------------------------------------------------------


def test_vectors_file_is_current():
    assert card_vectors.main(["--check"]) == 0


def test_vector_public_key_matches_seed():
    k = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VEC["seed_hex_test_only"]))
    assert keys.public_key_bytes(k.public_key()).hex() == VEC["public_key"]


@pytest.mark.parametrize("case", VEC["valid"], ids=lambda c: c["why"][:40])
def test_vector_valid(case):
    pub = bytes.fromhex(VEC["public_key"])
    u = cu.parse_update(pub, bytes.fromhex(case["hex"]))
    assert (u.kind_name, u.compound_id, u.version, u.base_version, u.issued) == (
        case["kind"],
        case["compound_id"],
        case["version"],
        case["base_version"],
        case["issued"],
    )
    assert [card_vectors.op_fields(o) for o in u.ops] == case["ops"]
    # the encoder gives the very same bytes (Ed25519 is deterministic)
    k = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VEC["seed_hex_test_only"]))
    again = cu.build_update(
        k,
        cu.SNAPSHOT if case["kind"] == "snapshot" else cu.INCREMENTAL,
        case["compound_id"],
        case["version"],
        case["base_version"],
        [card_vectors.op_from_fields(o) for o in case["ops"]],
        case["issued"],
    )
    assert again.hex() == case["hex"]


@pytest.mark.parametrize("case", VEC["invalid"], ids=lambda c: c["why"][:40])
def test_vector_invalid(case):
    with pytest.raises(cu.UpdateError) as ei:
        cu.parse_update(bytes.fromhex(VEC["public_key"]), bytes.fromhex(case["hex"]))
    assert ei.value.reason == case["reason"]
    assert "\n" not in str(ei.value)


def test_layout_byte_exact():
    rec = CardRecord(0x0102030405060708, 0x0A0B0C, 0x0021, 1, 2, 0x1234)
    data = cu.build_update(KEY, cu.INCREMENTAL, 7, 9, 8, [cu.CardOp.upsert(12, rec), cu.CardOp.remove(13, 5)], 77)
    assert len(data) == 28 + 2 * 21 + 64
    assert data[:28] == (
        b"LCCU"
        + bytes([1, 2, 0, 0])
        + (7).to_bytes(4, "big")
        + (9).to_bytes(4, "big")
        + (8).to_bytes(4, "big")
        + (77).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
    )
    assert data[28:49] == b"\x01" + (12).to_bytes(4, "big") + rec.pack()
    assert data[49:70] == b"\x02" + (13).to_bytes(4, "big") + (5).to_bytes(8, "big") + bytes(8)
    PUB.verify(data[70:], data[:70])  # the signature covers everything before it


def test_builder_refuses_what_the_parser_refuses():
    rec = CardRecord(1, 1, 1)
    with pytest.raises(cu.UpdateError):
        cu.build_update(KEY, cu.SNAPSHOT, 1, 1, 0, [cu.CardOp.remove(12, 1)])  # remove in a snapshot
    with pytest.raises(cu.UpdateError):
        cu.build_update(KEY, cu.SNAPSHOT, 1, 1, 0, [cu.CardOp.upsert(12, rec), cu.CardOp.upsert(12, rec)])
    with pytest.raises(cu.UpdateError):
        cu.build_update(KEY, cu.INCREMENTAL, 1, 3, 3, [])
    with pytest.raises(cu.UpdateError):
        cu.build_update(KEY, cu.SNAPSHOT, 0, 1, 0, [])


def test_errors_and_reprs_carry_no_card_id():
    cid = 0x0BADC0FFEE123456
    ops = [cu.CardOp.upsert(12, CardRecord(cid, 5, 3)), cu.CardOp.remove(12, cid + 1)]
    data = bytearray(cu.encode_unsigned(cu.INCREMENTAL, 1, 2, 1, 0, ops))
    data[28 + 5 + 13] = 0x50  # invalid status in the first record
    with pytest.raises(cu.UpdateError) as ei:
        cu.parse_update(PUB, cu.sign(KEY, bytes(data)))
    u = cu.parse_update(PUB, cu.build_update(KEY, cu.INCREMENTAL, 1, 2, 1, ops))
    text = str(ei.value) + repr(u) + repr(u.ops)
    assert "%x" % cid not in text.lower() and str(cid) not in text


def test_public_and_private_key_files(tmp_path):
    pem = PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = keys.public_key_bytes(PUB)
    assert keys.public_key_bytes(keys.parse_public_key(pem)) == raw
    assert keys.public_key_bytes(keys.parse_public_key(raw.hex().encode() + b"\n")) == raw
    for bad in (
        b"",
        b"zz" * 32,
        raw.hex()[:-2].encode(),
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ):
        with pytest.raises(ValueError):
            keys.parse_public_key(bad)
    seed = KEY.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    with pytest.raises(ValueError) as ei:
        keys.parse_private_key(seed.hex()[:-1].encode())
    assert seed.hex()[:20] not in str(ei.value)
    k2 = keys.parse_private_key(seed.hex().encode())
    assert keys.public_key_bytes(k2.public_key()) == raw


# -- hypothesis --------------------------------------------------------------------

cards = st.builds(
    CardRecord,
    card_id=st.integers(0, 2**64 - 1),
    household=st.integers(0, 2**24 - 1),
    floors=st.integers(0, 0xFFFF),
    status=st.integers(0, 3),
    klass=st.integers(0, 3),
    valid_until=st.integers(0, 0xFFFF),
)
buildings = st.integers(1, 2**30 - 1)


@st.composite
def updates(draw):
    kind = draw(st.sampled_from([cu.SNAPSHOT, cu.INCREMENTAL]))
    version = draw(st.integers(1, 2**32 - 1))
    base = 0 if kind == cu.SNAPSHOT else draw(st.integers(0, version - 1))
    n = draw(st.integers(0, 12))
    ops = {}
    for _ in range(n):
        b = draw(st.sampled_from([12, 13, draw(buildings)]))
        c = draw(cards)
        if kind == cu.INCREMENTAL and draw(st.booleans()):
            ops[(b, c.card_id)] = cu.CardOp.remove(b, c.card_id)
        else:
            ops[(b, c.card_id)] = cu.CardOp.upsert(b, c)
    return kind, draw(st.integers(1, 2**30 - 1)), version, base, list(ops.values()), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(updates())
def test_round_trip(u):
    kind, compound, version, base, ops, issued = u
    data = cu.build_update(KEY, kind, compound, version, base, ops, issued)
    assert len(data) == cu.HEADER_LEN + cu.OP_LEN * len(ops) + cu.SIG_LEN
    p = cu.parse_update(PUB, data)
    assert (p.kind, p.compound_id, p.version, p.base_version, p.issued) == (kind, compound, version, base, issued)
    assert list(p.ops) == sorted(ops, key=cu.CardOp.key)
    with pytest.raises(cu.UpdateError) as ei:
        cu.parse_update(OTHER.public_key(), data)
    assert ei.value.reason == "forged"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(updates(), st.data())
def test_every_single_byte_corruption_is_refused(u, data):
    kind, compound, version, base, ops, issued = u
    good = cu.build_update(KEY, kind, compound, version, base, ops, issued)
    i = data.draw(st.integers(0, len(good) - 1))
    mask = data.draw(st.integers(1, 255))
    bad = bytearray(good)
    bad[i] ^= mask
    with pytest.raises(cu.UpdateError) as ei:
        cu.parse_update(PUB, bytes(bad))
    assert ei.value.reason in ("forged", "malformed")
    # truncation and extension too
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(cu.UpdateError):
        cu.parse_update(PUB, good[:cut])
    with pytest.raises(cu.UpdateError):
        cu.parse_update(PUB, good + bytes([mask]))


def test_every_byte_of_one_update_exhaustively():
    ops = [cu.CardOp.upsert(12, CardRecord(3, 4, 5)), cu.CardOp.remove(12, 9)]
    good = cu.build_update(KEY, cu.INCREMENTAL, 2, 6, 5, ops, 1)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x80
        with pytest.raises(cu.UpdateError):
            cu.parse_update(PUB, bytes(bad))
