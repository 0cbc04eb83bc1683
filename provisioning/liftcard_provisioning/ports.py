"""Serial ports: which is a reader (ESP32 board), which a PN532 adapter.

pyserial's list_ports gives each port's USB VID:PID and the descriptions the
USB device reports. An ESP32 board is recognised by its USB-serial bridge (or
the ESP32-S3/C3 native USB-Serial/JTAG); a PN532 adapter often has the same
bridges (CH340, FTDI), so a port whose description names a PN532 or NFC is
marked as the adapter instead. ``board_port()`` is the --port default every verb
that talks to a reader uses; ``resolve()`` adds the busy/missing/permission
check, so a verb gets a usable port or one line saying why not.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass

# USB VID:PID of the bridges on ESP32 development boards and reader PCBs.
BOARD_IDS = {
    (0x10C4, 0xEA60): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG",
}
NATIVE_ESP = (0x303A, 0x1001)  # only ever an ESP32 (S3, C3, C6, ...)
PN532_WORDS = ("pn532", "nfc", "rfid")


class PortError(Exception):
    """A user error about ports: one line, exit code 2."""


@dataclass(frozen=True)
class Port:
    device: str
    vid: int | None
    pid: int | None
    description: str
    manufacturer: str
    serial_number: str
    bridge: str | None  # the USB bridge, when known
    kind: str | None  # "esp32", "pn532" or None

    def ids(self) -> str:
        return "%04X:%04X" % (self.vid, self.pid) if self.vid is not None else "-"

    def as_json(self) -> dict:
        d = asdict(self)
        d["usb"] = self.ids() if self.vid is not None else None
        return d


def classify(info) -> Port:
    """A pyserial ListPortInfo -> Port."""
    vid, pid = info.vid, info.pid
    texts = " ".join(str(x or "") for x in (info.description, info.product, info.manufacturer, info.interface)).lower()
    bridge = BOARD_IDS.get((vid, pid)) if vid is not None else None
    if (vid, pid) == NATIVE_ESP:
        kind = "esp32"
    elif any(w in texts for w in PN532_WORDS):
        kind = "pn532"
    elif bridge:
        kind = "esp32"
    else:
        kind = None
    return Port(
        info.device,
        vid,
        pid,
        info.description if info.description and info.description != "n/a" else "",
        info.manufacturer or "",
        info.serial_number or "",
        bridge,
        kind,
    )


def comports():
    from serial.tools import list_ports

    return list_ports.comports()


def list_ports(infos=None) -> list[Port]:
    infos = comports() if infos is None else infos
    return sorted((classify(i) for i in infos), key=lambda p: p.device)


def board_port(port: str | None, ports: list[Port] | None = None) -> str:
    """--port as given, or the one ESP32 board present; PortError otherwise."""
    if port:
        return port
    ports = list_ports() if ports is None else ports
    boards = [p for p in ports if p.kind == "esp32"]
    if len(boards) == 1:
        return boards[0].device
    if not boards:
        seen = ", ".join(p.device for p in ports) or "none"
        raise PortError("no ESP32 board found (serial ports: %s): plug the reader's USB in, or pass --port" % seen)
    raise PortError(
        "%d ESP32 boards found (%s): pass --port to choose one" % (len(boards), ", ".join(p.device for p in boards))
    )


def check_free(port: str) -> None:
    """Open the port exclusively and close it: a port another program holds
    (a serial monitor, mpremote) gives one clear line instead of a failed sync.
    URLs (socket://, rfc2217://) are not checked."""
    if "://" in port:
        return
    import serial

    s = serial.Serial()
    s.port = port
    s.exclusive = True
    try:
        s.open()
    except serial.SerialException as e:
        code = e.errno
        text = str(e)
        if code == errno.EBUSY or "exclusively lock" in text or "busy" in text.lower():
            raise PortError(
                "port %s is busy: close the program using it (serial monitor, mpremote, another %s)"
                % (port, "liftcard-provision")
            ) from None
        if code == errno.ENOENT or "No such file" in text or "FileNotFoundError" in text:
            raise PortError("port %s does not exist (see liftcard-provision ports)" % port) from None
        if code == errno.EACCES or "Permission denied" in text:
            raise PortError(
                "no permission to open %s: add your user to the dialout group, log in again" % port
            ) from None
        raise PortError("cannot open %s: %s" % (port, text.split(":")[0])) from None
    finally:
        if s.is_open:
            s.close()


def resolve(port: str | None) -> str:
    """board_port() then check_free(): the port a verb that talks to a board
    should use, or PortError (one line, exit code 2)."""
    port = board_port(port)
    check_free(port)
    return port
