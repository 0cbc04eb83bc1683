# NTAG 424 SUN counters shared through the gateway (docs/uplink.md, SUNCTR;
# docs/nfc.md): a down SUNCTR, sealed here as the gateway seals it, goes
# through the reader's own Uplink._on_msg (real codec, real counter table) and
# a following tap of an NTAG whose SUN carries that counter is a REPLAY; a
# lower counter never lowers the table; the counters accepted at taps go up
# in one SUNCTR from idle time, once. No broker.
import gc

# The uplink is compiled first, while the heap is still empty (as test_wlrecv).
import liftcard.uplink  # noqa: F401

gc.collect()

import struct

import rig
from rig import check, unhex, vector_cases
from liftcard import codes
from liftcard import pn532 as P
from liftcard import uplinkcodec as uc
from liftcard.nfc import Nfc

CFG = {}
for _k in rig.CONFIG:
    CFG[_k] = rig.CONFIG[_k]
CFG["uplink"] = {"host": "127.0.0.1", "port": 1, "password": "pw-never-used", "keepalive_s": 60}


class FakePN:
    # A PN532 answering InDataExchange from a recorded NTAG tap transcript.
    def __init__(self, frames, uid):
        self.frames = frames
        self.i = 0
        self.out = bytearray(P.MAX_BODY)
        self.rx = bytearray(P.MAX_BODY)
        self.uid = bytearray(10)
        self.uid[: len(uid)] = uid
        self.uid_len = len(uid)
        self.sak = 0x20
        self.need_init = False

    def exchange(self, n):
        f = self.frames[self.i]
        self.i += 1
        r = unhex(f["recv"])
        self.rx[P.DIN : P.DIN + len(r)] = r
        return len(r)


class Gateway:
    # Seals down messages with the reader codec's own AES and MAC (the same
    # link keys; the vectors prove the gateway's codec agrees).
    def __init__(self, r):
        self.c = r.uplink.codec
        self.n = 0
        self.msg = bytearray(uc.HEADER_LEN + uc.MAX_SUN * uc.SUN_ENTRY_LEN + uc.MAC_LEN)

    def sunctr(self, entries):
        body = b""
        for card, ctr in entries:
            body += card + bytes(((ctr >> 16) & 0xFF, (ctr >> 8) & 0xFF, ctr & 0xFF))
        self.n += 1
        msg = self.msg
        n = len(body)
        struct.pack_into(
            ">4sBBHIIII", msg, 0, uc.MAGIC, 1, uc.SUNCTR_DOWN, 0, rig.READER_ID, rig.BUILDING_ID, 9, self.n
        )
        self.c._crypt(body, 0, msg, uc.HEADER_LEN, n, msg)
        m = self.c._mac
        m.start()
        m.update(memoryview(msg)[: uc.HEADER_LEN + n])
        msg[uc.HEADER_LEN + n : uc.HEADER_LEN + n + uc.MAC_LEN] = m.digest()
        # A memoryview, as the uplink hands over its receive buffer: decrypted
        # in place, so no second 4 KB body buffer is taken from the heap.
        return memoryview(bytearray(memoryview(msg)[: uc.HEADER_LEN + n + uc.MAC_LEN]))


def _setup():
    v = None
    for _, v in vector_cases("nfc.jsonl", "ntag_tap"):
        break
    # A small ride log: its sector tables are heap this test, which holds the
    # NFC stack, the uplink and its own vectors in 192K, does not need.
    r = rig.configured_reader(prefix="s", cfg=CFG, keep_output=False, log_size=64 * 1024)
    check(r.uplink is not None)
    nfc = Nfc(None)
    nfc.configure(unhex(v["read_master"]), v["building_id"])
    r.nfc = nfc
    return r, v, Gateway(r)


def _tap(r, v):
    card = bytearray(8)
    r.nfc.pn = FakePN([{"recv": "6e00"}] + v["frames"], unhex(v["uid"]))
    kind = r.nfc._read(card)
    check(rig.hexs(card) == v["card_id"])
    return kind


def test_sun_down_counter_makes_a_replay_at_this_reader():
    r, v, gw = _setup()
    u = r.uplink
    cid = unhex(v["card_id"])
    ctr = v["counter"]
    other = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    # The SUN was seen at another reader of the building: the gateway forwards its counter.
    u._on_msg(u.t_down, gw.sunctr([(other, 3), (cid, ctr)]))
    check(u.refused == 0 and u.sun_merged == 2, "merged: %d, refused %d" % (u.sun_merged, u.refused))
    t = r.nfc.counters
    check(t.dirty, "to be saved from idle time")
    check(_tap(r, v) == codes.TAP_FAILED, "the recorded SUN replayed here is a REPLAY")
    # A lower counter neither lowers the table nor counts as merged.
    u._on_msg(u.t_down, gw.sunctr([(cid, ctr - 1), (other, 0)]))
    check(u.sun_merged == 2 and t.ctr[t.find(cid)] == ctr and t.ctr[t.find(other)] == 3)
    check(_tap(r, v) == codes.TAP_FAILED)
    # A replayed down message (same counter) is refused by the codec.
    raw = bytes(gw.sunctr([(other, 9)]))
    u._on_msg(u.t_down, memoryview(bytearray(raw)))
    u._on_msg(u.t_down, memoryview(bytearray(raw)))
    check(u.refused == 1 and t.ctr[t.find(other)] == 9)
    # Forwarded counters are not sent back up.
    check(not t.unsent_slots(64))
    # Saved as the table always is; a reboot keeps it.
    t.save()
    t.load()
    check(t.ctr[t.find(cid)] == ctr)


def test_sun_lower_down_counter_still_lets_the_card_in_and_goes_up():
    r, v, gw = _setup()
    u = r.uplink
    cid = unhex(v["card_id"])
    u._on_msg(u.t_down, gw.sunctr([(cid, v["counter"] - 1)]))
    check(_tap(r, v) == codes.TAP_CREDENTIAL, "a newer counter than the building's is a fresh tap")
    sent = []
    u.client.publish = lambda topic, msg: sent.append((topic, bytes(msg)))
    check(u._send_sun() and len(sent) == 1, "one SUNCTR up")
    topic, msg = sent[0]
    check(topic == u.t_up and len(msg) == uc.HEADER_LEN + uc.SUN_ENTRY_LEN + uc.MAC_LEN and msg[5] == uc.SUNCTR_UP)
    check(msg.find(cid) < 0, "the card id is not in clear")
    check(not u._send_sun() and len(sent) == 1, "sent once")
