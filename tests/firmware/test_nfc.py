# The firmware's NFC stack against tests/vectors/nfc.jsonl (read a line at a
# time) and scripted PN532 links: AES-CMAC, AN10922, EV1 authentication,
# whole DESFire / NTAG transcripts, SUN, credentials, PN532 frames with
# resync and NACK, the replay counter table, and polling without allocation.
import gc

import rig
from rig import check, unhex, vector_cases
from liftcard import codes
from liftcard.cmac import AuthError, Cmac, an10922, ecb, mac_t
from liftcard.desfire import Desfire, check_credential
from liftcard.nfc import Nfc
from liftcard import pn532 as P
from liftcard.sunctr import CounterTable


def test_nfc_cmac_vectors():
    n = 0
    out = bytearray(16)
    for _, v in vector_cases("nfc.jsonl", "cmac"):
        msg = unhex(v["msg"])
        iv = unhex(v["iv"])
        Cmac(unhex(v["key"])).mac(msg, 0, len(msg), out, iv)
        check(rig.hexs(out) == v["mac"], v["source"])
        n += 1
    for _, v in vector_cases("nfc.jsonl", "cmac_subkeys"):
        c = Cmac(unhex(v["key"]))
        check(rig.hexs(c.k1) == v["k1"] and rig.hexs(c.k2) == v["k2"])
        n += 1
    check(n >= 12, "%d cases" % n)


def test_nfc_an10922_vectors():
    n = 0
    out = bytearray(16)
    for _, v in vector_cases("nfc.jsonl", "an10922"):
        d = unhex(v["div_input"])
        an10922(Cmac(unhex(v["master"])), d, len(d), out)
        check(rig.hexs(out) == v["key"], v["source"])
        n += 1
    check(n >= 6)


class FakePN:
    # Stands in for pn532.PN532 below the card protocol: answers each
    # InDataExchange from a transcript and checks what was sent.
    def __init__(self, frames, uid, sak=0x20):
        self.frames = frames
        self.i = 0
        self.out = bytearray(P.MAX_BODY)
        self.rx = bytearray(P.MAX_BODY)
        self.uid = bytearray(10)
        self.uid[: len(uid)] = uid
        self.uid_len = len(uid)
        self.sak = sak
        self.need_init = False

    def exchange(self, n):
        f = self.frames[self.i]
        self.i += 1
        sent = rig.hexs(self.out[P.DOUT : P.DOUT + n])
        if "send" in f:
            check(sent == f["send"], "frame %d: sent %s, expected %s" % (self.i, sent, f["send"]))
        r = unhex(f["recv"])
        self.rx[P.DIN : P.DIN + len(r)] = r
        return len(r)

    def release(self):
        pass

    def same_uid(self, uid, n):
        return bytes(uid[:n]) == bytes(self.uid[: self.uid_len])


def test_nfc_ev1_auth_vectors():
    n = 0
    for _, v in vector_cases("nfc.jsonl", "ev1_auth"):
        d = Desfire()
        d.rnd = unhex(v["rnd_a"])
        d.key[:] = unhex(v.get("reader_key") or v["key"])
        if v["ok"]:
            frames = [
                {"send": "aa01", "recv": "af" + v["ek_rnd_b"]},
                {"send": "af" + v["token"], "recv": "00" + v["ek_rnd_a1"]},
            ]
            ks = d._authenticate(FakePN(frames, bytes(7)))
            check(rig.hexs(ks) == v["session_key"], v["source"])
            # a card answering with another RndA' does not prove the key
            bad = v["ek_rnd_a1"][:-2] + ("00" if v["ek_rnd_a1"][-2:] != "00" else "01")
            frames[1]["recv"] = "00" + bad
            check("prove" in rig.expect_error(d._authenticate, FakePN(frames, bytes(7))))
        else:
            frames = [{"send": "aa01", "recv": "af" + v["ek_rnd_b"]}, {"recv": "ae"}]
            try:
                d._authenticate(FakePN(frames, bytes(7)))
                check(False, "wrong key accepted")
            except AuthError:
                pass
        n += 1
    check(n == 4)


