"""Writes tests/vectors/nfc.jsonl: shared test vectors for the card
cryptography, the credential formats, the PN532 frames and whole tap
transcripts, from the CPython reference (liftcard_provisioning.nfc) and the
emulated cards.

    python -m liftcard_tools.nfc.vectors            # (re)write the file
    python -m liftcard_tools.nfc.vectors --check    # exit 1 if the file differs from a fresh run

Same JSON Lines convention as the other vector files (docs/formats.md): one
{"meta": {...}} line, then one {"group": <name>, "case": {...}} line per case,
so MicroPython can read one case at a time. Byte strings are lowercase hex.
Every case carries "source": "RFC 4493 ...", "AN10922 ...", "AN12196 ..."
(published examples, reproduced byte for byte) or "liftcard" (generated here
from the reference implementation with deterministic "random" numbers drawn
from SHA-256 in counter mode).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import crypto as C
from liftcard_provisioning.nfc import frames as Fr
from liftcard_provisioning.nfc import ntag
from liftcard_provisioning.nfc.desfire import DesfireHost
from liftcard_provisioning.nfc.personalise import personalise_desfire

from .cards import DesfireCard, Ntag424Card

VECTOR_DIR = Path(__file__).resolve().parents[3] / "tests" / "vectors"
NAME = "nfc.jsonl"
h = bytes.fromhex


class DetRng:
    def __init__(self, seed: str):
        self.seed, self.n = seed.encode(), 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
            self.n += 1
        return out[:n]


def _hx(b) -> str:
    return bytes(b).hex()


class _Recorder:
    def __init__(self, card):
        self.card, self.log = card, []

    def __call__(self, data: bytes) -> bytes:
        r = self.card.transceive(data)
        self.log.append({"send": _hx(data), "recv": _hx(r)})
        return r


# test-only building keys (never used on real cards)
BUILDING = 12
READ_MASTER = h("5EAD5EAD00112233445566778899AABB")
PERSO_MASTER = h("9E2509E2FFEEDDCCBBAA998877665544")
KEYS = K.BuildingKeys(BUILDING, READ_MASTER, PERSO_MASTER)
UID_D = h("04A1B2C3D4E580")
UID_N = h("04C0FFEE123480")
CRED = K.Credential(h("00000000075BCD15"), BUILDING, issuer=3, valid_from=800, valid_until=2800, key_version=1)


def cases():
    out = []

    def add(group, source, **case):
        out.append({"group": group, "case": dict(source=source, **case)})

    # --- CMAC ---
    k = h("2b7e151628aed2a6abf7158809cf4f3c")
    m = h(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411"
        "e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    )
    rfc = {
        0: "bb1d6929e95937287fa37d129b756746",
        16: "070a16b46b4d4144f79bdd9dd04a287c",
        40: "dfa66747de9ae63030ca32611497c827",
        64: "51f0bebf7e3b9d92fc49741779363cfe",
    }
    for n, mac in rfc.items():
        assert C.cmac(k, m[:n]).hex() == mac
        add(
            "cmac",
            "RFC 4493 section 4, example %d" % (list(rfc).index(n) + 1),
            key=_hx(k),
            msg=_hx(m[:n]),
            iv=_hx(bytes(16)),
            mac=mac,
        )
    k1, k2 = C.cmac_subkeys(k)
    assert (k1.hex(), k2.hex()) == ("fbeed618357133667c85e08f7236a8de", "f7ddac306ae266ccf90bc11ee46d513b")
    add("cmac_subkeys", "RFC 4493 section 4 (subkey generation)", key=_hx(k), k1=_hx(k1), k2=_hx(k2))
    rng = DetRng("cmac_iv")
    for n in (0, 1, 15, 16, 17, 32, 33):
        key, iv, msg = rng(16), rng(16), rng(n)
        add(
            "cmac",
            "liftcard (DESFire EV1 CMAC with a chained IV)",
            key=_hx(key),
            msg=_hx(msg),
            iv=_hx(iv),
            mac=_hx(C.cmac_iv(key, msg, iv)),
        )

    # --- AN10922 ---
    nxp_m = h("04782E21801D80") + h("3042F5") + b"NXP Abu"
    div = C.an10922_aes128(h("00112233445566778899AABBCCDDEEFF"), nxp_m)
    assert div.hex().upper() == "A8DD63A3B89D54B37CA802473FDA9175"
    add(
        "an10922",
        "AN10922 section 2.2.1 (AES-128 example: UID 04782E21801D80, AID 3042F5, SystemIdentifier 'NXP Abu')",
        master=_hx(h("00112233445566778899AABBCCDDEEFF")),
        div_input=_hx(nxp_m),
        m="01" + _hx(nxp_m),
        key=_hx(div),
    )
    for what, inp, master in (
        ("desfire key 1 (read)", K.desfire_div_input(UID_D, BUILDING, 1), READ_MASTER),
        ("desfire key 0 (application master)", K.desfire_div_input(UID_D, BUILDING, 0), PERSO_MASTER),
        ("ntag key 2 (SDMFileRead)", K.ntag_div_input(UID_N, BUILDING, 2), READ_MASTER),
        ("ntag key 1 (SDMMetaRead, per building)", K.ntag_meta_div_input(BUILDING), READ_MASTER),
        ("31-byte input (M is exactly 32 bytes: K1, no padding)", bytes(range(31)), READ_MASTER),
        ("15-byte input (M is 16 bytes, still padded to 32)", bytes(range(15)), READ_MASTER),
    ):
        add(
            "an10922",
            "liftcard: " + what,
            master=_hx(master),
            div_input=_hx(inp),
            m="01" + _hx(inp),
            key=_hx(C.an10922_aes128(master, inp)),
        )

    # --- CRC32 (DESFire) ---
    add(
        "crc32_desfire",
        "liftcard (JAMCRC: CRC-32 without final XOR, little-endian)",
        data=_hx(b"123456789"),
        crc=_hx(C.crc32_desfire(b"123456789")),
    )

    # --- EV2 First (AN12196 Table 14) ---
    pcd = C.EV2FirstPCD(bytes(16), h("13C5DB8A5930439FC3DEF9A4C675360F"))
    tok = pcd.step1(h("A04C124213C186F22399D33AC2A30215"))
    s = pcd.step2(h("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663"))
    assert (s.enc_key.hex().upper(), s.mac_key.hex().upper()) == (
        "1309C877509E5A215007FF0ED19CA564",
        "4C6626F5E72EA694202139295C7A7FC7",
    )
    add(
        "ev2_first",
        "AN12196 section 5.6 Table 14 (rev 2.0; 6.6 in rev 1.8): AuthenticateEV2First with key 0x00",
        key=_hx(bytes(16)),
        rnd_a="13c5db8a5930439fc3def9a4c675360f",
        ek_rnd_b="a04c124213c186f22399d33ac2a30215",
        rnd_b=_hx(pcd.rnd_b),
        token=_hx(tok),
        answer="3fa64db5446d1f34cd6ea311167f5e4985b89690c04a05f17fa7ab2f08120663",
        ti=_hx(s.ti),
        ses_enc=_hx(s.enc_key),
        ses_mac=_hx(s.mac_key),
    )

    # --- EV1 native AES auth: deterministic transcripts (no published NXP example) ---
    rng = DetRng("ev1")
    for i in range(3):
        key, rnd_a, rnd_b = rng(16), rng(16), rng(16)
        picc = C.EV1AuthPICC(key, rnd_b)
        p = C.EV1AuthPCD(key, rnd_a)
        ek = picc.challenge()
        tok = p.step1(ek)
        ek2, ps = picc.answer(tok)
        ss = p.step2(ek2)
        assert ss.key == ps.key
        add(
            "ev1_auth",
            "liftcard (EV1 AES authenticate, IV chained over the exchange)",
            key=_hx(key),
            rnd_a=_hx(rnd_a),
            rnd_b=_hx(rnd_b),
            ek_rnd_b=_hx(ek),
            token=_hx(tok),
            ek_rnd_a1=_hx(ek2),
            session_key=_hx(ss.key),
            ok=True,
        )
    key, rnd_a, rnd_b = rng(16), rng(16), rng(16)
    picc = C.EV1AuthPICC(key, rnd_b)
    wrong = rng(16)
    p = C.EV1AuthPCD(wrong, rnd_a)
    tok = p.step1(picc.challenge())
    add(
        "ev1_auth",
        "liftcard (reader has the wrong key: the card answers AE)",
        key=_hx(key),
        reader_key=_hx(wrong),
        rnd_a=_hx(rnd_a),
        rnd_b=_hx(rnd_b),
        ek_rnd_b=_hx(picc.challenge()),
        token=_hx(tok),
        ok=False,
    )

    # --- NTAG 424 SUN (AN12196) ---
    z = bytes(16)
    add(
        "picc_data",
        "AN12196 SUN example (PICCData decryption, all-zero SDMMetaRead key)",
        meta_key=_hx(z),
        enc="ef963ff7828658a599f3041510671e88",
        plain="c704de5f1eacc0403d0000da5cf60941",
        uid="04de5f1eacc040",
        counter=61,
    )
    add(
        "picc_data",
        "AN12196 SUN example with SDMENCFileData (PICCData part)",
        meta_key=_hx(z),
        enc="fd91ec264309878be6345cbe53badf40",
        plain=_hx(C.cbc_decrypt(z, z, h("FD91EC264309878BE6345CBE53BADF40"))),
        uid="04958caa5c5e80",
        counter=8,
    )
    for src, uid, ctr, inp, ses, mac in (
        (
            "AN12196 SUN example (encrypted PICCData, empty MAC input)",
            "04DE5F1EACC040",
            61,
            b"",
            "3FB5F6E3A807A03D5E3570ACE393776F",
            "94EED9EE65337086",
        ),
        (
            "AN12196 SUN example (MAC input = SDMENCFileData ASCII + '&cmac=')",
            "04958CAA5C5E80",
            8,
            b"CEE9A53E3E463EF1F459635736738962&cmac=",
            "3ED0920E5E6A0320D823D5987FEAFBB1",
            "ECC1E7F6C6C73BF6",
        ),
        (
            "AN12196 SUN example (plain UID/counter mirror, empty MAC input)",
            "041E3C8A2D6B80",
            6,
            b"",
            None,
            "4B00064004B0B3D3",
        ),
    ):
        got_ses = C.sdm_session_mac_key(z, h(uid), ctr)
        assert ses is None or got_ses.hex().upper() == ses
        assert C.sdmmac(z, h(uid), ctr, inp).hex().upper() == mac
        add(
            "sdmmac",
            src,
            file_key=_hx(z),
            uid=uid.lower(),
            counter=ctr,
            sv2="3cc300010080" + uid.lower() + _hx(C.ctr_le3(ctr)),
            session_key=_hx(got_ses),
            full_cmac=_hx(C.cmac(got_ses, inp)),
            mac_input=_hx(inp),
            sdmmac=mac.lower(),
        )

    # --- credential ---
    add("credential", "liftcard", fields=_cred_fields(CRED), bytes=_hx(CRED.encode()), valid=True)
    c2 = K.Credential(h("8000000000000001"), 0x3FFFFFFF, 0xFFFF, 0, 0xFFFF, 2)
    add("credential", "liftcard", fields=_cred_fields(c2), bytes=_hx(c2.encode()), valid=True)
    good = CRED.encode()
    for why, bad in (
        ("bad magic", b"LCCX" + good[4:]),
        ("unknown version", good[:4] + b"\x02" + good[5:]),
        ("CRC mismatch", good[:-1] + bytes([good[-1] ^ 1])),
        ("too short", good[:-1]),
        ("valid_from after valid_until", _resealed(good, 20, b"\x0b\x00\x0a\x00")),
    ):
        add("credential", "liftcard", bytes=_hx(bad), valid=False, why=why)

    # --- PN532 frames ---
    for why, tfi, data in (
        ("GetFirmwareVersion command", 0xD4, b"\x02"),
        ("GetFirmwareVersion answer", 0xD5, b"\x03" + bytes([0x32, 1, 6, 7])),
        ("SAMConfiguration normal mode", 0xD4, b"\x14\x01\x14\x01"),
        ("InListPassiveTarget 1 target 106 kbps A", 0xD4, b"\x4a\x01\x00"),
        ("InDataExchange SelectApplication LCF", 0xD4, b"\x40\x01\x5a" + K.AID_LCF),
        ("extended frame (300 data bytes)", 0xD4, b"\x40\x01" + bytes(range(256)) + bytes(42)),
    ):
        add(
            "pn532_frame", "UM0701-02 section 6.2.1", what=why, tfi=tfi, data=_hx(data), frame=_hx(Fr.encode(tfi, data))
        )
    for what, raw in (("ACK", Fr.ACK), ("NACK", Fr.NACK), ("error frame", Fr.ERROR_FRAME), ("HSU wake-up", Fr.WAKEUP)):
        add("pn532_frame", "UM0701-02 section 6.2.1", what=what, frame=_hx(raw))

    # --- whole transcripts at the InDataExchange level ---
    out += _transcripts()
    return out


def _resealed(good: bytes, off: int, repl: bytes) -> bytes:
    b = bytearray(good)
    b[off : off + len(repl)] = repl
    b[24:26] = K.crc16(bytes(b[:24])).to_bytes(2, "big")
    return bytes(b)


def _cred_fields(c: K.Credential) -> dict:
    return {
        "card_id": c.card_id.hex(),
        "building_id": c.building_id,
        "issuer": c.issuer,
        "valid_from": c.valid_from,
        "valid_until": c.valid_until,
        "key_version": c.key_version,
    }


def _transcripts():
    out = []
    card = DesfireCard(UID_D, rng=DetRng("card"))
    rec = _Recorder(card)
    personalise_desfire(rec, UID_D, KEYS, CRED, rng=DetRng("perso-host"))
    out.append(
        {
            "group": "desfire_personalise",
            "case": {
                "source": "liftcard (docs/nfc.md 'Personalisation'; host RndA and card RndB from SHA-256 counter mode)",
                "uid": _hx(UID_D),
                "building_id": BUILDING,
                "read_master": _hx(READ_MASTER),
                "perso_master": _hx(PERSO_MASTER),
                "credential": _hx(CRED.encode()),
                "frames": rec.log,
            },
        }
    )
    # a tap: select, EV1 auth with key 1, read the credential with its MAC
    card.power_on()
    card.rng = DetRng("card-tap")
    rec = _Recorder(card)
    host = DesfireHost(rec, rng=DetRng("reader-tap"))
    host.select(K.AID_LCF)
    host.auth_ev1(K.KEY_READ, KEYS.desfire_key(UID_D, K.KEY_READ))
    data = host.read_data(K.FILE_CRED, 0, K.CRED_LEN)
    assert data == CRED.encode()
    out.append(
        {
            "group": "desfire_tap",
            "case": {
                "source": "liftcard (EV1 AES, docs/nfc.md 'Tap procedure')",
                "uid": _hx(UID_D),
                "building_id": BUILDING,
                "read_master": _hx(READ_MASTER),
                "read_key": _hx(KEYS.desfire_key(UID_D, K.KEY_READ)),
                "rnd_a": _hx(host_rnd("reader-tap")),
                "session_key": _hx(host.session.key),
                "frames": rec.log,
                "card_id": CRED.card_id.hex(),
                "result": "OK",
            },
        }
    )
    card.power_on()
    card.rng = DetRng("card-tap-ev2")
    rec = _Recorder(card)
    host = DesfireHost(rec, rng=DetRng("reader-tap-ev2"))
    host.select(K.AID_LCF)
    host.auth_ev2(K.KEY_READ, KEYS.desfire_key(UID_D, K.KEY_READ))
    assert host.read_data(K.FILE_CRED, 0, K.CRED_LEN) == CRED.encode()
    out.append(
        {
            "group": "desfire_tap_ev2",
            "case": {
                "source": "liftcard (EV2First + EV2 CommMode.MAC ReadData)",
                "uid": _hx(UID_D),
                "read_key": _hx(KEYS.desfire_key(UID_D, K.KEY_READ)),
                "rnd_a": _hx(host_rnd("reader-tap-ev2")),
                "ti": _hx(host.session.ti),
                "ses_mac": _hx(host.session.mac_key),
                "frames": rec.log,
                "card_id": CRED.card_id.hex(),
                "result": "OK",
            },
        }
    )
    # NTAG 424 SUN read
    nt = Ntag424Card(
        UID_N,
        KEYS.ntag_meta_key(),
        KEYS.ntag_key(UID_N, K.NTAG_KEY_FILE),
        h("00000000000F4240"),
        counter=41,
        rng=DetRng("ntag-pad"),
    )
    rec = _Recorder(nt)
    assert ntag.read_sun(rec, UID_N, KEYS) == (h("00000000000F4240"), 42)
    tmpl, lay = K.ndef_template(h("00000000000F4240"))
    out.append(
        {
            "group": "ntag_tap",
            "case": {
                "source": "liftcard (NTAG 424 SUN read, docs/nfc.md)",
                "uid": _hx(UID_N),
                "building_id": BUILDING,
                "read_master": _hx(READ_MASTER),
                "meta_key": _hx(KEYS.ntag_meta_key()),
                "file_key": _hx(KEYS.ntag_key(UID_N, K.NTAG_KEY_FILE)),
                "counter": 42,
                "template": _hx(tmpl),
                "card_id_offset": lay.card_id_off,
                "picc_offset": lay.picc_off,
                "mac_offset": lay.mac_off,
                "frames": rec.log,
                "card_id": "00000000000f4240",
                "result": "OK",
                "replay_if_last_counter_at_least": 42,
            },
        }
    )
    return out


def host_rnd(seed: str) -> bytes:
    return DetRng(seed)(16)


def generate() -> dict:
    meta = {
        "meta": {
            "format": "liftcard nfc vectors",
            "version": 1,
            "doc": "docs/nfc.md",
            "generator": "python -m liftcard_tools.nfc.vectors",
        }
    }
    lines = [json.dumps(meta, sort_keys=True)] + [json.dumps(c, sort_keys=True) for c in cases()]
    return {NAME: "\n".join(lines) + "\n"}


def load(directory: Path = VECTOR_DIR) -> list:
    with open(Path(directory) / NAME, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liftcard_tools.nfc.vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file on disk differs from a fresh run")
    ap.add_argument("--dir", type=Path, default=VECTOR_DIR)
    args = ap.parse_args(argv)
    files = generate()
    if args.check:
        stale = [
            n
            for n, t in files.items()
            if not (args.dir / n).exists() or (args.dir / n).read_text(encoding="utf-8") != t
        ]
        if stale:
            print(
                "nfc vectors: out of date: %s (run python -m liftcard_tools.nfc.vectors)" % ", ".join(stale),
                file=sys.stderr,
            )
            return 1
        print("nfc vectors: %d file up to date" % len(files))
        return 0
    for n, t in files.items():
        (args.dir / n).write_text(t, encoding="utf-8")
    print("nfc vectors: wrote %s" % ", ".join(str(args.dir / n) for n in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
