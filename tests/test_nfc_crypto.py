"""Card cryptography (liftcard_provisioning.nfc.crypto): published NXP / RFC examples,
the shared vector file, and round-trip properties."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_testing.paths import VECTORS
from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import crypto as C
from liftcard_tools.nfc import vectors as V

h = bytes.fromhex
keys16 = st.binary(min_size=16, max_size=16)
FAST = settings(max_examples=60, deadline=None)


# --- published examples -----------------------------------------------------


@pytest.mark.parametrize(
    "n,mac",
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_rfc4493_examples(n, mac):
    k = h("2b7e151628aed2a6abf7158809cf4f3c")
    m = h(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411"
        "e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    )[:n]
    assert C.cmac(k, m).hex() == mac
    assert C.cmac_iv(k, m).hex() == mac  # own CMAC (used with chained IVs) agrees at IV 0


def test_an10922_aes128_example():
    # AN10922 section 2.2.1: master 00112233..FF, UID 04782E21801D80, AID 3042F5, SystemIdentifier "NXP Abu"
    m = h("04782E21801D80") + h("3042F5") + b"NXP Abu"
    assert C.an10922_aes128(h("00112233445566778899AABBCCDDEEFF"), m) == h("A8DD63A3B89D54B37CA802473FDA9175")


def test_an10922_pads_to_two_blocks_unlike_plain_cmac():
    k = os.urandom(16)
    d = bytes(range(15))  # M = 16 bytes: AN10922 pads to 32 with K2; plain CMAC would use K1 over 16
    assert C.an10922_aes128(k, d) != C.cmac(k, b"\x01" + d)
    d = bytes(range(20))  # 16 < M < 32: the same as CMAC
    assert C.an10922_aes128(k, d) == C.cmac(k, b"\x01" + d)
    d = bytes(range(31))  # M = 32: K1, no padding, the same as CMAC
    assert C.an10922_aes128(k, d) == C.cmac(k, b"\x01" + d)
    with pytest.raises(ValueError):
        C.an10922_aes128(k, bytes(32))
    with pytest.raises(ValueError):
        C.an10922_aes128(k, b"")


def test_an12196_ev2_first_table14():
    pcd = C.EV2FirstPCD(bytes(16), h("13C5DB8A5930439FC3DEF9A4C675360F"))
    token = pcd.step1(h("A04C124213C186F22399D33AC2A30215"))
    assert pcd.rnd_b == h("B9E2FC789B64BF237CCCAA20EC7E6E48")
    assert token == h("35C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D")
    s = pcd.step2(h("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663"))
    assert s.ti == h("9D00C4DF")
    assert s.enc_key == h("1309C877509E5A215007FF0ED19CA564")
    assert s.mac_key == h("4C6626F5E72EA694202139295C7A7FC7")
    # the card side produces the same answer from the same randoms
    picc = C.EV2FirstPICC(bytes(16), h("B9E2FC789B64BF237CCCAA20EC7E6E48"), h("9D00C4DF"))
    assert picc.challenge() == h("A04C124213C186F22399D33AC2A30215")
    resp, ps = picc.answer(token)
    assert resp == h("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663")
    assert (ps.enc_key, ps.mac_key) == (s.enc_key, s.mac_key)


def test_an12196_sun_examples():
    z = bytes(16)
    tag, uid, ctr = C.picc_data_decrypt(z, h("EF963FF7828658A599F3041510671E88"))
    assert (tag, uid, ctr) == (0xC7, h("04DE5F1EACC040"), 61)
    assert C.picc_data_encrypt(z, uid, ctr, h("DA5CF60941")) == h("EF963FF7828658A599F3041510671E88")
    assert C.sdm_session_mac_key(z, uid, 61) == h("3FB5F6E3A807A03D5E3570ACE393776F")
    assert C.cmac(h("3FB5F6E3A807A03D5E3570ACE393776F"), b"") == h("E194C7EE12D9F7EE8A65C8331B704386")
    assert C.sdmmac(z, uid, 61) == h("94EED9EE65337086")
    # with SDMENCFileData: MAC input is the mirrored ASCII up to and including "&cmac="
    assert C.picc_data_decrypt(z, h("FD91EC264309878BE6345CBE53BADF40"))[1:] == (h("04958CAA5C5E80"), 8)
    assert C.sdm_session_mac_key(z, h("04958CAA5C5E80"), 8) == h("3ED0920E5E6A0320D823D5987FEAFBB1")
    assert C.sdmmac(z, h("04958CAA5C5E80"), 8, b"CEE9A53E3E463EF1F459635736738962&cmac=") == h("ECC1E7F6C6C73BF6")
    # plain mirror example
    assert C.sdmmac(z, h("041E3C8A2D6B80"), 6) == h("4B00064004B0B3D3")


def test_picc_data_wrong_key_is_refused():
    enc = C.picc_data_encrypt(bytes(16), h("04DE5F1EACC040"), 61, bytes(5))
    with pytest.raises(C.AuthError):
        C.picc_data_decrypt(b"\x01" * 16, enc)


def test_crc32_desfire_is_jamcrc():
    import zlib

    assert C.crc32_desfire(b"123456789") == ((~0xCBF43926) & 0xFFFFFFFF).to_bytes(4, "little")
    assert int.from_bytes(C.crc32_desfire(b"abc"), "little") == zlib.crc32(b"abc") ^ 0xFFFFFFFF


# --- the shared vector file ---------------------------------------------------


def test_vector_file_is_current():
    assert (VECTORS / V.NAME).read_text(encoding="utf-8") == V.generate()[V.NAME], (
        "run: python -m liftcard_tools.nfc.vectors"
    )
    assert V.main(["--check", "--dir", str(VECTORS)]) == 0


def test_vector_lines_are_small():
    for line in (VECTORS / V.NAME).read_text(encoding="utf-8").splitlines():
        assert len(line) < 8192  # one case at a time in a 192K MicroPython heap


def _vectors(group):
    return [r["case"] for r in V.load(VECTORS) if r.get("group") == group]


def test_vectors_recomputed_from_their_inputs():
    n = 0
    for c in _vectors("cmac"):
        assert C.cmac_iv(h(c["key"]), h(c["msg"]), h(c["iv"])).hex() == c["mac"]
        n += 1
    for c in _vectors("an10922"):
        assert C.an10922_aes128(h(c["master"]), h(c["div_input"])).hex() == c["key"]
        n += 1
    for c in _vectors("ev1_auth"):
        pcd = C.EV1AuthPCD(h(c.get("reader_key", c["key"])), h(c["rnd_a"]))
        picc = C.EV1AuthPICC(h(c["key"]), h(c["rnd_b"]))
        assert picc.challenge().hex() == c["ek_rnd_b"]
        assert pcd.step1(h(c["ek_rnd_b"])).hex() == c["token"]
        if c["ok"]:
            ek2, ps = picc.answer(h(c["token"]))
            assert ek2.hex() == c["ek_rnd_a1"]
            assert pcd.step2(ek2).key.hex() == c["session_key"] == ps.key.hex()
        else:
            with pytest.raises(C.AuthError):
                picc.answer(h(c["token"]))
        n += 1
    for c in _vectors("sdmmac"):
        assert C.sdmmac(h(c["file_key"]), h(c["uid"]), c["counter"], h(c["mac_input"])).hex() == c["sdmmac"]
        n += 1
    for c in _vectors("credential"):
        if c["valid"]:
            cred = K.Credential.decode(h(c["bytes"]))
            assert cred.card_id.hex() == c["fields"]["card_id"] and cred.encode().hex() == c["bytes"]
        else:
            with pytest.raises(K.CredentialError):
                K.Credential.decode(h(c["bytes"]))
        n += 1
    assert n > 25


def test_desfire_tap_transcript_replays_against_reader_model():
    """The transcript in the vector file is what a reader with the same RndA
    must send; replaying the card's answers must verify and give the card id."""
    from liftcard_provisioning.nfc.desfire import DesfireHost

    for c in _vectors("desfire_tap") + _vectors("desfire_tap_ev2"):
        frames = iter(c["frames"])

        def tx(data):
            f = next(frames)
            assert data.hex() == f["send"]
            return h(f["recv"])

        host = DesfireHost(tx, rng=lambda n: h(c["rnd_a"]))
        host.select(K.AID_LCF)
        if "ti" in c:
            host.auth_ev2(K.KEY_READ, h(c["read_key"]))
        else:
            host.auth_ev1(K.KEY_READ, h(c["read_key"]))
        cred = K.Credential.decode(host.read_data(K.FILE_CRED, 0, K.CRED_LEN))
        assert cred.card_id.hex() == c["card_id"]


