# Power cut at every flash write (ride burst, whitelist replacement, deltas):
# after a reboot every ride signalled before the cut is there exactly once,
# sequence numbers strictly increase, money adds up, and the whitelist is
# wholly one version.
import rig
from rig import check, tap, card_id, record
from liftcard import codes
from hostflash import PowerLoss
from liftcard.fees import month_of_day

HOUSEHOLDS = 6
# Building hundreds of test records is the harness's work, not the reader's:
# those steps alone get a larger heap; every step that runs a reader has 192K.
DATA_HEAP = "2M"


def _cards(n, variant=0):
    out = []
    for i in range(1, n + 1):
        floors = 1 | (1 << (1 + (i + variant) % 6))
        status = 1 if (i + variant) % 17 == 0 else 0
        out.append(record(card_id(i), 100 + i % HOUSEHOLDS, floors, status=status))
    return out


def _quiet(r):
    # Make the next idle() act now: no recent tap, checkpoint interval elapsed.
    ms = r.board.ticks_ms()
    r._last_tap_ms = ms - 100000
    r._last_save_ms = ms - 1000000


def _verify_rides(prefix, signalled, acked, base_last):
    r = rig.boot(prefix, keep_output=False)
    recs = rig.all_records(r)
    seqs = [rig.seq(x) for x in recs]
    for a, b in zip(seqs, seqs[1:]):
        check(a < b, "sequence not strictly increasing: %r" % seqs)
    new = [[rig.seq(x), rig.hexs(x[12:20])] for x in recs if rig.seq(x) > base_last]
    check(new == signalled, "signalled %r but log holds %r" % (signalled, new))
    if acked:
        check(r.log.acked >= acked[-1], "ack lost")
    # Money: the rebuilt spend equals the logged fees of this month.
    month = r.fees.month
    for hh in range(100, 100 + HOUSEHOLDS):
        logged = 0
        for x in recs:
            household = (x[20] << 16) | (x[21] << 8) | x[22]
            t = (x[4] << 24) | (x[5] << 16) | (x[6] << 8) | x[7]
            if household == hh and x[26] == codes.GRANTED and month_of_day((t + 28800) // 86400) == month:
                logged += rig.fee(x)
        check(r.fees.spent(hh) == logged, "household %d spend %d != logged %d" % (hh, r.fees.spent(hh), logged))
    # The next ride never reuses a sequence number.
    top = seqs[-1] if seqs else 0
    tap(r, card_id(1), 0)
    check(r.log.last_seq > top)
    rig.shutdown(r)


def _burst(r, signalled, acked):
    # Taps across a sector boundary with acks, checkpoints and erase-ahead
    # in between, as a busy morning with the gateway online would have them.
    for i in range(24):
        cid = card_id(1 + (i * 7) % 40)
        tap(r, cid, 0 if i % 3 else 4)
        signalled.append([r.log.last_seq, rig.hexs(cid)])
        if i % 6 == 5:
            upto = r.log.last_seq - 2
            r.command("ACK %d" % upto)
            acked.append(upto)
            _quiet(r)
            r.idle()  # checkpoint the spend table
            _quiet(r)
            r.idle()  # erase ahead


def cut_burst(cut):
    # One power-on: the burst on a copy of the base images, power cut at write
    # number cut + 1; what was signalled before the cut is saved for the check.
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rig.arm(r, int(cut))
    signalled = []
    acked = []
    try:
        _burst(r, signalled, acked)
    except PowerLoss:
        pass
    rig.save_json("signalled.json", {"signalled": signalled, "acked": acked})
    rig.shutdown(r)


def verify_burst(base_last):
    # The next power-on: boots from the images the cut left behind.
    got = rig.load_json("signalled.json")
    _verify_rides("run", got["signalled"], got["acked"], int(base_last))


def prepare_burst():
    r = rig.configured_reader(prefix="base", cards=_cards(40), keep_output=False)
    # Fill the first sector almost full, acked, so the burst crosses into the next.
    for i in range(120):
        tap(r, card_id(1 + i % 40), 0)
    r.command("ACK 110")
    base_last = r.log.last_seq
    rig.shutdown(r)
    r = None  # one reader in the heap at a time, as on the board
    # Dry run: how many flash writes the burst makes.
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rail = rig.arm(r)
    _burst(r, [], [])
    rig.save_json("plan.json", {"writes": rail.writes, "base_last": base_last})
    rig.shutdown(r)


def test_power_cut_at_every_write_of_a_ride_burst():
    # Each step runs in a process of its own: a power-on starts from nothing
    # but the flash images.
    rig.child("test_powerloss", "prepare_burst")
    plan = rig.load_json("plan.json")
    total = plan["writes"]
    check(total >= 30, "burst made only %d writes" % total)
    for cut in range(total + 1):
        rig.child("test_powerloss", "cut_burst", cut)
        rig.child("test_powerloss", "verify_burst", plan["base_last"])
    print("cut at each of", total, "writes")


def _check_wholly_one_version(prefix, versions):
    # Streams the expected version's full list from its file (no table of
    # expected cards in the 192K heap beside the reader).
    allowed = tuple(int(v) for v in versions.split(","))
    r = rig.boot(prefix, keep_output=False)
    v = r.wl.version
    check(v in allowed, "whitelist version %d after the cut" % v)
    rec = bytearray(16)
    with open(rig.path("wl-v%d.bin" % v), "rb") as f:
        hdr = f.read(32)
        n = (hdr[20] << 24) | (hdr[21] << 16) | (hdr[22] << 8) | hdr[23]
        for _ in range(n):
            f.readinto(rec)
            cid = bytes(rec[:8])
            check(r.wl.lookup(cid) and r.wl.rec == rec, "card %s differs from version %d" % (rig.hexs(cid), v))
    # The lists hold cards 1..n: the next ones must be absent.
    for i in range(n + 1, 302):
        check(not r.wl.lookup(card_id(i)), "card %d should not be in version %d" % (i, v))
    rig.shutdown(r)
    return v


def cut_commands(cut, *words):
    # One power-on: the commands (pairs of verb and file) on a copy of the
    # base images, power cut at write number cut + 1.
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rig.arm(r, int(cut))
    try:
        for i in range(0, len(words), 2):
            r.command(words[i] + " " + words[i + 1])
    except PowerLoss:
        pass
    rig.shutdown(r)


def verify_version(versions):
    v = _check_wholly_one_version("run", versions)
    try:
        seen = rig.load_json("seen.json")
    except OSError:
        seen = []
    if v not in seen:
        seen.append(v)
    rig.save_json("seen.json", seen)


def dry_run(*words):
    # Counts the flash writes the commands make, from the base images.
    rig.snapshot("base", "run")
    r = rig.boot("run", keep_output=False)
    rail = rig.arm(r)
    for i in range(0, len(words), 2):
        reply = r.command(words[i] + " " + words[i + 1])
        check(reply.startswith("OK"), reply)
    rig.save_json("plan.json", {"writes": rail.writes})
    rig.shutdown(r)


def make_replacement_data():
    rig.write_whitelist(rig.path("wl-v1.bin"), _cards(300), 1)
    rig.write_whitelist(rig.path("wl-v2.bin"), _cards(300, 1), 2)


def prepare_base():
    r = rig.configured_reader(prefix="base", cards=rig.path("wl-v1.bin"), keep_output=False)
    rig.shutdown(r)


def test_power_cut_at_every_write_of_a_whitelist_replacement():
    new = rig.path("wl-v2.bin")
    rig.child("test_powerloss", "make_replacement_data", heap=DATA_HEAP)
    rig.child("test_powerloss", "prepare_base")
    rig.child("test_powerloss", "dry_run", "WL", new)
    total = rig.load_json("plan.json")["writes"]
    for cut in range(total + 1):
        rig.child("test_powerloss", "cut_commands", cut, "WL", new)
        rig.child("test_powerloss", "verify_version", "1,2")
    seen = rig.load_json("seen.json")
    check(sorted(seen) == [1, 2], "both outcomes should occur: %r" % seen)
    print("cut at each of", total, "writes")


def _delta_ops(old, new):
    o = {c[:8]: c for c in old}
    n = {c[:8]: c for c in new}
    ops = []
    for k, c in n.items():
        if o.get(k) != c:
            ops.append((1, c))
    for k, c in o.items():
        if k not in n:
            ops.append((2, c))
    return ops


def _lost_card():
    return record(card_id(4), 104, 0b11, status=2)


def _delta_versions():
    v1 = _cards(300)
    v2 = [c for c in v1]
    v2[3] = _lost_card()  # one card lost
    # v2 -> v3: 236 cards move household and 20 leave: a full delta (256
    # operations) that, merged with the overlay's one, forces a compaction.
    v3 = []
    for i in range(1, 281):
        c = v2[i - 1]
        if i <= 237 and i != 4:
            c = record(card_id(i), 150 + i % HOUSEHOLDS, 0b111)
        v3.append(c)
    return v1, v2, v3


def make_delta_data():
    v1, v2, v3 = _delta_versions()
    d12 = rig.build_delta(_delta_ops(v1, v2), 1, 2)
    d23 = rig.build_delta(_delta_ops(v2, v3), 2, 3)
    check(len(d12) == 57, "one changed card costs %d bytes" % len(d12))
    check(len(d23) == 24 + 17 * 256 + 16, "the second delta should be full")
    with open(rig.path("d12.bin"), "wb") as f:
        f.write(d12)
    with open(rig.path("d23.bin"), "wb") as f:
        f.write(d23)
    rig.write_whitelist(rig.path("wl-v1.bin"), v1, 1)
    rig.write_whitelist(rig.path("wl-v2.bin"), v2, 2)
    rig.write_whitelist(rig.path("wl-v3.bin"), v3, 3)


def check_compacted():
    r = rig.boot("run", keep_output=False)
    check(r.wl.version == 3 and r.wl.base_version == 3, "the deltas should have been compacted into the base list")
    rig.shutdown(r)


def test_power_cut_at_every_write_of_deltas_and_compaction():
    d12, d23 = rig.path("d12.bin"), rig.path("d23.bin")
    rig.child("test_powerloss", "make_delta_data", heap=DATA_HEAP)
    rig.child("test_powerloss", "prepare_base")
    rig.child("test_powerloss", "dry_run", "DELTA", d12, "DELTA", d23)
    rig.child("test_powerloss", "check_compacted")
    total = rig.load_json("plan.json")["writes"]
    for cut in range(total + 1):
        rig.child("test_powerloss", "cut_commands", cut, "DELTA", d12, "DELTA", d23)
        rig.child("test_powerloss", "verify_version", "1,2,3")
    seen = rig.load_json("seen.json")
    check(sorted(seen) == [1, 2, 3], "every outcome should occur: %r" % seen)
    print("cut at each of", total, "writes")
