# The uplink's AES-CTR never uses a keystream block twice (docs/uplink.md,
# "The nonce rule"): every block the reader's codec encrypts is recorded with
# its key, through reconfigures (same key, a new key, back to the first), an
# uplink dropped and added again, reboots, and a power cut at every flash
# write of a power-on, all in one timeline; no (key, block) may repeat.
#
# The uplink is compiled first, while the heap is still empty (as test_wlrecv).
import liftcard.uplink  # noqa: F401

import cryptolib

import rig
from rig import check, tap, card_id, record
from liftcard import uplinkcodec
from board_host import Board
from hostflash import PowerLoss, Rail
from liftcard.reader import Reader

KEY2_HEX = "11" * 32
LOG = "nonces.bin"  # key (16) | counter block (16), one per AES block encrypted


class _RecordingAes:
    # cryptolib.aes in ECB mode, writing down every block it encrypts.
    def __init__(self, key, mode):
        self.key = bytes(key)
        self.aes = cryptolib.aes(key, mode)

    def encrypt(self, blk, out):
        with open(rig.path(LOG), "ab") as f:
            f.write(self.key)
            f.write(blk)
        self.aes.encrypt(blk, out)


class _RecordingCryptolib:
    aes = _RecordingAes


uplinkcodec.cryptolib = _RecordingCryptolib


def _cfg(key_hex=rig.KEY_HEX, uplink=True):
    c = {}
    for k in rig.CONFIG:
        c[k] = rig.CONFIG[k]
    c["key"] = key_hex
    if uplink:
        c["uplink"] = {"host": "127.0.0.1", "port": 1, "password": "pw-never-used", "keepalive_s": 60}
    return c


def _configure(r, cfg):
    reply = r.command("CONFIG " + rig.write_config(cfg))
    check(reply.startswith("OK"), reply)


def _send(r):
    # What a connected uplink sends: a heartbeat, a RIDES batch (resent, as
    # after an unanswered one), a heartbeat. The broker is not needed for
    # that: publish goes nowhere.
    u = r.uplink
    check(u is not None, "no uplink")
    u.client.publish = lambda topic, msg: None
    ms = r.board.ticks_ms()
    tap(r, card_id(1), 0)
    u._send_status(ms, True)
    for _ in range(2):
        u._inflight = 0
        check(u._send_rides(ms), "no rides sent")
    u._send_status(ms, True)


def prepare():
    r = rig.configured_reader(prefix="n", cards=[record(card_id(1), 101)], cfg=_cfg(), keep_output=False)
    _send(r)
    _configure(r, _cfg())  # the same config again: a technician's configure
    _send(r)
    r.command("ACK %d" % r.log.last_seq)  # a key changes only over an acknowledged log
    _configure(r, _cfg(KEY2_HEX))  # a new key
    _send(r)
    r.command("ACK %d" % r.log.last_seq)
    _configure(r, _cfg())  # back to the first key
    _send(r)
    _configure(r, _cfg(uplink=False))  # the uplink dropped...
    check(r.uplink is None)
    _configure(r, _cfg())  # ... and back
    _send(r)
    rig.shutdown(r)


def power_on(cut):
    # One power-on of the timeline: boot and send with power failing at flash
    # write number cut + 1; if it failed, the next power-on (no cut) sends
    # too. Saves whether the cut came.
    rail = Rail(int(cut))
    r = Reader(Board(rig.path("n-fs.img"), rig.path("n-log.img"), stdin=None, stdout=rig.Sink(False), rail=rail))
    cut_came = False
    try:
        r.boot()
        _send(r)
    except PowerLoss:
        cut_came = True
    rig.shutdown(r)
    r = None
    if cut_came:
        r = rig.boot("n", keep_output=False)
        _send(r)
        rig.shutdown(r)
    rig.save_json("cut.json", {"came": cut_came, "writes": rail.writes})


def check_unique():
    seen = {}
    n = 0
    with open(rig.path(LOG), "rb") as f:
        while True:
            b = f.read(32)
            if not b:
                break
            check(len(b) == 32)
            check(b not in seen, "keystream block used twice: block %d repeats block %d" % (n, seen.get(b, -1)))
            seen[b] = n
            n += 1
    keys = {}
    for b in seen:
        keys[b[:16]] = 1
    check(len(keys) == 2, "both keys used")
    print("blocks", n, "all distinct")


def test_no_keystream_block_is_used_twice():
    rig.child("test_nonces", "prepare")
    cut = 0
    while True:
        rig.child("test_nonces", "power_on", cut)
        if not rig.load_json("cut.json")["came"]:
            break
        cut += 1
    check(cut >= 3, "the power-ons made only %d writes" % cut)  # boot count: new file, rename; the tap
    rig.child("test_nonces", "check_unique", heap="2M")
    print("power cut at each of", cut, "writes")