# --- properties -----------------------------------------------------------------


@FAST
@given(keys16, keys16, keys16)
def test_ev1_auth_round_trip(key, rnd_a, rnd_b):
    picc = C.EV1AuthPICC(key, rnd_b)
    pcd = C.EV1AuthPCD(key, rnd_a)
    ek2, ps = picc.answer(pcd.step1(picc.challenge()))
    s = pcd.step2(ek2)
    assert s.key == ps.key == rnd_a[:4] + rnd_b[:4] + rnd_a[12:] + rnd_b[12:]
    # secure messaging stays in step on both sides
    data = os.urandom(26)
    s.cmd_cmac(b"\xbd\x01\x00\x00\x00\x1a\x00\x00")
    ps.cmd_cmac(b"\xbd\x01\x00\x00\x00\x1a\x00\x00")
    s.verify_resp(data, ps.resp_mac(data))


@FAST
@given(keys16, keys16, keys16, keys16)
def test_ev1_auth_wrong_key_fails(key, wrong, rnd_a, rnd_b):
    if key == wrong:
        return
    picc = C.EV1AuthPICC(key, rnd_b)
    pcd = C.EV1AuthPCD(wrong, rnd_a)
    token = pcd.step1(picc.challenge())
    with pytest.raises(C.AuthError):
        picc.answer(token)  # the card refuses (AE) ...
    # ... and a card with the wrong key cannot satisfy a reader with the right one
    picc2 = C.EV1AuthPICC(wrong, rnd_b)
    pcd2 = C.EV1AuthPCD(key, rnd_a)
    token2 = pcd2.step1(picc2.challenge())
    fake = C.cbc_encrypt(wrong, token2[16:], C.rotl(rnd_a))
    with pytest.raises(C.AuthError):
        pcd2.step2(fake)


