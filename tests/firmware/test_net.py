# The network link's state machine (liftcard/net.py) over the host board's
# Wi-Fi model: joined at once, dropped and restored by the test hook
# (board.link_ok), rejoined with a doubling backoff, and the uplink stepped
# only while the link is up. The clock is the test's: no timing is asserted.
import liftcard.uplink  # noqa: F401  (compiled while the heap is empty, as test_wlrecv)

import json

import rig
from rig import check
from liftcard.net import Net

WIFI = {"ssid": "Lift Net 7", "password": "wpa2 pass~word"}


class Radio:
    # The board side of net.py with a manual clock: link_ok is the access point.
    def __init__(self):
        self.ms = 1000
        self.link_ok = True
        self.joined = False
        self.starts = []
        self.stops = 0

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    def net_start(self, w):
        self.starts.append(w)
        self.joined = True

    def net_up(self):
        return self.joined and self.link_ok

    def net_rssi(self):
        return -61

    def net_stop(self):
        self.stops += 1
        self.joined = False


def test_net_joins_drops_and_rejoins_with_backoff():
    b = Radio()
    n = Net(b, WIFI)
    check(n.describe() == "down" and not n.up and n.rssi() == 0)
    n.step()
    check(n.describe() == "joining" and b.starts == [WIFI] and n.joins == 1)
    n.step()
    check(n.up and n.describe() == "up" and n.rssi() == -61)
    # The access point goes away: one drop, reported once.
    b.link_ok = False
    check(n.step() is True and n.describe() == "down" and n.drops == 1 and b.stops == 1)
    check(n.step() is False)
    # Rejoin attempts back off: 2 s, then (a join timing out after 20 s) 4 s, 8 s ...
    waits = []
    for _ in range(4):
        t0 = b.ms
        while n.describe() == "down":
            b.ms += 100
            n.step()
        waits.append(b.ms - t0)
        check(n.describe() == "joining")
        while n.describe() == "joining":
            b.ms += 1000
            n.step()
    check(waits == [2000, 4000, 8000, 16000], "backoff %r" % waits)
    # Back: up at the next attempt, and the backoff starts again from 2 s.
    b.link_ok = True
    while not n.up:
        b.ms += 100
        n.step()
    b.link_ok = False
    n.step()
    t0 = b.ms
    while n.describe() == "down":
        b.ms += 100
        n.step()
    check(b.ms - t0 == 2000)


def test_net_backoff_is_capped():
    b = Radio()
    b.link_ok = False
    n = Net(b, None)
    gaps = []
    last = None
    for _ in range(2000):
        b.ms += 1000
        n.step()
        if n.describe() == "joining" and last != n.joins:
            last = n.joins
            gaps.append(b.ms)
    d = [gaps[i + 1] - gaps[i] for i in range(len(gaps) - 1)]
    # The cap (2 min) plus one join attempt (20 s) and the step (1 s).
    check(max(d) <= 120000 + 20000 + 1000, "gaps %r" % d)
    check(d[-1] == d[-2], "the backoff should settle at its cap: %r" % d)


def _reader(**extra):
    cfg = dict(rig.CONFIG)
    cfg["uplink"] = {"host": "127.0.0.1", "port": 1, "password": "pw-never-used", "keepalive_s": 60}
    cfg.update(extra)
    return rig.configured_reader(cfg=cfg, keep_output=False)


def _status(r):
    s = r.status()
    check(s.startswith("STATUS "))
    return json.loads(s[7:])


def test_net_reader_status_and_uplink_only_while_up():
    r = _reader(wifi=WIFI)
    b = r.board
    check(r.net is not None and r.net.wcfg == WIFI)
    b.link_ok = False  # no access point yet
    for _ in range(5):
        r.idle()
    st = _status(r)
    check(st["net"] in ("down", "joining") and st["net_rssi"] == 0, st)
    check(r.uplink.connects == 0, "the uplink connected without a link")
    check(b.net_cfg == WIFI, "the board was given the config's wifi section")
    b.link_ok = True
    for _ in range(3):
        r.idle()
    st = _status(r)
    check(st["net"] == "up" and st["net_rssi"] == -48 and st["net_joins"] >= 1, st)
    check(r.uplink.connects >= 1, "the uplink never tried once the link was up")
    # The link drops: the uplink's socket goes with it, and it waits.
    b.link_ok = False
    r.idle()
    st = _status(r)
    check(st["net"] == "down" and st["net_drops"] == 1 and st["uplink"] == "down", st)
    n = r.uplink.connects
    for _ in range(5):
        r.idle()
    check(r.uplink.connects == n)
    line = r.status()
    check("wpa2 pass~word" not in line and "pw-never-used" not in line, "a password in STATUS")


def test_net_offline_reader_has_no_link_and_reconfigure_rejoins():
    r = rig.configured_reader(keep_output=False)
    check(r.net is None and '"net"' not in r.status())
    cfg = dict(rig.CONFIG, wifi=WIFI)
    check(r.command("CONFIG " + rig.write_config(cfg)).startswith("OK"))
    first = r.net
    check(first is not None)
    r.idle()
    r.idle()
    check(first.up)
    # The same network again: the link is kept. Another one: joined afresh.
    check(r.command("CONFIG " + rig.write_config(cfg)).startswith("OK"))
    check(r.net is first and first.up)
    other = dict(WIFI, ssid="Lift Net 8")
    check(r.command("CONFIG " + rig.write_config(dict(rig.CONFIG, wifi=other))).startswith("OK"))
    check(r.net is not first and r.net.wcfg == other and not r.net.up)
