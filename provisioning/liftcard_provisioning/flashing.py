"""Put MicroPython and the reader's partition table on a board (``liftcard-provision flash``).

esptool is used as a library (esptool.cmds: connect_esp, run_stub, attach_flash,
detect_flash_size, write_flash, erase_region; docs/dependencies.md). The order
is what makes a wrong file harmless:

1. the image file is checked on its own (ESP32 image magic 0xE9, a chip id
   esptool knows, segments that parse), before any port is opened;
2. the board is connected, its chip and flash size detected, and the image's
   chip id (extended header, byte 12) compared with the chip's; the app must fit
   the factory partition and the flash size must have a reader layout;
3. only then: write the bootloader (when the file is a merged MicroPython
   release image), the reader partition table for the detected size
   (partitions.py) and the app, each verified by esptool's flash MD5; erase the
   ridelog partition and check by MD5 that it reads all 0xFF; reset the board.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from dataclasses import dataclass

from liftcard_provisioning import partitions as PT

IMAGE_MAGIC = 0xE9
APP_OFFSET = 0x10000
_HDR = struct.Struct("<BBBBI")  # magic, segments, spi mode, size/freq, entry
_EXT_CHIP_ID = 12  # u16 in the 16-byte extended header that follows the 8-byte header
MIN_IMAGE = 24


class FlashError(Exception):
    """One line for the user. code 2: the user's input (file, port, choice); 1: the board."""

    def __init__(self, msg: str, code: int = 1):
        super().__init__(msg)
        self.code = code


def _chips():
    from esptool.targets import CHIP_DEFS

    return {cls.IMAGE_CHIP_ID: cls for cls in CHIP_DEFS.values() if getattr(cls, "IMAGE_CHIP_ID", None) is not None}


def chip_name(chip_id: int) -> str:
    cls = _chips().get(chip_id)
    return cls.CHIP_NAME if cls else "unknown chip id %d" % chip_id


@dataclass(frozen=True)
class Image:
    name: str
    chip_id: int
    app: bytes
    bootloader: bytes | None  # merged release image: bootloader part (written at the chip's offset)
    bootloader_offset: int

    @property
    def merged(self) -> bool:
        return self.bootloader is not None


def _header(name: str, data: bytes, what: str) -> int:
    """Checks an ESP32 image header; returns its chip id."""
    if len(data) < MIN_IMAGE:
        raise FlashError("%s: %s is %d bytes, too short for an ESP32 image" % (name, what, len(data)), 2)
    magic, segments, _mode, _sf, _entry = _HDR.unpack_from(data, 0)
    if magic != IMAGE_MAGIC:
        raise FlashError(
            "%s is not an ESP32 firmware image (%s starts with 0x%02X, not 0xE9): use the .bin from "
            "micropython.org/download for your board" % (name, what, magic),
            2,
        )
    if not 1 <= segments <= 16:
        raise FlashError("%s: %s header has %d segments (1..16): corrupt image" % (name, what, segments), 2)
    (chip_id,) = struct.unpack_from("<H", data, _EXT_CHIP_ID)
    if chip_id not in _chips():
        raise FlashError("%s: %s is for chip id %d, not an Espressif chip this tool knows" % (name, what, chip_id), 2)
    return chip_id


def _segments(name: str, data: bytes, chip_id: int, what: str) -> None:
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    try:
        img = LoadFirmwareImage(_chips()[chip_id].CHIP_NAME.lower().replace("-", ""), data)
        img.verify()
    except (FatalError, struct.error, ValueError, RuntimeError) as e:
        raise FlashError("%s: %s is truncated or corrupt (%s)" % (name, what, str(e).splitlines()[0]), 2) from None


def read_image(path: str) -> Image:
    """The technician's file, checked without a board. A merged MicroPython
    release image (bootloader, partition table at 0x8000, app at 0x10000, meant
    for the chip's bootloader offset) or an app image alone."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 * PT.MB)
    except FileNotFoundError:
        raise FlashError("image %s not found" % path, 2) from None
    except IsADirectoryError:
        raise FlashError("image %s is a directory, not a .bin file" % path, 2) from None
    except OSError as e:
        raise FlashError("image %s: %s" % (path, e.strerror), 2) from None
    chip_id = _header(path, data, "the file")
    boot_off = _chips()[chip_id].BOOTLOADER_FLASH_OFFSET
    table_at = PT.TABLE_OFFSET - boot_off
    app_at = APP_OFFSET - boot_off
    if data[table_at : table_at + 2] == PT.MAGIC and len(data) > app_at:
        boot, app = data[:table_at], data[app_at:]
        _segments(path, boot, chip_id, "the bootloader")
        app_chip = _header(path, app, "the app at 0x%X" % APP_OFFSET)
        if app_chip != chip_id:
            raise FlashError(
                "%s: bootloader is for %s but the app for %s: corrupt image"
                % (path, chip_name(chip_id), chip_name(app_chip)),
                2,
            )
        _segments(path, app, chip_id, "the app")
        return Image(path, chip_id, app, boot, boot_off)
    _segments(path, data, chip_id, "the app")
    return Image(path, chip_id, data, None, boot_off)


class _Progress:
    """esptool's log, as our progress lines: its own chatter is dropped unless verbose."""

    def __init__(self, verbose: bool, out=None):
        from esptool.logger import TemplateLogger

        out = out or sys.stderr
        last = [-1]

        class Logger(TemplateLogger):
            def print(self, *args, **kwargs):
                if verbose:
                    kwargs.pop("file", None)
                    kwargs.pop("flush", None)
                    print(*args, file=out, **kwargs)

            def note(self, message):
                if verbose:
                    print("  note: %s" % message, file=out)

            def warning(self, message):
                print("  warning: %s" % message, file=out)

            def error(self, message):
                if verbose:
                    print("  esptool: %s" % message, file=out)

            def stage(self, finish=False):
                pass

            def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
                pct = 100 * cur_iter // max(1, total_iters)
                if pct // 10 != last[0] // 10 or cur_iter >= total_iters:
                    last[0] = pct
                    print("    %3d%%" % pct, file=out, flush=True)

            def set_verbosity(self, verbosity):
                pass

        self.logger = Logger()


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _board_error(e: Exception, port: str, writing: str | None = None) -> FlashError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if writing is not None:
        return FlashError(
            "transfer with the board on %s interrupted while %s (%s): the board holds a partial image; "
            "check the cable and power, then run flash again" % (port, writing, text)
        )
    if "Failed to connect" in text or "No serial data" in text or "Could not open" in text:
        return FlashError(
            "no ESP32 bootloader answering on %s (%s): hold BOOT, press EN/RESET, release BOOT, try again"
            % (port, text)
        )
    return FlashError("on %s: %s" % (port, text))