@FAST
@given(keys16, keys16, keys16, st.binary(min_size=4, max_size=4))
def test_ev2_first_round_trip(key, rnd_a, rnd_b, ti):
    picc = C.EV2FirstPICC(key, rnd_b, ti)
    pcd = C.EV2FirstPCD(key, rnd_a)
    resp, ps = picc.answer(pcd.step1(picc.challenge()))
    s = pcd.step2(resp)
    assert (
        (s.ti, s.enc_key, s.mac_key) == (ps.ti, ps.enc_key, ps.mac_key) == (ti,) + C.ev2_session_keys(key, rnd_a, rnd_b)
    )


@FAST
@given(
    keys16,
    keys16,
    st.binary(min_size=7, max_size=7),
    st.integers(0, 0xFFFFFF),
    st.binary(max_size=60),
    st.binary(min_size=5, max_size=5),
)
def test_sun_round_trip(meta, fkey, uid, ctr, mac_input, pad):
    enc = C.picc_data_encrypt(meta, uid, ctr, pad)
    assert C.picc_data_decrypt(meta, enc)[1:] == (uid, ctr)
    mac = C.sdmmac(fkey, uid, ctr, mac_input)
    assert len(mac) == 8
    if ctr < 0xFFFFFF:
        assert C.sdmmac(fkey, uid, ctr + 1, mac_input) != mac


@FAST
@given(keys16, st.binary(max_size=80), keys16)
def test_cmac_iv_zero_is_rfc4493(key, msg, iv):
    assert C.cmac_iv(key, msg) == C.cmac(key, msg)
    # a chained IV is the CMAC of the message with the IV xored into the first block
    if len(msg) >= 16:
        assert C.cmac_iv(key, msg, iv) == C.cmac(key, C.xor(msg[:16], iv) + msg[16:])


@FAST
@given(
    st.binary(min_size=8, max_size=8),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
def test_credential_round_trip(cid, b, iss, a, z):
    vf, vu = min(a, z), max(a, z)
    c = K.Credential(cid, b, iss, vf, vu)
    raw = c.encode()
    assert len(raw) == K.CRED_LEN and K.Credential.decode(raw) == c