def _nfc(read_master, building_id):
    nfc = Nfc(None)
    nfc.configure(unhex(read_master), building_id)
    return nfc


def test_nfc_desfire_tap_transcript():
    for _, v in vector_cases("nfc.jsonl", "desfire_tap"):
        nfc = _nfc(v["read_master"], v["building_id"])
        nfc.desfire.rnd = unhex(v["rnd_a"])
        nfc.pn = FakePN(v["frames"], unhex(v["uid"]))
        card = bytearray(8)
        check(nfc._read(card) == codes.TAP_CREDENTIAL)
        check(rig.hexs(card) == v["card_id"] and nfc.pn.i == 4)
        check(rig.hexs(nfc.desfire.key) == v["read_key"])
        check(rig.hexs(nfc.desfire.ks) == v["session_key"])
        # one flipped bit anywhere in the credential or its MAC: AUTH_FAILED
        last = v["frames"][3]["recv"]
        for pos in (2, 20, len(last) - 2):
            frames = [dict(f) for f in v["frames"]]
            frames[3]["recv"] = last[:pos] + "%02x" % (int(last[pos : pos + 2], 16) ^ 1) + last[pos + 2 :]
            nfc.pn = FakePN(frames, unhex(v["uid"]))
            check("MAC" in rig.expect_error(nfc._read, card))
        # another building's reader derives another key: the card's proof fails
        other = _nfc(v["read_master"], v["building_id"] + 1)
        other.desfire.rnd = unhex(v["rnd_a"])
        other.pn = FakePN(v["frames"][:2] + [{"recv": "ae"}], unhex(v["uid"]))
        rig.expect_error(other._read, card)


def test_nfc_ntag_tap_transcript_and_replay():
    for _, v in vector_cases("nfc.jsonl", "ntag_tap"):
        nfc = _nfc(v["read_master"], v["building_id"])
        frames = [{"send": "5a4c4346", "recv": "6e00"}] + v["frames"]
        card = bytearray(8)
        nfc.pn = FakePN(frames, unhex(v["uid"]))
        check(nfc._read(card) == codes.TAP_CREDENTIAL)
        check(rig.hexs(card) == v["card_id"] and nfc.ntag.counter == v["counter"])
        nfc.pn = FakePN(frames, unhex(v["uid"]))
        check(nfc._read(card) == codes.TAP_FAILED, "the same SUN again is a replay")
        # another UID in the field than the one in PICCData: AUTH_FAILED
        nfc.pn = FakePN(frames, unhex("04000000000001"))
        rig.expect_error(nfc._read, card)
        # a flipped MAC digit
        rd = frames[3]["recv"]
        at = 2 * v["mac_offset"]
        tampered = rd[:at] + ("30" if rd[at : at + 2] != "30" else "31") + rd[at + 2 :]
        fresh = _nfc(v["read_master"], v["building_id"])
        fresh.pn = FakePN(frames[:3] + [{"recv": tampered}], unhex(v["uid"]))
        check("SDMMAC" in rig.expect_error(fresh._read, card))


def test_nfc_sun_vectors():
    p = bytearray(16)
    for _, v in vector_cases("nfc.jsonl", "picc_data"):
        ecb(unhex(v["meta_key"])).decrypt(unhex(v["enc"]), p)
        check(rig.hexs(p) == v["plain"], v["source"])
    full = bytearray(16)
    t = bytearray(8)
    for _, v in vector_cases("nfc.jsonl", "sdmmac"):
        sv = (
            bytes((0x3C, 0xC3, 0, 1, 0, 0x80))
            + unhex(v["uid"])
            + bytes((v["counter"] & 255, (v["counter"] >> 8) & 255, v["counter"] >> 16))
        )
        Cmac(unhex(v["file_key"])).mac(sv, 0, 16, full)
        check(rig.hexs(full) == v["session_key"], v["source"])
        m = unhex(v["mac_input"])
        Cmac(full).mac(m, 0, len(m), full)
        check(rig.hexs(full) == v["full_cmac"])
        mac_t(full, t, 0)
        check(rig.hexs(t) == v["sdmmac"])


