"""The card verbs of liftcard-provision: personalise and read DESFire cards
through a USB PN532 (docs/provisioning.md).

    liftcard-provision card personalise --port PORT|auto --keys building-keys.json \\
        --card-id HEX16 --valid-from YYYY-MM-DD --valid-until YYYY-MM-DD|never [--issuer N]
    liftcard-provision card read --port PORT|auto --keys building-keys.json [--json]

The PN532 is a USB-serial PN532 board in HSU mode at 115200 baud (pyserial).
The PN532 host driver, the frame codec and the DESFire commands are the
reference ones in liftcard_provisioning.nfc (pcd.py, frames.py, desfire.py,
personalise.py), which the emulator tests and the firmware vectors also use:
this module only puts them on a pyserial port and adds the commands. Keys are
never printed, not even in an error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import stat
import sys
import time

from liftcard_provisioning.errors import Fail
from liftcard_provisioning.nfc import credential as K
from liftcard_provisioning.nfc import crypto as C
from liftcard_provisioning.nfc import frames as Fr
from liftcard_provisioning.nfc import pcd
from liftcard_provisioning.nfc.desfire import CardStatus, DesfireHost, Garbage
from liftcard_provisioning.nfc.personalise import personalise_desfire

BAUD = 115200

EPOCH_DATE = datetime.date(2024, 1, 1)  # docs/formats.md: liftcard epoch; local day 0
NO_END = 0xFFFF

# USB-serial bridges found on PN532 boards / adapters (USB vendor ids).
ADAPTER_VIDS = {
    0x1A86: "CH340",
    0x10C4: "CP210x",
    0x0403: "FTDI",
    0x067B: "PL2303",
}


# ---------------------------------------------------------------------------
# argument types
# ---------------------------------------------------------------------------


def card_id_arg(s: str) -> bytes:
    try:
        b = bytes.fromhex(s)
    except ValueError:
        b = b""
    if len(b) != 8 or len(s) != 16:
        raise argparse.ArgumentTypeError("must be exactly 16 hex digits (8 bytes), got %r" % s)
    if not any(b):
        raise argparse.ArgumentTypeError("0000000000000000 is reserved (failed taps carry card id 0)")
    return b


def day_arg(s: str) -> int:
    try:
        d = datetime.date.fromisoformat(s)
        if len(s) != 10:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("must be a date YYYY-MM-DD, got %r" % s) from None
    day = (d - EPOCH_DATE).days
    if not 0 <= day < NO_END:
        raise argparse.ArgumentTypeError("%s is outside 2024-01-01 .. %s" % (s, day_to_str(NO_END - 1)))
    return day


def until_arg(s: str) -> int:
    return NO_END if s == "never" else day_arg(s)


def issuer_arg(s: str) -> int:
    try:
        n = int(s, 10)
    except ValueError:
        n = -1
    if not 0 <= n <= 0xFFFF:
        raise argparse.ArgumentTypeError("must be an integer 0..65535, got %r" % s)
    return n


def day_to_str(day: int) -> str:
    if day == NO_END:
        return "never"
    return (EPOCH_DATE + datetime.timedelta(days=day)).isoformat()


# ---------------------------------------------------------------------------
# building keys file
# ---------------------------------------------------------------------------


def load_keys(path: str, need_perso: bool) -> tuple[K.BuildingKeys, int]:
    """-> (BuildingKeys, key_version). The file must be a regular file with no
    group/other permissions (0600 or 0400). Key values never appear in errors."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Fail("keys file %s not found" % path, 2) from None
    except OSError as e:
        raise Fail("keys file %s: %s" % (path, e.strerror), 2) from None
    if not stat.S_ISREG(st.st_mode):
        raise Fail("keys file %s is not a regular file" % path, 2)
    if os.name == "posix" and st.st_mode & 0o077:
        raise Fail(
            "keys file %s is mode %04o: it holds master keys, chmod 600 it" % (path, stat.S_IMODE(st.st_mode)), 2
        )
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise Fail("keys file %s: %s" % (path, e.strerror), 2) from None
    except ValueError:
        raise Fail("keys file %s is not valid JSON" % path, 2) from None
    if not isinstance(doc, dict):
        raise Fail("keys file %s: expected a JSON object" % path, 2)
    b = doc.get("building_id")
    if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b <= 0xFFFFFFFF:
        raise Fail("keys file %s: building_id must be an integer 0..4294967295" % path, 2)
    kv = doc.get("key_version", 1)
    if not isinstance(kv, int) or isinstance(kv, bool) or not 0 <= kv <= 255:
        raise Fail("keys file %s: key_version must be an integer 0..255" % path, 2)

    def key(name: str, required: bool) -> bytes | None:
        v = doc.get(name)
        if v is None and not required:
            return None
        if v is None:
            raise Fail("keys file %s: %s missing (needed to personalise)" % (path, name), 2)
        ok = isinstance(v, str) and len(v) == 32
        try:
            k = bytes.fromhex(v) if ok else b""
        except ValueError:
            k = b""
        if len(k) != 16:
            raise Fail("keys file %s: %s must be exactly 32 hex digits" % (path, name), 2)  # value not echoed
        return k

    read = key("read_master", True)
    perso = key("perso_master", need_perso)
    return K.BuildingKeys(b, read, perso), kv


