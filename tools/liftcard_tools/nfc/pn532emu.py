"""PN532 emulator on a pty, speaking the HSU frame protocol of UM0701-02.

    emu = PN532Emulator(); emu.start()
    print(emu.path)              # open it as a serial port (any baud rate)
    emu.field.enter(card)        # a card enters the RF field
    emu.field.enter(card, leave_after=2)   # ... and leaves after 2 InDataExchange
    emu.field.leave()
    emu.faults.silence()         # the chip stops answering until emu.reset()
    emu.faults.garbage(b"\\x55\\xAA")  # junk bytes before the next frame it sends
    emu.faults.corrupt_next()    # next response frame has a wrong DCS (host NACKs, gets a resend)
    emu.reset()                  # hard reset (RSTPDN): asleep, no target, faults cleared
    emu.stats.exchanges          # frames and bytes per command, both directions + RF
    emu.stop()

    emu = PN532Emulator(i2c=True)    # the same chip on I2C (address 0x24): the pty
                                     # carries the bus transport below, not HSU bytes

    Reader(DirectPN(card), keys)     # no chip, no frames: the reference tap
                                     # procedure straight on one card

Command line (a MicroPython process can open the printed path):

    python -m liftcard_tools.nfc.pn532emu --cards spec.json
    -> prints the pty path on the first line, then reads control lines on
       stdin: "enter NAME [LEAVE_AFTER]", "leave", "silence", "reset",
       "garbage HEX", "corrupt", "stats", "quit"; each answered by one line
       ("ok", a JSON object for stats, or "error: ...").

Behaviour (documented in docs/nfc.md):
* Starts asleep (power-on LowVbat state on HSU): bytes are ignored until a
  0x55 wake-up byte arrives; then frames are parsed (resync on 00 FF).
* Every well-formed host information frame gets an ACK, then the response
  frame (TFI D5, command + 1). A frame with a wrong LCS or DCS is ignored
  (no ACK). A host NACK makes it resend its last response frame; a host ACK
  aborts a pending command (InListPassiveTarget waiting for a card).
  An unknown command or malformed parameters: ACK, then the error frame.
* Commands: GetFirmwareVersion 02, SAMConfiguration 14, RFConfiguration 32,
  InListPassiveTarget 4A (106 kbps type A only), InDataExchange 40,
  InCommunicateThru 42, InDeselect 44, InRelease 52.

I2C mode (UM0701-02 6.2.4; `PN532Emulator(i2c=True)`, `--i2c`): the pty stands
for the wires, one bus transaction per record (u16 big-endian):
  host -> emu  "W" LEN(2) BYTES    an I2C write to 0x24: one frame from the host
  host -> emu  "R" N(2)            an I2C read of N bytes from 0x24
  emu -> host  exactly N bytes     (answers each "R" only; a "W" has no answer)
A read answers the status byte, then the pending frame (ACK or response),
padded with 00 (the host may read a fixed length and ignore the rest):
* status 00 (rest 00) while asleep, silenced, with nothing to send (a command
  still running: InListPassiveTarget waiting for a card), and for the first
  read after every host write and after every frame taken, while more follow
  (the chip "busy": the host must poll again);
* status 01 + the frame otherwise. A 1-byte read is the status alone and
  takes nothing; a longer read takes the frame off the chip, whatever its
  length: to read a long frame again the host sends NACK (the chip resends
  its last response), as on the real chip.
A write while asleep only wakes the chip (I2C wakes it by its address; that
transaction is not taken as a frame). Every host write replaces what the
chip had still to send. Frames, commands, faults and stats as on HSU;
stats.i2c_writes / i2c_reads / not_ready count the bus transactions.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import threading
import time
import tty

from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import frames as Fr
from liftcard_provisioning.nfc.pcd import LinkError, Target

from .cards import SILENCE, Card, FaultyCard, MagicClone, MifareClassicCard, RfError, make_desfire, make_ntag424

FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])  # IC PN532, Ver 1, Rev 6, Support ISO18092/14443A/B


class Field:
    """The RF field in front of the antenna: zero or one card."""

    def __init__(self, emu: "PN532Emulator"):
        self._emu = emu
        self.card: Card | None = None
        self.leave_after: int | None = None
        self.exchanges = 0

    def enter(self, card: Card, leave_after: int | None = None) -> None:
        with self._emu.lock:
            card.power_on()
            self.card, self.leave_after, self.exchanges = card, leave_after, 0
            self._emu._card_entered()

    def leave(self) -> None:
        with self._emu.lock:
            self.card = None
            self.leave_after = None


class Faults:
    def __init__(self, emu: "PN532Emulator"):
        self._emu = emu
        self.silent = False
        self.pending_garbage = b""
        self.corrupt = 0

    def silence(self) -> None:
        with self._emu.lock:
            self.silent = True

    def garbage(self, data: bytes = b"\x55\xaa\x13\x37\xfe") -> None:
        with self._emu.lock:
            self.pending_garbage += bytes(data)

    def corrupt_next(self, n: int = 1) -> None:
        with self._emu.lock:
            self.corrupt += n


class Stats:
    """One record per host command: {"cmd", "host_frames", "host_bytes",
    "chip_frames", "chip_bytes", "rf_out", "rf_in"} (rf_* = bytes to / from
    the card in InDataExchange / InCommunicateThru)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.exchanges = []
        self.ignored_bytes = 0
        # I2C mode: bus transactions, and reads answered "not ready" (status 00)
        self.i2c_writes = 0
        self.i2c_reads = 0
        self.not_ready = 0

    def totals(self) -> dict:
        keys = ("host_frames", "host_bytes", "chip_frames", "chip_bytes", "rf_out", "rf_in")
        t = {k: sum(e[k] for e in self.exchanges) for k in keys}
        t["commands"] = len(self.exchanges)
        t["card_exchanges"] = sum(1 for e in self.exchanges if e["cmd"] in (0x40, 0x42))
        return t


