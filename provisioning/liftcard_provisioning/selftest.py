"""liftcard-provision selftest: the reader's own account of itself, over USB.

On the board (raw REPL, the reader stopped), a snippet does what main.py does
up to the reader's loop: the board (its profile's pins, or the host board on
the virtual board), ``Reader(board).boot()`` (filesystem, ride log, clock,
config, whitelist, NFC, network objects), then, if the config has Wi-Fi or an
uplink, runs the reader's ``idle()`` for ``--settle`` seconds so the station
can join and the MQTT link connect, then prints the reader's STATUS (the same
fields the line protocol's STATUS gives) and, where a PN532 is configured, its
GetFirmwareVersion. Then it drives the outputs as a tap does: the relay for
``PULSE_MS`` with the green LED and the short beep, then the red LED and the
deny beep, so the technician hears the relay click (the virtual board reports
them on its test port). Booting the reader logic counts as a boot (boot.cnt).

Each line of the table is OK, WARN (worth a look, not a fault) or FAIL; any
FAIL makes the exit code 1. What a board cannot report is said as such: the
virtual board has no PN532 unless its rig gives it one, and its network link
is always up (the host board has no Wi-Fi).
"""

from __future__ import annotations

import json

from .boardlink import Board, BoardError

HEAP_FAIL = 12 * 1024  # less free heap than this after boot: the reader will not last
HEAP_WARN = 24 * 1024
PULSE_MS = 300  # the relay's test pulse: long enough to hear, short of a ride's 4 s

_SNIPPET = """
import sys, gc, json, time
from liftcard import config as _C
if sys.platform == 'esp32':
    from liftcard.board_esp32 import Board as _B
    _b = _B(_C.board_name())
else:
    from board_host import Board as _B
    # The host board's images: main.py's argv, which the virtual serial board
    # sets at a raw-REPL boot too (liftcard_testing.virtualboard).
    if '--flash' not in sys.argv:
        raise OSError('host board: images unknown')
    _b = _B.from_argv(sys.argv)
from liftcard.reader import Reader as _R
_r = _R(_b)
_r.boot()
_settle = %d
if _r.cfg is not None and (_r.net is not None or _r.uplink is not None):
    _t0 = _b.ticks_ms()
    while _b.ticks_diff(_b.ticks_ms(), _t0) < _settle:
        _r.idle()
        _up = (_r.net is None or _r.net.describe() == 'up') and (_r.uplink is None or _r.uplink.describe() == 'up')
        # Once linked, the gateway answers the reader's first STATUS with the
        # time and, if it has the building's cards, the whitelist: wait for
        # them too, or a healthy new reader would show them missing.
        if _up and (_r.uplink is None or (_r.clock.synced and _r.wl is not None and _r.wl.version)):
            break
        time.sleep_ms(50)
gc.collect()
_st = json.loads(_r.status()[7:])
_st['platform'] = sys.platform
_st['nfc_chip'] = None
if _r.nfc is not None:
    try:
        _p = _r.nfc.pn
        _p.init()
        _p.out[0] = 2
        _n = _p.command(1)
        _st['nfc_chip'] = [int(x) for x in _p.rx[2:2 + _n]]
    except Exception as e:
        _st['nfc_chip'] = 'error: %%s' %% e
# The outputs, as a tap drives them: relay and green LED with the short beep,
# then the red LED with the deny beep; the technician hears the click.
_t = _b.ticks_ms()
_b.signal(True, %d)
while _b.relay_on and _b.ticks_diff(_b.ticks_ms(), _t) < 3000:
    _b.service()
    time.sleep_ms(5)
_st['relay_ms'] = _b.ticks_diff(_b.ticks_ms(), _t) if not _b.relay_on else -1
_b.signal(False, 0)
_t = _b.ticks_ms()
while _b.ticks_diff(_b.ticks_ms(), _t) < 500:
    _b.service()
    time.sleep_ms(5)
if _r.uplink is not None:
    _r.uplink.close()
if _r.net is not None:
    _r.net.close()
print('SELFTEST ' + json.dumps(_st))
"""


def board_code(settle_s: float) -> str:
    """What selftest runs on the board: it prints one ``SELFTEST {json}`` line."""
    return _SNIPPET % (int(settle_s * 1000), PULSE_MS)