# ---------------------------------------------------------------------------
# serial ports
# ---------------------------------------------------------------------------


def list_ports():
    """-> [(device, vid, pid, description, adapter name or None)]."""
    from serial.tools import list_ports as lp

    out = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        out.append((p.device, p.vid, p.pid, p.description or "", ADAPTER_VIDS.get(p.vid) if p.vid else None))
    return out


def pick_port(port: str, ports=None) -> str:
    if port != "auto":
        return port
    ports = list_ports() if ports is None else ports
    likely = [p for p in ports if p[4]]
    if len(likely) == 1:
        return likely[0][0]
    if not likely:
        seen = ", ".join(p[0] for p in ports) or "none"
        raise Fail("--port auto: no likely PN532 USB adapter (CH340/CP210x/FTDI/PL2303) found; serial ports: %s" % seen)
    raise Fail("--port auto: several candidates: %s; pass --port" % ", ".join(p[0] for p in likely))


class SerialPN532(pcd.PN532):
    """The reference PN532 host driver (pcd.PN532) on a pyserial port: only the
    byte link is replaced; commands, ACK/NACK handling and time-outs are pcd's."""

    def __init__(self, port: str, ack_timeout: float = 0.2, resp_timeout: float = 1.0):
        import serial

        try:
            self.ser = serial.Serial(port, BAUD, bytesize=8, parity="N", stopbits=1, timeout=0.01, write_timeout=2)
        except (serial.SerialException, OSError, ValueError) as e:
            msg = getattr(e, "strerror", None) or str(e).split(":")[0]
            raise Fail("cannot open serial port %s: %s" % (port, msg)) from None
        self.port = port
        self.reader = Fr.FrameReader()
        self.ack_timeout, self.resp_timeout = ack_timeout, resp_timeout
        self.need_init = True
        self.sent_frames = self.sent_bytes = self.recv_frames = 0
        self.naks = 0

    def close(self) -> None:
        self.ser.close()

    def _write(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        self.sent_frames += 1
        self.ser.write(data)

    def _next_frame(self, deadline: float):
        while True:
            f = self.reader.pop()
            if f is not None:
                self.recv_frames += 1
                return f
            if time.monotonic() >= deadline:
                return None
            chunk = self.ser.read(max(1, self.ser.in_waiting))
            if chunk:
                self.reader.feed(chunk)

    def init(self) -> None:
        """pcd.PN532.init on this link, with a longer InDataExchange time-out:
        card EEPROM writes (CreateApplication, ChangeKey, WriteData) take longer
        than the reader's reads."""
        self.reader = Fr.FrameReader()
        self.ser.reset_input_buffer()
        self.ser.write(Fr.WAKEUP)
        self.command(0x14, b"\x01\x14\x01")  # SAMConfiguration: normal mode
        fw = self.command(0x02)
        if len(fw) != 4 or fw[0] != 0x32:
            raise pcd.PN532Error("not a PN532 (GetFirmwareVersion %s)" % fw.hex())
        self.command(0x32, b"\x05\xff\x01\x00")  # MxRtyPassiveActivation 0: InListPassiveTarget returns at once
        self.command(0x32, b"\x02\x00\x0b\x0e")  # InDataExchange time-out 0E (~820 ms)
        self.need_init = False


# ---------------------------------------------------------------------------
# card session helpers
# ---------------------------------------------------------------------------


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def open_chip(port: str) -> SerialPN532:
    port = pick_port(port)
    progress("PN532 on %s (HSU %d baud)" % (port, BAUD))
    pn = SerialPN532(port)
    try:
        pn.init()
    except pcd.PN532Error as e:
        pn.close()
        raise Fail("no PN532 answering on %s (%s); is the board in HSU mode and powered?" % (port, e)) from None
    return pn


def find_card(pn: SerialPN532, wait: float) -> pcd.Target:
    deadline = time.monotonic() + wait
    while True:
        t = pn.list_target()
        if t is not None:
            break
        if time.monotonic() >= deadline:
            raise Fail(
                "no card in the field"
                + (" after %g s" % wait if wait else "")
                + " (put the card on the PN532 antenna; --wait N to wait for one)"
            )
        time.sleep(0.1)
    if not t.iso_dep:
        raise Fail("card %s is not ISO 14443-4 (SAK %02X): not a DESFire" % (t.uid.hex().upper(), t.sak))
    if len(t.uid) != 7:
        raise Fail("card UID %s is not a 7-byte UID (random-UID cards are not supported)" % t.uid.hex().upper())
    progress("card UID %s (ATQA %04X SAK %02X)" % (t.uid.hex().upper(), t.atqa, t.sak))
    return t


_STEPS = {
    0xCA: "create application LCF (4C4346), AES, 2 keys",
    0xAA: "authenticate key 0 (factory key)",
    0xCD: "create file 1 (std data, MAC, 26 bytes)",
    0x3D: "write credential",
}


def _label(frame: bytes) -> str | None:
    c = frame[0]
    if c == 0x5A:
        return "select PICC" if frame[1:4] == b"\x00\x00\x00" else "select application LCF"
    if c == 0xC4:
        return "change key %d (%s, diversified)" % (frame[1], "read" if frame[1] == 1 else "application master")
    return _STEPS.get(c)


def read_credential(pn, t, keys: K.BuildingKeys) -> K.Credential:
    """Select LCF, authenticate with the diversified read key 1 (EV1 AES), read
    file 1 with its MAC checked: what a reader does (tap.Reader._desfire)."""
    h = DesfireHost(lambda d: pn.exchange(t.tg, d))
    h.select(K.AID_LCF)
    h.auth_ev1(K.KEY_READ, keys.desfire_key(t.uid, K.KEY_READ))
    return K.Credential.decode(h.read_data(K.FILE_CRED, 0, K.CRED_LEN))


def explain(e: Exception, what: str) -> Fail:
    if isinstance(e, CardStatus):
        names = {
            0xAE: "authentication refused",
            0x9D: "permission denied",
            0xA0: "application not found",
            0xDE: "duplicate",
            0x1E: "integrity error",
            0x7E: "length error",
            0x1C: "illegal command",
            0x40: "no such key",
            0xBE: "boundary error",
            0xF0: "file not found",
            0x9E: "parameter error",
        }
        return Fail(
            "%s: card answered %02X (%s)%s"
            % (
                what,
                e.code,
                names.get(e.code, "error"),
                " in " + str(e).split(" in ", 1)[1] if " in " in str(e) else "",
            )
        )
    if isinstance(e, C.AuthError):
        return Fail("%s: cryptographic check failed (%s)" % (what, e))
    if isinstance(e, Garbage):
        return Fail("%s: malformed answer from the card (%s)" % (what, e))
    if isinstance(e, pcd.LinkError):
        return Fail("%s: radio error %02X (card moved away?); try again" % (what, e.status))
    if isinstance(e, K.CredentialError):
        return Fail("%s: credential file is malformed (%s)" % (what, e))
    return Fail("%s: PN532: %s" % (what, e))


CARD_ERRORS = (CardStatus, C.AuthError, Garbage, pcd.LinkError, pcd.PN532Error, K.CredentialError, IOError)


def _release(pn) -> None:
    try:
        if not pn.need_init:
            pn.release()
    except (pcd.PN532Error, OSError):
        pass


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def cmd_personalise(args) -> int:
    keys, key_version = load_keys(args.keys, need_perso=True)
    if args.valid_from > args.valid_until:
        raise Fail(
            "--valid-from %s is after --valid-until %s" % (day_to_str(args.valid_from), day_to_str(args.valid_until)), 2
        )
    cred = K.Credential(args.card_id, keys.building_id, args.issuer, args.valid_from, args.valid_until, key_version)
    pn = open_chip(args.port)
    try:
        t = find_card(pn, args.wait)
        tx = lambda d: pn.exchange(t.tg, d)  # noqa: E731
        # already personalised? (the LCF application exists)
        try:
            r = tx(b"\x5a" + K.AID_LCF)
        except CARD_ERRORS as e:
            raise explain(e, "select application LCF") from None
        if r == b"\x00":
            h = DesfireHost(tx)
            try:
                h.auth_ev1(K.KEY_APP_MASTER, keys.desfire_key(t.uid, K.KEY_APP_MASTER))
                mine = True
            except (CardStatus, C.AuthError):
                mine = False
            except CARD_ERRORS as e:
                raise explain(e, "check existing application") from None
            if mine:
                raise Fail(
                    "card %s is already personalised for building %d with these keys "
                    "(use 'card read' to see it)" % (t.uid.hex().upper(), keys.building_id)
                )
            raise Fail(
                "card %s is already personalised with other keys (an LCF application exists); "
                "not touched" % t.uid.hex().upper()
            )
        if r != b"\xa0":
            raise Fail("card %s answered %s to SelectApplication: not a DESFire EV1+" % (t.uid.hex().upper(), r.hex()))

        def logged(d: bytes) -> bytes:
            label = _label(d)
            if label:
                progress("  " + label)
            return tx(d)

        step = "personalise"
        try:
            pn.release()
            t2 = pn.list_target()  # fresh card session (the probe above left an error state)
            if t2 is None or t2.uid != t.uid:
                raise Fail("card left the field before personalisation started; nothing written")
            t = t2
            personalise_desfire(logged, t.uid, keys, cred)
            step = "verify"
            progress("  verify: re-select, authenticate key 1 (read), read credential, check MAC")
            pn.release()
            t2 = pn.list_target()
            if t2 is None or t2.uid != t.uid:
                raise Fail("card left the field before verification: run 'card read' on it")
            got = read_credential(pn, t2, keys)
            h = DesfireHost(lambda d: pn.exchange(t2.tg, d))
            h.select(K.AID_LCF)
            h.auth_ev1(K.KEY_APP_MASTER, keys.desfire_key(t.uid, K.KEY_APP_MASTER))
        except CARD_ERRORS as e:
            raise explain(e, step + (" (card may be partly personalised)" if step == "personalise" else "")) from None
        if got != cred:
            raise Fail("verify: the credential read back differs from the one written")
        progress("  verify: ok (read key 1 and master key 0 diversified, credential MAC checked)")
        print(
            "personalised card %s: card id %s, building %d, valid %s .. %s, issuer %d, key version %d"
            % (
                t.uid.hex().upper(),
                cred.card_id.hex().upper(),
                cred.building_id,
                day_to_str(cred.valid_from),
                day_to_str(cred.valid_until),
                cred.issuer,
                cred.key_version,
            )
        )
        return 0
    finally:
        _release(pn)
        pn.close()


def cmd_read(args) -> int:
    keys, _kv = load_keys(args.keys, need_perso=False)
    pn = open_chip(args.port)
    try:
        t = find_card(pn, args.wait)
        progress("  select application LCF, authenticate key 1 (read), read credential")
        try:
            cred = read_credential(pn, t, keys)
        except CardStatus as e:
            if e.code == 0xA0:
                raise Fail(
                    "card %s has no liftcard application: blank or not a liftcard card" % t.uid.hex().upper()
                ) from None
            if e.code == 0xAE:
                raise Fail(
                    "card %s refused the read key: personalised for another building or key "
                    "generation" % t.uid.hex().upper()
                ) from None
            raise explain(e, "read") from None
        except C.AuthError as e:
            raise Fail("credential MAC did NOT verify (%s): forged, altered or other keys" % e) from None
        except CARD_ERRORS as e:
            raise explain(e, "read") from None
        if cred.building_id != keys.building_id:
            raise Fail(
                "credential is for building %d, the keys file is building %d" % (cred.building_id, keys.building_id)
            )
        today = (datetime.date.today() - EPOCH_DATE).days
        state = "not yet valid" if today < cred.valid_from else "expired" if today > cred.valid_until else "valid"
        out = {
            "uid": t.uid.hex().upper(),
            "card_id": cred.card_id.hex().upper(),
            "building_id": cred.building_id,
            "issuer": cred.issuer,
            "valid_from": day_to_str(cred.valid_from),
            "valid_until": day_to_str(cred.valid_until),
            "key_version": cred.key_version,
            "mac": "verified",
            "status_today": state,
        }
        if args.json:
            print(json.dumps(out))
        else:
            for k, v in out.items():
                print("%-13s %s" % (k + ":", v))
        return 0
    finally:
        _release(pn)
        pn.close()


KEYS_HELP = (
    "building keys JSON, mode 0600: {\"building_id\": N, \"read_master\": \"32 hex\", "
    "\"perso_master\": \"32 hex\", \"key_version\": 1}"
)


def add_parsers(sub, parser_class) -> None:
    """The `card` command and its actions, on the CLI's subparsers."""
    card = sub.add_parser("card", help="DESFire card commands (personalise, read)")
    csub = card.add_subparsers(dest="card_cmd", metavar="ACTION", parser_class=parser_class)
    csub.required = True

    def common(q):
        q.add_argument(
            "--port",
            required=True,
            help="serial port of the PN532 (/dev/ttyUSB0, COM3) or 'auto': the single likely adapter",
        )
        q.add_argument("--keys", required=True, metavar="FILE", help=KEYS_HELP)
        q.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="S",
            help="wait up to S seconds for a card in the field (default: 0, fail at once)",
        )

    pe = csub.add_parser(
        "personalise",
        aliases=["personalize"],
        help="personalise a blank DESFire EV1+: application LCF, diversified keys, credential",
        description="Create application LCF (AES, 2 keys), set key 1 (read) and key 0 "
        "(master) diversified from the building's masters (AN10922), create file 1 and "
        "write the 26-byte credential (docs/nfc.md), then read it back as a reader does. "
        "The card must be blank (factory keys); a card with an LCF application is refused.",
    )
    common(pe)
    pe.add_argument(
        "--card-id", required=True, type=card_id_arg, metavar="HEX16", help="the whitelist card id, 16 hex digits"
    )
    pe.add_argument("--valid-from", required=True, type=day_arg, metavar="YYYY-MM-DD")
    pe.add_argument("--valid-until", required=True, type=until_arg, metavar="YYYY-MM-DD|never")
    pe.add_argument("--issuer", type=issuer_arg, default=0, metavar="N", help="issuer number 0..65535 (default 0)")
    pe.set_defaults(func=cmd_personalise)
    pr = csub.add_parser(
        "read",
        help="read and verify a card's credential with the building's read key",
        description="Authenticate with the diversified read key 1 and read the credential "
        "with its MAC checked, as a reader does. Needs only read_master in the keys file.",
    )
    common(pr)
    pr.add_argument("--json", action="store_true", help="print one JSON object")
    pr.set_defaults(func=cmd_read)