def test_nfc_credential_vectors():
    n = 0
    for _, v in vector_cases("nfc.jsonl", "credential"):
        b = bytearray(unhex(v["bytes"]))
        if v["valid"]:
            check_credential(b, v["fields"]["building_id"])
            rig.expect_error(check_credential, b, v["fields"]["building_id"] + 1)
        elif len(b) == 26:
            rig.expect_error(check_credential, b, 12)
        n += 1
    check(n == 7)


def test_nfc_pn532_frame_vectors():
    out = bytearray(400)
    n = 0
    for _, v in vector_cases("nfc.jsonl", "pn532_frame"):
        if "data" not in v:
            continue
        data = unhex(v["data"])
        k = P.encode(v["tfi"], data, len(data), out)
        check(bytes(out[:k]) == unhex(v["frame"]), v["what"])
        d = P.Decoder(400)
        got = 0
        for b in b"\x55\xaa\x13" + unhex(v["frame"]):  # garbage first: resync
            got = got or d.feed(b)
        check(got == P.F_INFO and d.n == len(data) + 1 and bytes(d.rx[1 : d.n]) == data and d.garbage == 3)
        n += 1
    check(n >= 5)
    d = P.Decoder()
    for name, want in (
        ("0000ff00ff00", P.F_ACK),
        ("0000ffff0000", P.F_NACK),
        ("0000ff01ff7f8100", P.F_ERROR),
        ("0000ff06fad50332010607e900", P.F_BAD),
        ("0000ff06fbd50332010607e800", P.F_BAD),
    ):
        got = 0
        for b in unhex(name):
            got = got or d.feed(b)
        check(got == want, name)


class ScriptLink:
    # A PN532 on the other end of a link: for each command frame written,
    # queues ACK + an answer (from `answers` by command code), optionally a
    # corrupt copy first (the host must NACK and get the good one).
    def __init__(self, answers):
        self.q = bytearray(600)
        self.qn = 0
        self.qp = 0
        self.frames = {}
        for cmd, data in answers.items():
            buf = bytearray(300)
            k = P.encode(P.TFI_CHIP, bytes((cmd + 1,)) + data, len(data) + 1, buf)
            self.frames[cmd] = bytes(buf[:k])
        self.corrupt = 0
        self.silent = False
        self.garbage = b""
        self.last = b""
        self.written = 0
        self.nacks = 0

    def _queue(self, data):
        for b in data:
            self.q[self.qn] = b
            self.qn += 1

    def write(self, buf, n):
        self.written += 1
        if self.silent:
            return
        if n == 6 and buf[3] == 0xFF and buf[4] == 0:  # NACK: resend
            self.nacks += 1
            self._queue(self.last)
            return
        if n == 6:
            return  # ACK (abort)
        cmd = buf[6]
        self._queue(P.ACK)
        self._queue(self.garbage)
        self.garbage = b""
        self.last = self.frames[cmd]
        if self.corrupt:
            self.corrupt -= 1
            bad = bytearray(self.last)
            bad[-2] ^= 0xFF
            self._queue(bad)
        else:
            self._queue(self.last)

    def readinto(self, buf):
        n = 0
        while n < len(buf) and self.qp < self.qn:
            buf[n] = self.q[self.qp]
            n += 1
            self.qp += 1
        if self.qp == self.qn:
            self.qp = self.qn = 0
        return n

    def wait(self, ms):
        pass

    def wake(self):
        pass


def _chip(answers=None):
    a = {0x14: b"", 0x02: b"\x32\x01\x06\x07", 0x32: b"", 0x4A: b"\x00", 0x52: b"\x00"}
    if answers:
        a.update(answers)
    link = ScriptLink(a)
    return P.PN532(link, ack_ms=20, resp_ms=40), link