class PN532Emulator:
    def __init__(self, response_delay: float = 0.0, i2c: bool = False):
        self.lock = threading.RLock()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.field = Field(self)
        self.faults = Faults(self)
        self.stats = Stats()
        self.response_delay = response_delay
        self.i2c = i2c
        self._bus_rx = bytearray()
        self._thread = None
        self._stop = threading.Event()
        self._reset_state()

    # -- lifecycle --
    def _reset_state(self) -> None:
        self.awake = False
        self.reader = Fr.FrameReader()
        self.target: Card | None = None
        self.pending_list = None
        self.last_response = b""
        self.mx_rty_passive = 0xFF
        self.rf_on = True
        self.sam_done = False
        self._outq: list[bytes] = []  # I2C: frames the host has still to read
        self._busy = False  # I2C: the next read answers "not ready"

    def reset(self) -> None:
        """Hard reset (the host pulses RSTPDN): back to the power-on state."""
        with self.lock:
            if self.target is not None:
                self.target.deselect()
            self._reset_state()
            self.faults.silent = False
            self.faults.pending_garbage = b""
            self.faults.corrupt = 0

    def start(self) -> "PN532Emulator":
        self._thread = threading.Thread(target=self._run, name="pn532emu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.master], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            with self.lock:
                if self.i2c:
                    self._bus(data)
                else:
                    self.feed(data)

    # -- byte level --
    def _send(self, data: bytes, stat: dict | None) -> None:
        if self.faults.pending_garbage:
            data = self.faults.pending_garbage + data
            self.faults.pending_garbage = b""
        if stat is not None:
            stat["chip_bytes"] += len(data)
            stat["chip_frames"] += 1
        if self.i2c:
            self._outq.append(data)
            return
        try:
            os.write(self.master, data)
        except OSError:
            pass

    # -- I2C bus transport (see the module doc) --
    def _bus(self, data: bytes) -> None:
        rx = self._bus_rx
        rx += data
        while len(rx) >= 3:
            op, n = rx[0], (rx[1] << 8) | rx[2]
            if op == 0x57:  # "W"
                if len(rx) < 3 + n:
                    return
                payload = bytes(rx[3 : 3 + n])
                del rx[: 3 + n]
                self._i2c_write(payload)
            elif op == 0x52:  # "R"
                del rx[:3]
                try:
                    os.write(self.master, self._i2c_read(n))
                except OSError:
                    pass
            else:
                del rx[:1]
                self.stats.ignored_bytes += 1

    def _i2c_write(self, data: bytes) -> None:
        self.stats.i2c_writes += 1
        if self.faults.silent:
            self.stats.ignored_bytes += len(data)
            return
        if not self.awake:
            self.awake = True  # addressed: wakes up; this transaction is lost
            self.stats.ignored_bytes += len(data)
            return
        self._outq = []
        self._busy = True
        self.reader = Fr.FrameReader()  # one transaction = one frame
        self._frames(data)

    def _i2c_read(self, n: int) -> bytes:
        self.stats.i2c_reads += 1
        if n == 0:
            return b""
        if self.faults.silent or not self.awake or self._busy or not self._outq:
            self._busy = False
            self.stats.not_ready += 1
            return bytes(n)
        if n == 1:
            return b"\x01"
        frame = self._outq.pop(0)
        self._busy = bool(self._outq)
        out = (b"\x01" + frame)[:n]
        return out + bytes(n - len(out))

    def _respond(self, cmd: int, payload: bytes, stat: dict) -> None:
        frame = Fr.encode(Fr.TFI_CHIP, bytes([cmd + 1]) + payload)
        self.last_response = frame
        if self.response_delay:
            time.sleep(self.response_delay)
        if self.faults.corrupt:
            self.faults.corrupt -= 1
            bad = bytearray(frame)
            bad[-2] ^= 0xFF  # wrong DCS
            self._send(bytes(bad), stat)
        else:
            self._send(frame, stat)

    def feed(self, data: bytes) -> None:
        """Bytes from the host (called with the lock held)."""
        if self.faults.silent:
            self.stats.ignored_bytes += len(data)
            return
        if not self.awake:
            i = data.find(b"\x55")
            if i < 0:
                self.stats.ignored_bytes += len(data)
                return
            self.awake = True
            self.stats.ignored_bytes += i
            data = data[i:]
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            f = self.reader.pop()
            if f is None:
                return
            if f.kind == "ack":
                self.pending_list = None
            elif f.kind == "nack":
                if self.last_response:
                    st = self.stats.exchanges[-1] if self.stats.exchanges else None
                    if st is not None:
                        st["host_frames"] += 1
                        st["host_bytes"] += len(f.raw)
                    self._send(self.last_response, st)
            elif f.kind == "info":
                self._command(f)
            # "bad" and "error" frames from the host are ignored (no ACK)

    # -- commands --
    def _command(self, f: Fr.Frame) -> None:
        stat = {
            "cmd": f.data[0] if f.data else -1,
            "host_frames": 1,
            "host_bytes": len(f.raw),
            "chip_frames": 0,
            "chip_bytes": 0,
            "rf_out": 0,
            "rf_in": 0,
        }
        self.stats.exchanges.append(stat)
        self._send(Fr.ACK, stat)
        if f.tfi != Fr.TFI_HOST or not f.data:
            self._send(Fr.ERROR_FRAME, stat)
            return
        cmd, p = f.data[0], f.data[1:]
        try:
            out = self._dispatch(cmd, p, stat)
        except _Syntax:
            self.last_response = Fr.ERROR_FRAME
            self._send(Fr.ERROR_FRAME, stat)
            return
        if out is not None:
            self._respond(cmd, out, stat)

    def _dispatch(self, cmd: int, p: bytes, stat: dict):
        if cmd == 0x02:
            return FIRMWARE
        if cmd == 0x14:  # SAMConfiguration Mode [Timeout [IRQ]]
            if not 1 <= len(p) <= 3 or not 1 <= p[0] <= 4:
                raise _Syntax()
            self.sam_done = True
            return b""
        if cmd == 0x32:  # RFConfiguration CfgItem ConfigurationData
            sizes = {0x01: 1, 0x02: 3, 0x04: 1, 0x05: 3, 0x0A: 11, 0x0B: 8, 0x0C: 3, 0x0D: 9}
            if not p or p[0] not in sizes or len(p) != 1 + sizes[p[0]]:
                raise _Syntax()
            if p[0] == 0x05:
                self.mx_rty_passive = p[3]
            elif p[0] == 0x01:
                self.rf_on = bool(p[1] & 0x01)
                if not self.rf_on and self.target is not None:
                    self.target.deselect()
                    self.target = None
            return b""
        if cmd == 0x4A:  # InListPassiveTarget MaxTg BrTy [InitiatorData]
            if len(p) < 2 or p[0] not in (1, 2):
                raise _Syntax()
            if p[1] != 0x00:
                raise _Syntax()  # only 106 kbps type A is emulated
            if self.target is not None:
                self.target.deselect()
                self.target = None
            if self._present() is None and self.mx_rty_passive == 0xFF:
                self.pending_list = stat  # answered when a card enters (or aborted by an ACK)
                return None
            return self._list()
        if cmd in (0x40, 0x42):  # InDataExchange Tg DataOut / InCommunicateThru DataOut
            if cmd == 0x40:
                if not p:
                    raise _Syntax()
                tg, data = p[0], p[1:]
                if tg & 0x3F != 1 or self.target is None:
                    return b"\x27"
            else:
                data = p
                if self.target is None:
                    return b"\x27"
            stat["rf_out"] += len(data)
            card = self.target
            fld = self.field
            if fld.card is not card:
                return bytes([SILENCE.code])  # the card left the field: no answer
            if fld.leave_after is not None and fld.exchanges >= fld.leave_after:
                fld.card = None
                fld.leave_after = None
                return bytes([SILENCE.code])
            fld.exchanges += 1
            r = card.transceive(bytes(data))
            if isinstance(r, RfError):
                return bytes([r.code])
            stat["rf_in"] += len(r)
            return b"\x00" + bytes(r)
        if cmd in (0x52, 0x44):  # InRelease / InDeselect Tg
            if len(p) != 1:
                raise _Syntax()
            if p[0] not in (0, 1) or (p[0] == 1 and self.target is None):
                return b"\x27"
            if self.target is not None:
                self.target.deselect()
                if cmd == 0x52:
                    self.target = None
            return b"\x00"
        raise _Syntax()

    def _present(self):
        return self.field.card if self.rf_on else None

    def _list(self) -> bytes:
        card = self._present()
        if card is None:
            return b"\x00"
        card.deselect()  # a new activation starts a new card session
        self.target = card
        out = bytes([1, 1]) + card.atqa.to_bytes(2, "big") + bytes([card.sak, len(card.uid)]) + card.uid
        if card.ats is not None:
            out += card.ats
        return out

    def _card_entered(self) -> None:
        if self.pending_list is not None and not self.faults.silent:
            stat, self.pending_list = self.pending_list, None
            self._respond(0x4A, self._list(), stat)


class _Syntax(Exception):
    pass


# ---------------------------------------------------------------------------
# The chip without a link
# ---------------------------------------------------------------------------


class DirectPN:
    """Stands in for the PN532 host driver (pcd.PN532) with one card and no
    serial link (unit tests, and the card-protocol model without frames).
    exchange() raises LinkError for the card's RfError answers."""

    need_init = False

    def __init__(self, card=None):
        self.card = card

    def init(self) -> None:
        pass

    def list_target(self):
        c = self.card
        if c is None:
            return None
        c.deselect()
        return Target(1, c.atqa, c.sak, c.uid, c.ats)

    def exchange(self, tg: int, data: bytes) -> bytes:
        if self.card is None:
            raise LinkError(0x01)
        r = self.card.transceive(bytes(data))
        if isinstance(r, RfError):
            raise LinkError(r.code)
        return bytes(r)

    def release(self) -> None:
        if self.card is not None:
            self.card.deselect()


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def cards_from_spec(spec: dict) -> dict:
    """Build the named cards of a spec file (see docs/nfc.md, "Emulator CLI")."""
    keys = K.BuildingKeys(
        int(spec["building_id"]),
        bytes.fromhex(spec["read_master"]),
        bytes.fromhex(spec["perso_master"]) if spec.get("perso_master") else None,
    )
    out: dict = {}
    for c in spec["cards"]:
        t, name = c["type"], c["name"]
        if t == "desfire":
            cred = K.Credential(
                bytes.fromhex(c["card_id"]),
                keys.building_id,
                int(c.get("issuer", 0)),
                int(c.get("valid_from", 0)),
                int(c.get("valid_until", 0xFFFF)),
            )
            out[name] = make_desfire(bytes.fromhex(c["uid"]), keys, cred, name=name)
        elif t == "ntag424":
            out[name] = make_ntag424(
                bytes.fromhex(c["uid"]), keys, bytes.fromhex(c["card_id"]), int(c.get("counter", 0)), name=name
            )
        elif t == "classic":
            out[name] = MifareClassicCard(bytes.fromhex(c["uid"]), name=name)
        elif t == "clone":
            out[name] = MagicClone(out[c["of"]], c.get("mode", "wrong_key"), name=name)
        elif t == "faulty":
            out[name] = FaultyCard(bytes.fromhex(c["uid"]), c.get("mode", "garbage"), name=name)
        else:
            raise ValueError("unknown card type %r" % t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m liftcard_tools.nfc.pn532emu", description="PN532 emulator on a pty (UM0701-02 HSU frames)"
    )
    ap.add_argument("--cards", type=argparse.FileType("r"), help="card spec JSON")
    ap.add_argument("--enter", help="name of a card placed in the field at start")
    ap.add_argument("--i2c", action="store_true", help="I2C mode: the pty carries the bus transport (module doc)")
    args = ap.parse_args(argv)
    cards = cards_from_spec(json.load(args.cards)) if args.cards else {}
    emu = PN532Emulator(i2c=args.i2c).start()
    print(emu.path, flush=True)
    if args.enter:
        emu.field.enter(cards[args.enter])
    try:
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            try:
                op = parts[0]
                if op == "enter":
                    emu.field.enter(cards[parts[1]], int(parts[2]) if len(parts) > 2 else None)
                elif op == "leave":
                    emu.field.leave()
                elif op == "silence":
                    emu.faults.silence()
                elif op == "reset":
                    emu.reset()
                elif op == "garbage":
                    emu.faults.garbage(bytes.fromhex(parts[1]) if len(parts) > 1 else b"\x55\xaa\x13\x37\xfe")
                elif op == "corrupt":
                    emu.faults.corrupt_next()
                elif op == "stats":
                    with emu.lock:
                        print(json.dumps({"totals": emu.stats.totals(), "exchanges": emu.stats.exchanges}), flush=True)
                    continue
                elif op == "quit":
                    print("ok", flush=True)
                    break
                else:
                    raise ValueError("unknown command %r" % op)
                print("ok", flush=True)
            except (KeyError, IndexError, ValueError) as e:
                print("error: %s" % e, flush=True)
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