def gather(board: Board, settle_s: float) -> dict:
    try:
        out = board.exec(board_code(settle_s), timeout=settle_s + 30)
    except BoardError as e:
        if "ImportError" not in str(e):
            raise
        raise BoardError(
            "no reader firmware on %s (%s): run liftcard-provision deploy first" % (board.port, str(e).split(": ")[-1])
        ) from None
    for line in out.splitlines():
        if line.startswith("SELFTEST "):
            try:
                return json.loads(line[len("SELFTEST ") :])
            except ValueError:
                break
    raise BoardError(
        "the reader on %s gave no status: is the firmware deployed (liftcard-provision deploy)?" % board.port
    )


def checks(st: dict) -> list[tuple[str, str, str]]:
    """(check, state, what the board reported) rows."""
    rows = []
    virtual = st.get("platform") != "esp32"
    rows.append(("firmware", "OK", "%s (%s)" % (st.get("fw"), st.get("platform"))))
    err = st.get("error")
    if st.get("reader_id"):
        rows.append(
            (
                "config",
                "OK",
                "reader %s, building %s" % (st["reader_id"], st.get("building_id")),
            )
        )
    else:
        rows.append(("config", "FAIL", (err or "no config") + " (liftcard-provision configure)"))
    wl = st.get("whitelist_version", 0)
    if st.get("reader_id") and err and not (not wl and "whitelist" in err):  # that one is the whitelist row
        rows.append(("reader", "FAIL", err))
    if wl:
        rows.append(("whitelist", "OK", "version %d, %d cards" % (wl, st.get("cards", 0))))
    elif st.get("uplink") == "up":
        why = "none from the gateway yet: it sends one once it has the building's cards from the bank"
        rows.append(("whitelist", "FAIL", why))
    else:
        rows.append(("whitelist", "FAIL", "none yet (the gateway sends it once the uplink is up)"))
    full = st.get("log_full")
    unlogged = st.get("unlogged_rides", 0)
    rows.append(
        (
            "flash log",
            "FAIL" if full or unlogged else "OK",
            "%d rides not yet acked of %d slots, next seq %d%s%s, %d erases"
            % (
                st.get("backlog", 0),
                st.get("log_capacity", 0),
                st.get("next_seq", 0),
                ", FULL" if full else "",
                ", %d rides granted unlogged" % unlogged if unlogged else "",
                st.get("erases", 0),
            ),
        )
    )
    rows.append(
        (
            "clock",
            "OK" if st.get("clock_synced") else "WARN",
            "%s s since the liftcard epoch, %s"
            % (st.get("time"), "synced" if st.get("clock_synced") else "not synced"),
        )
    )
    heap = st.get("heap_free", 0)
    rows.append(("free heap", "FAIL" if heap < HEAP_FAIL else "WARN" if heap < HEAP_WARN else "OK", "%d bytes" % heap))
    if "net" in st:
        note = " (virtual board: the host's network, always up)" if virtual else ""
        rows.append(("Wi-Fi", "OK" if st["net"] == "up" else "FAIL", st["net"] + note))
    else:
        rows.append(("Wi-Fi", "OK", "not configured"))
    if "uplink" in st:
        e = st.get("uplink_error")
        rows.append(("uplink", "OK" if st["uplink"] == "up" else "FAIL", st["uplink"] + (": " + e if e else "")))
    else:
        rows.append(("uplink", "OK", "not configured (offline reader)"))
    pulse = st.get("relay_ms")
    if pulse is not None:
        if pulse < 0:
            rows.append(("relay", "FAIL", "switched on for a %d ms pulse but not off again" % PULSE_MS))
        else:
            rows.append(
                (
                    "relay",
                    "OK",
                    "pulsed %d ms with the green LED and the short beep, then the red LED and the deny beep: "
                    "listen for the click" % pulse,
                )
            )
    chip = st.get("nfc_chip")
    if isinstance(chip, list) and len(chip) == 4 and chip[0] == 0x32:
        rows.append(("NFC chip", "OK", "PN5%02X firmware %d.%d" % (chip[0], chip[1], chip[2])))
    elif chip is None:
        why = "no PN532 on the virtual board" if virtual else "no NFC front end (reader not configured)"
        rows.append(("NFC chip", "WARN" if not virtual else "OK", why))
    else:
        rows.append(("NFC chip", "FAIL", "PN532 not answering: %s" % chip))
    return rows


def table(rows) -> str:
    return "\n".join("%-10s %-4s  %s" % r for r in rows)