def test_nfc_pn532_nack_resync_and_recovery():
    pn, link = _chip()
    pn.init()
    check(not pn.need_init and pn.frames_out == 4)
    link.corrupt = 1
    link.garbage = b"\x55\xaa\x13\x37"
    check(not pn.list_target())
    check(link.nacks == 1 and pn.naks == 1 and pn.dec.garbage >= 4)
    # the chip stops answering: BAD_READ, marked for re-init; the poller backs
    # off, then recovers once the chip answers again
    board = _Board()
    nfc = Nfc(pn)
    nfc.configure(None, 12)
    link.silent = True
    check(nfc.poll(board) == 0 and pn.need_init)
    check(nfc.poll(board) == 0 and nfc.chip_errors == 1)  # re-init timed out
    writes = link.written
    check(nfc.poll(board) == 0 and link.written == writes, "re-init is rate-limited")
    link.silent = False
    nfc._retry_at = 0
    check(nfc.poll(board) == 0 and not pn.need_init and pn.inits == 3)
    # the error frame is a syntax error, not a time-out
    link.frames[0x4A] = unhex("0000ff01ff7f8100")
    check("syntax" in rig.expect_error(pn.list_target) and not pn.need_init)


class _Board:
    def __init__(self):
        self.card = bytearray(8)
        self.tap_kind = 0
        self.tap_floor = 0
        self.tap_failure = 0


def test_nfc_poll_does_not_allocate():
    pn, link = _chip()
    nfc = Nfc(pn)
    nfc.configure(bytes(16), 12)
    board = _Board()
    check(nfc.poll(board) == 0 and not pn.need_init)  # init + first poll
    # and a card left in the field is not read again
    held, hl = _chip({0x4A: unhex("01010004080400000001")})
    hnfc = Nfc(held)
    hnfc.configure(None, 12)
    check(hnfc.poll(board) == codes.TAP_LEGACY_UID and bytes(board.card) == unhex("0000000000000001"))
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(200):
            nfc.poll(board)
            hnfc.poll(board)
        after = gc.mem_alloc()
    finally:
        gc.enable()
    check(after == before, "400 polls allocated %d bytes" % (after - before))
    check(pn.frames_out == 5 + 200 and hnfc.taps == 1)


def test_nfc_counter_table_bounded_and_persisted():
    t = CounterTable(4)
    ids = [bytes((0, 0, 0, 0, 0, 0, 0, i)) for i in range(6)]
    for i in range(4):
        check(t.fresh(ids[i], 5))
        t.accept(ids[i], 5)
    check(not t.fresh(ids[0], 5) and t.fresh(ids[0], 6))
    t.accept(ids[0], 7)  # ids[1] is now the least recently used
    t.accept(ids[4], 1)
    check(t.find(ids[1]) < 0 and not t.fresh(ids[0], 7) and not t.fresh(ids[4], 1))
    t.save()
    u = CounterTable(4)
    check(u.load() == 4 and not u.fresh(ids[0], 7) and u.fresh(ids[0], 8) and not u.fresh(ids[3], 5))
    with open("sun.ctr", "r+b") as f:
        f.seek(10)
        f.write(b"\xff")
    check(CounterTable(4).load() == 0, "a damaged file is not trusted")


def test_nfc_reconfigure_keeps_counters_not_yet_saved():
    # A CONFIG after a tap, before idle saved the counters: the counter just
    # accepted must still refuse its replay.
    nfc = Nfc(None)
    nfc.configure(None, 12)
    card = bytes((0, 0, 0, 0, 0, 0, 0, 9))
    nfc.counters.accept(card, 41)
    check(nfc.counters.dirty)
    nfc.configure(None, 12)
    check(not nfc.counters.fresh(card, 41), "a reconfigure forgot an unsaved counter")
    check(nfc.counters.fresh(card, 42))


def test_nfc_config_read_master():
    from liftcard import config as configmod

    good = dict(rig.CONFIG, read_master="00112233445566778899aabbccddeeff")
    check(configmod.validate(good)["read_master"] == unhex("00112233445566778899aabbccddeeff"))
    check("read_master" not in configmod.validate(rig.CONFIG))
    for bad in (
        "00112233445566778899aabbccddeef",
        "zz112233445566778899aabbccddeeff",
        12,
        "00112233445566778899aabbccddeeff00",
    ):
        msg = rig.expect_error(configmod.validate, dict(rig.CONFIG, read_master=bad))
        check("read_master must be 32 hex digits" in msg, msg)
        check(type(bad) is not str or bad[4:] not in msg, "the key leaked into %r" % msg)
