"""Emulated cards and the reader's card protocols without the PN532 link
(pn532emu.DirectPN): personalisation through real DESFire commands, the errors a
real card returns, and that a one-byte change in any card answer is never
accepted."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc.desfire import CardStatus, DesfireHost
from liftcard_provisioning.nfc.tap import Reader
from liftcard_tools.nfc import cards as Cd
from liftcard_tools.nfc.pn532emu import DirectPN

h = bytes.fromhex
KEYS = K.BuildingKeys(12, h("00112233445566778899AABBCCDDEEF0"), h("F0EEDDCCBBAA99887766554433221100"))
READER_KEYS = K.BuildingKeys(12, KEYS.read_master)  # a reader never holds the personalisation master
UID = h("04A1B2C3D4E580")
CRED = K.Credential(h("00000000075BCD15"), 12, 3, 800, 2800)


def desfire():
    return Cd.make_desfire(UID, KEYS, CRED)


def ntag(counter=0):
    return Cd.make_ntag424(h("04C0FFEE123480"), KEYS, h("00000000000F4240"), counter)


def tap(card, reader=None, **kw):
    reader = reader or Reader(DirectPN(card), READER_KEYS, **kw)
    reader.pn.card = card
    return reader.read_tap()


def test_desfire_genuine_ev1_and_ev2():
    assert tap(desfire())[:2] == ("OK", CRED.card_id)
    assert tap(desfire(), use_ev2=True)[:2] == ("OK", CRED.card_id)


def test_desfire_errors_like_a_real_card():
    card = desfire()
    tx = card.transceive
    assert tx(b"\x5a" + b"XYZ") == b"\xa0"  # application not found
    assert tx(b"\x5a" + K.AID_LCF) == b"\x00"
    assert tx(b"\xbd\x01\x00\x00\x00\x1a\x00\x00") == b"\xae"  # MACed file, not authenticated
    assert tx(b"\xaa\x05") == b"\x40"  # no such key
    assert tx(b"\xaa") == b"\x7e"  # length error
    assert tx(b"\x99") == b"\x1c"  # illegal command
    assert tx(b"\xbd\x07\x00\x00\x00\x01\x00\x00") == b"\xf0"  # file not found
    r = tx(b"\xaa\x01")
    assert r[0] == 0xAF and len(r) == 17
    assert tx(b"\xaf" + bytes(32)) == b"\xae"  # wrong proof: authentication error
    assert tx(b"\x5a\x00\x00\x00") == b"\x00"
    assert tx(b"\xca" + K.AID_LCF + b"\x0b\x82") == b"\xde"  # duplicate
    # key 1 may read but not write; writing needs key 0
    h_ = DesfireHost(card.transceive)
    h_.select(K.AID_LCF)
    h_.auth_ev1(1, KEYS.desfire_key(UID, 1))
    with pytest.raises(CardStatus) as e:
        h_.write_data(1, 0, b"x", maced=True)
    assert e.value.code == 0xAE
    h_.select(K.AID_LCF)
    h_.auth_ev1(1, KEYS.desfire_key(UID, 1))
    with pytest.raises(CardStatus) as e:
        h_.read_data(1, 20, 10)
    assert e.value.code == 0xBE  # boundary


def test_personalisation_keys_are_diversified_and_changed():
    card = desfire()
    app = card.apps[K.AID_LCF]
    assert app.keys[0][0] == KEYS.desfire_key(UID, 0) != bytes(16)
    assert app.keys[1][0] == KEYS.desfire_key(UID, 1)
    assert app.files[1].comm == 1 and app.files[1].access == K.CRED_ACCESS
    assert bytes(app.files[1].data) == CRED.encode()
    other = Cd.make_desfire(h("04A1B2C3D4E581"), KEYS, CRED)
    assert other.apps[K.AID_LCF].keys[1][0] != app.keys[1][0]


def test_factory_key_no_longer_works_after_personalisation():
    h_ = DesfireHost(desfire().transceive)
    h_.select(K.AID_LCF)
    with pytest.raises(CardStatus):
        h_.auth_ev1(0, bytes(16))


def test_clones_fail():
    real = desfire()
    assert tap(Cd.MagicClone(real, "wrong_key")).result == "AUTH_FAILED"
    assert tap(Cd.MagicClone(real, "no_app")).result == "AUTH_FAILED"
    rec = Cd.RecordingCard(desfire())
    assert tap(rec).result == "OK"
    assert tap(Cd.MagicClone(real, "replay", rec.responses)).result == "AUTH_FAILED"
    # a card of another building (keys diversified from another master)
    foreign = Cd.make_desfire(UID, K.BuildingKeys(13, os.urandom(16), os.urandom(16)), CRED)
    assert tap(foreign).result == "AUTH_FAILED"


def test_ntag_counter_and_replay():
    card = ntag()
    r = Reader(DirectPN(card), READER_KEYS)
    t1 = tap(card, r)
    t2 = tap(card, r)
    assert (t1.result, t1.card_id, t2.result) == ("OK", h("00000000000F4240"), "OK")
    assert card.counter == 2
    rec = Cd.RecordingCard(card)
    assert tap(rec, r).result == "OK"
    assert tap(Cd.MagicClone(card, "replay", rec.responses), r).result == "REPLAY"
    # a wrong SDMMetaRead / file key is a forgery
    bad = Cd.make_ntag424(card.uid, K.BuildingKeys(12, os.urandom(16)), h("00000000000F4240"))
    assert tap(bad, r).result == "AUTH_FAILED"


def test_ntag_iso_errors():
    card = ntag()
    assert card.transceive(b"\x00\xb0\x00\x00\x10") == b"\x69\x86"  # nothing selected
    assert card.transceive(b"\x5a" + K.AID_LCF) == b"\x6e\x00"  # native command: CLA not supported
    assert card.transceive(b"\x00\xa4\x00\x0c\x02\xe1\x04\x00") == b"\x6a\x82"  # app not selected
    assert card.transceive(b"\x00\xa4\x04\x0c\x07" + K.NDEF_APP_DF_NAME + b"\x00") == b"\x90\x00"
    assert card.transceive(b"\x00\xa4\x00\x0c\x02\xe1\x04\x00") == b"\x90\x00"
    a = card.transceive(b"\x00\xb0\x00\x00\x10")
    b = card.transceive(b"\x00\xb0\x00\x00\x10")
    assert a == b and card.counter == 1  # one increment per selection
    assert card.transceive(b"\x00\xb1\x00\x00\x10") == b"\x6d\x00"


def test_legacy_uid():
    c = Cd.MifareClassicCard(h("01020304"))
    t = tap(c)
    assert (t.result, t.card_id, t.flags) == ("LEGACY_DISABLED", h("0000000001020304"), 0x02)
    t = tap(c, legacy_uid=True)
    assert (t.result, t.card_id, t.flags) == ("OK", h("0000000001020304"), 0x02)


@pytest.mark.parametrize("mode", ["garbage", "truncated", "crc", "mute"])
def test_faulty_card(mode):
    assert tap(Cd.FaultyCard(h("04998877665544"), mode)).result == "CARD_GARBAGE"


def test_expired_credential():
    r = Reader(DirectPN(desfire()), READER_KEYS)
    assert r.read_tap(today=2801).result == "EXPIRED"
    assert r.read_tap(today=2800).result == "OK"
    assert r.read_tap(today=799).result == "EXPIRED"


# --- every one-byte change of every card answer is refused ---------------------


def _answers(card):
    rec = Cd.RecordingCard(card)
    assert tap(rec).result == "OK"
    return [len(r) for r in rec.responses]


DESFIRE_LENS = _answers(desfire())
NTAG_LENS = _answers(ntag())


def test_exhaustive_single_bit_flips_desfire():
    for i, n in enumerate(DESFIRE_LENS):
        for pos in range(n):
            t = tap(Cd.TamperingCard(desfire(), i, pos, 0x01))
            assert t.result != "OK", (i, pos)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_one_byte_change_in_any_answer_is_detected(data):
    kind = data.draw(st.sampled_from(["desfire", "ntag", "desfire-ev2"]))
    lens = NTAG_LENS if kind == "ntag" else DESFIRE_LENS
    i = data.draw(st.integers(0, len(lens) - 1))
    pos = data.draw(st.integers(0, 200))
    mask = data.draw(st.integers(1, 255))
    card = ntag() if kind == "ntag" else desfire()
    t = tap(Cd.TamperingCard(card, i, pos, mask), use_ev2=(kind == "desfire-ev2"))
    if kind == "ntag" and i == 0 and t.result == "OK":
        # the NTAG's answer to the native SelectApplication probe only tells the reader
        # "an ISO 7816-4 card": another ISO status word there means the same thing
        assert t.card_id == h("00000000000F4240")
        return
    assert t.result in ("AUTH_FAILED", "CARD_GARBAGE"), t