def flash(path: str, port: str, baud: int = 460800, verbose: bool = False) -> dict:
    """The whole 'flash' verb once the port is chosen; returns what was done."""
    image = read_image(path)  # before the board is touched
    progress(
        "image %s: %s, %s, app %d KB"
        % (
            path,
            chip_name(image.chip_id),
            "merged release image" if image.merged else "app only",
            len(image.app) // 1024,
        )
    )
    from esptool import cmds
    from esptool.logger import log
    from esptool.util import FatalError
    import serial

    log.set_logger(_Progress(verbose).logger)
    try:
        loader = cmds.connect_esp(port=port, chip="auto")
    except (FatalError, serial.SerialException, OSError) as e:
        raise _board_error(e, port) from None
    writing = None  # what was being written when the link went: the board then holds part of it
    with loader as esp:  # closes the port
        try:
            progress("board on %s: %s" % (port, esp.get_chip_description()))
            if esp.IMAGE_CHIP_ID != image.chip_id:
                raise FlashError(
                    "%s is built for %s but the board is an %s: nothing written (download the firmware for %s)"
                    % (path, chip_name(image.chip_id), esp.CHIP_NAME, esp.CHIP_NAME),
                    2,
                )
            esp = cmds.run_stub(esp)
            if baud and "://" not in port:
                esp.change_baud(baud)
            cmds.attach_flash(esp)
            size_str = cmds.detect_flash_size(esp)
            if size_str is None:
                raise FlashError("flash size not recognised (flash id 0x%06X): nothing written" % esp.flash_id())
            flash_size = PT.parse_size(size_str)
            try:
                entries = PT.layout(flash_size)
            except PT.PartitionError as e:
                raise FlashError("%s: nothing written" % e, 2) from None
            factory = PT.find(entries, "factory")
            if len(image.app) > factory.size:
                raise FlashError(
                    "%s: app is %d bytes, the factory partition holds %d: nothing written"
                    % (path, len(image.app), factory.size),
                    2,
                )
            cap = PT.capacity(flash_size)
            progress(
                "flash %s: vfs %d KB (whitelists up to %d cards), ridelog %d KB (%d rides)"
                % (size_str, cap.vfs_size // 1024, cap.max_cards, cap.ridelog_size // 1024, cap.max_rides)
            )
            regions = []
            if image.merged:
                regions.append((image.bootloader_offset, image.bootloader, "bootloader"))
            regions.append((PT.TABLE_OFFSET, PT.build(entries), "partition table"))
            regions.append((APP_OFFSET, image.app, "MicroPython"))
            for off, data, what in regions:
                progress("  write %s at 0x%X (%d bytes), verify" % (what, off, len(data)))
                writing = "writing " + what
                cmds.write_flash(esp, [(off, data)], flash_size=size_str)
            log_part = PT.find(entries, "ridelog")
            progress("  erase ridelog at 0x%X (%d KB), verify" % (log_part.offset, log_part.size // 1024))
            writing = "erasing ridelog"
            cmds.erase_region(esp, log_part.offset, log_part.size)
            got = esp.flash_md5sum(log_part.offset, log_part.size)
            want = hashlib.md5(b"\xff" * log_part.size).digest()
            if (bytes.fromhex(got) if isinstance(got, str) else got) != want:
                raise FlashError("ridelog partition does not read back erased: flash fault? try again")
            cmds.reset_chip(esp, "hard-reset")
            return {
                "port": port,
                "chip": esp.CHIP_NAME,
                "flash_size": size_str,
                "image": path,
                "merged": image.merged,
                "max_cards": cap.max_cards,
                "max_rides": cap.max_rides,
            }
        except (FatalError, serial.SerialException, OSError) as e:
            raise _board_error(e, port, writing) from None
