"""Writes the shared test vectors (tests/vectors/*.jsonl) from the CPython codecs.

    liftcard-vectors            # (re)write the files
    liftcard-vectors --check    # exit 1 if the committed files differ from a fresh run

One module per format (common.py holds the shared keys, ids and the
deterministic random source); this module writes and reads the files.

Both the CPython tests and the firmware tests read these files, so the two
implementations of docs/formats.md cannot drift apart. The output is fully
deterministic: fixed keys, and "random" card lists drawn from SHA-256 in counter
mode (the same on every Python version and platform), never from `random`.

Each file is JSON Lines, so the firmware tests can read one case at a time in
a 192K heap: a list is one item per line; an object is a first line
{"meta": {...}} with its scalar and object fields, then one line
{"group": <field>, "case": {...}} per item of each of its list fields.
load() gives back the original object.

Conventions in every file: byte strings are lowercase hex; a card id in JSON is
16 hex digits; card fields are {"card_id", "household", "floors", "status",
"klass", "valid_until"}; times ("epoch_s", "issued", ride "time") are u32
seconds since the liftcard epoch 2024-01-01T00:00:00Z; amounts are integer fen.
Every "invalid" entry carries "why" (a human description) and, for binary
formats, "reason": the FormatError reason the CPython codec raises (see
liftcard_protocol.errors.REASONS); for config, "key" names the offending key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .card import gen_card_record
from .common import VECTOR_DIR, local_epoch
from .config import base_config, gen_config
from .delta import gen_delta
from .fees import gen_fees
from .harvest import gen_harvest
from .integrity import gen_crc16, gen_mac16
from .link import gen_uplink
from .ride import gen_ride_record
from .whitelist import gen_whitelist

__all__ = ["GENERATORS", "base_config", "generate", "load", "local_epoch", "main", "parse", "render"]
GENERATORS = {
    "crc16.jsonl": gen_crc16,
    "mac16.jsonl": gen_mac16,
    "card_record.jsonl": gen_card_record,
    "whitelist.jsonl": gen_whitelist,
    "delta.jsonl": gen_delta,
    "ride_record.jsonl": gen_ride_record,
    "config.jsonl": gen_config,
    "fees.jsonl": gen_fees,
    "uplink.jsonl": gen_uplink,
    "harvest.jsonl": gen_harvest,
}


def _line(obj) -> str:
    return json.dumps(obj, sort_keys=True) + "\n"


def render(obj) -> str:
    if isinstance(obj, list):
        return "".join(_line(item) for item in obj)
    meta = {k: v for k, v in obj.items() if not isinstance(v, list)}
    out = [_line({"meta": meta})]
    for group in sorted(k for k, v in obj.items() if isinstance(v, list)):
        out.extend(_line({"group": group, "case": case}) for case in obj[group])
    return "".join(out)


def parse(text: str):
    """The object render() wrote."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not lines or "meta" not in lines[0]:
        return lines
    obj = dict(lines[0]["meta"])
    for line in lines[1:]:
        obj.setdefault(line["group"], []).append(line["case"])
    return obj


def load(name: str, directory: Path = VECTOR_DIR):
    """A vector file by name ("fees.jsonl"), as the object it holds."""
    return parse((directory / name).read_text(encoding="utf-8"))


def generate() -> dict:
    """File name -> exact file text."""
    return {name: render(gen()) for name, gen in GENERATORS.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="liftcard-vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="regenerate in memory and exit 1 if the files on disk differ")
    ap.add_argument("--dir", type=Path, default=VECTOR_DIR, help="vector directory (default: %(default)s)")
    args = ap.parse_args(argv)
    files = generate()
    if args.check:
        stale = []
        for name, text in files.items():
            path = args.dir / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        if stale:
            print(
                "liftcard-vectors: out of date in %s: %s (run liftcard-vectors)" % (args.dir, ", ".join(stale)),
                file=sys.stderr,
            )
            return 1
        print("liftcard-vectors: %d files up to date" % len(files))
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.dir / name).write_text(text, encoding="utf-8")
    print("liftcard-vectors: wrote %d files to %s" % (len(files), args.dir))
    return 0
