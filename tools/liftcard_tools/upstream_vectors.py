"""Writes tests/vectors/upstream.jsonl: shared test vectors for the gateway <->
ledger formats of docs/upstream.md (BATCH and ACK), from liftcard_protocol.upstream.

    python -m liftcard_tools.upstream_vectors            # (re)write the file
    python -m liftcard_tools.upstream_vectors --check    # exit 1 if it differs from a fresh run

Deterministic: the Ed25519 keys are fixed 32-byte seeds (SHA-256 of a label)
and Ed25519 signatures are deterministic, so the file is the same on every run.
Layout as in vectors.py: a first line {"meta": {...}} (seeds and public keys,
hex), then one line {"group": "batches"|"acks"|"invalid", "case": {...}}.
A valid case has "hex" and the decoded fields (card ids as 16 hex digits,
time_corrected null when absent); an invalid case has "hex", "what"
("batch"/"ack"), "why" and "reason" (UpstreamFormatError.reason).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liftcard_protocol import upstream as uf
from liftcard_protocol.fields import ID_MAX

VECTOR_FILE = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "upstream.jsonl"
GW_SEED = hashlib.sha256(b"liftcard upstream vectors: gateway signing key").digest()
LEDGER_SEED = hashlib.sha256(b"liftcard upstream vectors: ledger signing key").digest()
OTHER_SEED = hashlib.sha256(b"liftcard upstream vectors: a forger's key").digest()
GATEWAY_ID = "gw-0001"


def _key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _pub_hex(k: Ed25519PrivateKey) -> str:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _ride_fields(r: uf.UpRide) -> dict:
    return {
        "seq": r.seq,
        "time": r.time,
        "uptime": r.uptime,
        "card_id": "%016x" % r.card_id,
        "household": r.household,
        "floor": r.floor,
        "fee": r.fee,
        "result": r.result,
        "flags": r.flags,
        "boot": r.boot,
        "time_corrected": r.time_corrected,
    }


def _rides():
    yield "one ride", [uf.UpRide(1, 100, 5, 0x0123456789ABCDEF, 42, 5, 40, 0, 0, 1)]
    yield (
        "extremes and a corrected time",
        [
            uf.UpRide(
                0xFFFFFFFF,
                0xFFFFFFFF,
                0xFFFFFFFF,
                0xFFFFFFFFFFFFFFFF,
                0xFFFFFF,
                0xFF,
                0xFFFF,
                0xFF,
                0xFF,
                0xFFFF,
                0xFFFFFFFF,
            ),
            uf.UpRide(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            uf.UpRide(7, 1000, 3, 0x8000000000000000, 1, 0xFF, 0, 3, 0x01, 2, None),
        ],
    )
    yield (
        "storage order, not seq order",
        [
            uf.UpRide(
                s,
                91_000_000 + s,
                60 + s,
                0x7FFFFFFFFFFFFFFF - s,
                1000 + s,
                1 + s % 6,
                25 * (s % 3),
                0,
                0,
                9,
                None if s % 2 else 90_999_000 + s,
            )
            for s in (5, 3, 4, 9, 8)
        ],
    )


def generate() -> str:
    gk, lk, ok = _key(GW_SEED), _key(LEDGER_SEED), _key(OTHER_SEED)
    lines = [
        {
            "meta": {
                "gateway_id": GATEWAY_ID,
                "gateway_seed": GW_SEED.hex(),
                "gateway_public": _pub_hex(gk),
                "ledger_seed": LEDGER_SEED.hex(),
                "ledger_public": _pub_hex(lk),
                "other_seed": OTHER_SEED.hex(),
                "ride_len": uf.RIDE_LEN,
                "max_rides": uf.MAX_RIDES,
            }
        }
    ]
    valid_batch = None
    for i, (why, rides) in enumerate(_rides()):
        bid = [1, 0x7FFFFFFFFFFFFFFF, 4711][i]
        rid, bld = [(7, 12), (ID_MAX, ID_MAX), (1017, 12)][i]
        data = uf.build_batch(gk, GATEWAY_ID, bid, rid, bld, rides)
        valid_batch = valid_batch or data
        lines.append(
            {
                "group": "batches",
                "case": {
                    "why": why,
                    "hex": data.hex(),
                    "gateway_id": GATEWAY_ID,
                    "batch_id": bid,
                    "reader_id": rid,
                    "building_id": bld,
                    "rides": [_ride_fields(r) for r in rides],
                },
            }
        )
        b = uf.parse_batch(gk.public_key(), data)
        ack = uf.ack_for(lk, b)
        lines.append(
            {
                "group": "acks",
                "case": {
                    "why": "ack of: " + why,
                    "hex": ack.hex(),
                    "gateway_id": GATEWAY_ID,
                    "batch_id": bid,
                    "reader_id": rid,
                    "first_seq": b.first_seq,
                    "last_seq": b.last_seq,
                    "count": len(b.rides),
                },
            }
        )
    ack = bytes.fromhex(lines[2]["case"]["hex"])
    body = valid_batch[: -uf.SIG_LEN]
    one = uf.UpRide(1, 100, 5, 0x0123456789ABCDEF, 42, 5, 40, 0, 0, 1)

    def resign(b: bytes, key=gk) -> str:
        return (b + key.sign(b)).hex()

    def flip(b: bytes, i: int) -> str:
        x = bytearray(b)
        x[i] ^= 0x01
        return x.hex()

    head_len = 6 + len(GATEWAY_ID)
    ride_off = head_len + 18
    bad = [
        ("batch", "signed by another key", resign(body, ok), "signature"),
        ("batch", "one body bit flipped (the fee)", flip(valid_batch, ride_off + 25), "signature"),
        ("batch", "one signature bit flipped", flip(valid_batch, len(valid_batch) - 1), "signature"),
        ("batch", "truncated by one byte", valid_batch[:-1].hex(), "size"),
        ("batch", "one extra byte", (valid_batch + b"\x00").hex(), "size"),
        ("batch", "empty", "", "size"),
        ("batch", "an ACK is not a BATCH", ack.hex(), "magic"),
        ("batch", "version 2", resign(body[:4] + b"\x02" + body[5:]), "version"),
        ("batch", "gateway id with a slash", resign(body[:6] + b"gw/0001" + body[head_len:]), "gateway"),
        ("batch", "count 0", resign(uf._head(uf.BATCH_MAGIC, GATEWAY_ID) + uf._BATCH_HEAD.pack(1, 7, 12, 0)), "field"),
        (
            "batch",
            "reader id 0",
            resign(uf._head(uf.BATCH_MAGIC, GATEWAY_ID) + uf._BATCH_HEAD.pack(1, 0, 12, 1) + one.pack()),
            "field",
        ),
        (
            "batch",
            "batch id 0",
            resign(uf._head(uf.BATCH_MAGIC, GATEWAY_ID) + uf._BATCH_HEAD.pack(0, 7, 12, 1) + one.pack()),
            "field",
        ),
        (
            "batch",
            "a seq twice",
            resign(uf._head(uf.BATCH_MAGIC, GATEWAY_ID) + uf._BATCH_HEAD.pack(1, 7, 12, 2) + one.pack() + one.pack()),
            "field",
        ),
        (
            "batch",
            "time_corrected set without its xflag",
            resign(
                uf._head(uf.BATCH_MAGIC, GATEWAY_ID)
                + uf._BATCH_HEAD.pack(1, 7, 12, 1)
                + one.pack()[:-4]
                + b"\x00\x00\x00\x05"
            ),
            "field",
        ),
        (
            "batch",
            "unknown xflags bit",
            resign(
                uf._head(uf.BATCH_MAGIC, GATEWAY_ID)
                + uf._BATCH_HEAD.pack(1, 7, 12, 1)
                + one.pack()[:-5]
                + b"\x02"
                + one.pack()[-4:]
            ),
            "field",
        ),
        ("ack", "signed by another key", (ack[:-64] + ok.sign(ack[:-64])).hex(), "signature"),
        ("ack", "signed by the gateway's key", (ack[:-64] + gk.sign(ack[:-64])).hex(), "signature"),
        ("ack", "batch id bit flipped", flip(ack, head_len + 7), "signature"),
        ("ack", "a BATCH is not an ACK", valid_batch.hex(), "magic"),
        ("ack", "truncated", ack[:-1].hex(), "size"),
    ]
    for what, why, hx, reason in bad:
        data = bytes.fromhex(hx)
        try:
            if what == "batch":
                uf.parse_batch(gk.public_key(), data)
            else:
                uf.parse_ack(lk.public_key(), data)
        except uf.UpstreamFormatError as e:
            assert e.reason == reason, (why, e.reason, reason)
        else:  # pragma: no cover
            raise AssertionError("invalid vector accepted: " + why)
        lines.append({"group": "invalid", "case": {"what": what, "why": why, "hex": hx, "reason": reason}})
    return "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines)


def load(path: Path = VECTOR_FILE) -> dict:
    out = {"batches": [], "acks": [], "invalid": []}
    with open(path, encoding="utf-8") as f:
        for ln in f:
            o = json.loads(ln)
            if "meta" in o:
                out["meta"] = o["meta"]
            else:
                out[o["group"]].append(o["case"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liftcard_tools.upstream_vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file on disk differs from a fresh run")
    ap.add_argument("--file", type=Path, default=VECTOR_FILE)
    args = ap.parse_args(argv)
    text = generate()
    if args.check:
        if not args.file.exists() or args.file.read_text(encoding="utf-8") != text:
            print(
                "upstream vectors: %s is out of date (run python -m liftcard_tools.upstream_vectors)" % args.file,
                file=sys.stderr,
            )
            return 1
        print("upstream vectors: up to date")
        return 0
    args.file.write_text(text, encoding="utf-8")
    print("upstream vectors: wrote %s" % args.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
