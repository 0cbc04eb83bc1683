"""The virtual serial board: a reader that MicroPython's own tools (mpremote)
cannot tell from an ESP32 on a USB serial port.

The rig is a process of its own (``python -m liftcard_testing.virtualboard
--dir DIR``) that plays the board's USB-serial chip and power supply:

- two serial "cables", each a pair of ptys it bridges byte for byte: the USB
  port (the board's stdio: the REPL) and the test port (UART1: the reader's
  line protocol, ``firmware/liftcard/lineproto.py``, through board_host's
  ``--test-port``). A client opens the user end's path (printed, or a stable
  symlink); the board's end is held by the real ``micropython`` binary;
- the board: ``micropython -i`` with the production heap and the reader's
  two images in DIR (littlefs ``fs.img`` mounted at /flash, the REPL's cwd;
  the NOR ``log.img`` as the ridelog partition), running what is on the
  flash as an ESP32 does: boot.py, then main.py and the firmware it imports
  (a new flash gets the built firmware, as deploy puts it, or stays empty
  with ``--blank``). ``-i``: when main.py stops (Ctrl-C), the REPL takes
  over, as on a board; a SystemExit out of it is a reset (a cold boot);
- Ctrl-C on the USB port while code runs: SIGINT to the board (the UART's
  interrupt character), and what follows is held until the REPL reads again;
- a soft reset (Ctrl-D at the REPL: the unix port exits) boots again on the
  same images: from the friendly REPL main.py runs; from the raw REPL (mpremote)
  the board comes back to the raw REPL with the filesystem mounted and main.py
  not run, as an ESP32 does;
- power: ``off`` on the rig's stdin kills the board at once (SIGKILL, any
  instant), ``on`` boots it again, ``reset`` is both.

The rig prints ``usb PATH``, ``test PATH``, then one line per event (``boot N
main|raw``, ``off``) on its stdout. ``VirtualBoard`` runs one for a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from liftcard_provisioning import mpybuild

from . import firmware, procs

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n"
CTRL_B, CTRL_C = 0x02, 0x03
_KEEP = 1 << 16  # bytes a port keeps for a client that does not read (older ones are lost, like a UART's)
_HOLD_S = 10.0  # after a Ctrl-C: the longest the USB input waits for the REPL
FS_SIZE = 2 * 1024 * 1024  # a fresh littlefs image (board_host's default)

# What an ESP32 does at every boot and soft reset: its _boot.py mounts the
# filesystem (at /flash here, made the cwd) with the modules imported from it
# ('' and /flash/lib, as '' and /lib on a board), then boot.py from the flash
# runs if it is there. Only the host board's own modules (board_host,
# hostflash: the "chip") come from the build. %r: the host modules, main.py's
# argv, the fs image, its size when fresh.
_BOOT = """import sys, os, vfs
sys.path[:] = ['', '/flash/lib', %r]
sys.argv[:] = %r
from hostflash import BlockDev
try:
    os.stat(%r)
    _d = BlockDev(sys.argv[2], None, None)
except OSError:
    _d = BlockDev(sys.argv[2], %d, None)
    vfs.VfsLfs2.mkfs(_d)
vfs.mount(vfs.VfsLfs2(_d), '/flash')
os.chdir('/flash')
del _d, BlockDev
def _has(n):
    try:
        os.stat(n)
        return True
    except OSError:
        return False
if _has('boot.py'):
    try:
        import boot
    except Exception as e:
        sys.print_exception(e)
"""

# Then, at a cold boot or a soft reset from the friendly REPL, main.py from
# the flash if there is one (a blank board stays at the REPL). A SystemExit
# out of it (the host board's reset(), machine.reset() on an ESP32) resets
# the board: SIGUSR1 to itself, since -i would otherwise open the REPL; a
# KeyboardInterrupt or an error leaves the REPL.
_MAIN = """if _has('main.py'):
    try:
        import main
    except SystemExit:
        import time
        os.system('kill -USR1 $PPID')
        time.sleep(60)
"""


def install(workdir, files, size: int = FS_SIZE) -> None:
    """A fresh littlefs image in `workdir` holding `files` ([(local file, path
    on the flash)]): a board that left the bench with that firmware deployed.
    Written by the real micropython through the same block device the board
    mounts."""
    flash = str(Path(workdir).resolve() / firmware.FS_IMG)
    plan = [(str(Path(src).resolve()), rel) for src, rel in files]
    code = (
        "import sys, os, vfs\nsys.path[:] = [%r]\nfrom hostflash import BlockDev\n"
        "d = BlockDev(%r, %d, None)\nvfs.VfsLfs2.mkfs(d)\nvfs.mount(vfs.VfsLfs2(d), '/flash')\n"
        "for src, rel in %r:\n"
        "    p = '/flash'\n"
        "    for c in rel.split('/')[:-1]:\n"
        "        p += '/' + c\n"
        "        try:\n            os.mkdir(p)\n        except OSError:\n            pass\n"
        "    with open(src, 'rb') as a, open('/flash/' + rel, 'wb') as b:\n        b.write(a.read())\n"
        "vfs.umount('/flash')\n" % (str(mpybuild.host_out(firmware.build())), flash, size, plan)
    )
    p = procs.spawn([firmware.micropython(), "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=120)
    finally:
        procs.stop(p)
    if p.returncode != 0:
        raise RuntimeError("writing the firmware onto %s failed: %s" % (flash, out.decode(errors="replace")[-300:]))


def deployed_files() -> list[tuple[Path, str]]:
    """What `liftcard-provision deploy` puts onto a board (the manifest's files, built)."""
    from liftcard_provisioning.deploy import firmware_files

    return firmware_files()[0]


def _pty(isig: bool = False) -> tuple[int, int]:
    """A raw pty (master, slave). isig: Ctrl-C counts as an interrupt while
    the program on the slave leaves its terminal as found (the unix port's
    REPL clears it while it waits for input: so ISIG says "code is running")."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    if isig:
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG
        attrs[6][termios.VQUIT] = attrs[6][termios.VSUSP] = b"\0"  # only Ctrl-C is special
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.set_blocking(master, False)
    return master, slave


class Cable:
    """One serial port: the board's end (a pty the board holds) and the user's
    end (a pty whose path clients open), bridged. The rig keeps both slaves
    open, so a client may come and go and the board may reboot."""

    def __init__(self, isig: bool = False, link: str | None = None):
        self.board_m, self.board_s = _pty(isig)
        self.board_attrs = termios.tcgetattr(self.board_s)
        self.user_m, self.user_s = _pty()
        self.board_path = os.ttyname(self.board_s)
        self.path = os.ttyname(self.user_s)
        self.link = link
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.path, link)
        self.to_board = bytearray()
        self.to_user = bytearray()

    def reset_tty(self) -> None:
        """The board's terminal as the rig set it: a board killed at its REPL
        leaves it in the REPL's raw mode."""
        termios.tcsetattr(self.board_s, termios.TCSANOW, self.board_attrs)

    def running(self) -> bool:
        """The board's program runs (not waiting at the REPL)."""
        return bool(termios.tcgetattr(self.board_m)[3] & termios.ISIG)

    def close(self) -> None:
        for fd in (self.board_m, self.board_s, self.user_m, self.user_s):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link:
            with contextlib.suppress(OSError):
                os.unlink(self.link)


def _send(fd: int, buf: bytearray) -> None:
    if len(buf) > _KEEP:
        del buf[: len(buf) - _KEEP]
    try:
        n = os.write(fd, buf)
    except (BlockingIOError, OSError):
        return
    del buf[:n]


def _recv(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except (BlockingIOError, OSError):
        return b""


class Rig:
    """The board, its two cables and its power; run() until SIGTERM/SIGINT."""

    def __init__(self, workdir, heap: str = firmware.HEAP, usb_link=None, test_link=None, out=None, blank=False):
        self.dir = Path(workdir).resolve()
        # The flash holds what a reader's does: its key and passwords
        # (config.json), card ids (the ride log). Only its owner reads them.
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (self.dir / firmware.FS_IMG).exists():
            # Formatted before the first power-on, not by the boot code: a
            # Ctrl-C from a client arriving during the first boot would
            # otherwise interrupt the format and leave an image nothing mounts.
            install(self.dir, [] if blank else deployed_files())
            (self.dir / firmware.FS_IMG).chmod(0o600)
        self.heap = heap
        self.out = out or sys.stdout
        self.usb = Cable(isig=True, link=usb_link)
        self.test = Cable(link=test_link)
        self.p: subprocess.Popen | None = None
        self.boots = 0
        self.raw = False  # the board's REPL is in raw mode (mpremote)
        self.tail = b""  # the end of the USB output, to spot RAW_PROMPT across reads
        self.held: bytearray | None = None  # USB input held after a Ctrl-C / while booting raw
        self.hold_until = 0.0
        self.boot_raw = False  # booting into the raw REPL: output hidden until its prompt
        self.ctrl_a_sent = False
        self.hidden = b""

    def event(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ---- power ----

    def _argv(self, raw: bool) -> list[str]:
        build = firmware.build()
        flash, log = str(self.dir / firmware.FS_IMG), str(self.dir / firmware.LOG_IMG)
        head = [firmware.micropython(), "-X", "heapsize=" + self.heap, "-i", "-c"]
        # main.py's argv names the images (board_host reads it); a raw boot
        # gets it too, without the test port, so code run at the raw REPL
        # (selftest) finds the images the way main.py does.
        argv = ["main.py", "--flash", flash, "--log", log]
        if not raw:
            argv += ["--test-port", self.test.board_path]
        boot = _BOOT % (str(mpybuild.host_out(build)), argv, flash, FS_SIZE)
        if raw:
            return [*head, boot]  # a soft reset from the raw REPL: boot.py, no main.py
        return [*head, boot + _MAIN]

    def power_on(self, raw: bool = False, keep: bool = False) -> None:
        """Boot: main.py, or (raw) the raw REPL after a soft reset from it.
        keep: what the USB client sent after a Ctrl-C waits for this boot's REPL."""
        self.boots += 1
        self.usb.reset_tty()
        self.raw = False
        self.tail = b""
        self.boot_raw = raw
        self.ctrl_a_sent = False
        self.hidden = b""
        if keep and self.held is not None:
            self.hold_until = time.monotonic() + _HOLD_S
        else:
            self.held = bytearray() if raw else None
        fd = self.usb.board_s
        self.p = procs.spawn(self._argv(raw), stdin=fd, stdout=fd, stderr=fd, cwd=self.dir, env=firmware.reader_env())
        self.event("boot %d %s" % (self.boots, "raw" if raw else "main"))

    def power_off(self) -> None:
        if self.p is not None:
            procs.kill(self.p)
            self.p = None
            self.event("off")
        self.held = None
        self.boot_raw = False
        # What the dead board had not read yet is gone with it.
        for cable in (self.usb, self.test):
            termios.tcflush(cable.board_s, termios.TCIFLUSH)
            cable.to_board.clear()
            while _recv(cable.user_m):
                pass

    # ---- the USB port ----

    def _from_user(self, data: bytes) -> None:
        if self.p is None:
            return  # no power: nothing listens
        if self.held is not None:
            self.held += data
            return
        i = data.find(bytes([CTRL_C]))
        if i >= 0 and self.usb.running():
            self.usb.to_board += data[:i]
            self.p.send_signal(signal.SIGINT)
            self.held = bytearray(data[i + 1 :])
            self.hold_until = time.monotonic() + _HOLD_S
            return
        if self.raw and CTRL_B in data:
            self.raw = False
        self.usb.to_board += data

    def _release(self) -> None:
        if self.held is None or self.boot_raw:
            return
        if self.usb.running() and time.monotonic() < self.hold_until:
            return
        data, self.held = bytes(self.held), None
        if data:
            self._from_user(data)

    def _from_board(self, data: bytes) -> None:
        if self.boot_raw:
            self.hidden = (self.hidden + data)[-4096:]
            i = self.hidden.find(RAW_PROMPT)
            if i < 0:
                return
            data, self.hidden, self.boot_raw = self.hidden[i:], b"", False
            self.hold_until = 0.0
        self.tail = (self.tail + data)[-64:]
        if RAW_PROMPT in self.tail:
            self.raw = True
            self.tail = b""
        self.usb.to_user += data

    def _exited(self, status: int) -> None:
        self.p = None
        if status == 0:
            # The unix port exits where a board soft-resets (Ctrl-D at a REPL).
            raw = self.raw
            self.usb.to_user += b"soft reboot\r\n" if raw else b"MPY: soft reboot\r\n"
            self.power_on(raw=raw)
            return
        # A reset (SystemExit in main.py), the host board's watchdog (SIGUSR2),
        # a crash: the board boots again from cold.
        self.event("reset" if status == -signal.SIGUSR1 else "exit %d" % status)
        self.power_on(keep=True)

    # ---- the loop ----

    def step(self, timeout: float) -> None:
        """Move what is ready (waiting up to `timeout` s) and watch the board."""
        usb, test = self.usb, self.test
        rd = [usb.user_m, usb.board_m, test.user_m, test.board_m]
        wr = [fd for fd, buf in ((usb.board_m, usb.to_board), (usb.user_m, usb.to_user)) if buf]
        wr += [fd for fd, buf in ((test.board_m, test.to_board), (test.user_m, test.to_user)) if buf]
        r, w, _ = select.select(rd, wr, [], timeout)
        if usb.user_m in r:
            self._from_user(_recv(usb.user_m))
        if usb.board_m in r:
            self._from_board(_recv(usb.board_m))
        if test.user_m in r:
            data = _recv(test.user_m)
            if self.p is not None:
                test.to_board += data
        if test.board_m in r:
            test.to_user += _recv(test.board_m)
        for fd, buf in ((usb.board_m, usb.to_board), (usb.user_m, usb.to_user)):
            if buf:
                _send(fd, buf)
        for fd, buf in ((test.board_m, test.to_board), (test.user_m, test.to_user)):
            if buf:
                _send(fd, buf)
        if self.p is not None:
            status = self.p.poll()
            if status is not None:
                procs.stop(self.p)
                self._exited(status)
            elif self.boot_raw and not self.ctrl_a_sent and not usb.running():
                usb.to_board += b"\r\x01"  # the REPL waits: into raw mode, as before the reset
                self.ctrl_a_sent = True
        self._release()

    def command(self, line: str) -> None:
        word = line.strip().lower()
        if word == "off":
            self.power_off()
        elif word == "on":
            if self.p is None:
                self.power_on()
        elif word == "reset":
            self.power_off()
            self.power_on()
        elif word:
            self.event("? off | on | reset")

    def run(self, control=None) -> None:
        """Until SIGTERM or SIGINT; `control`: a binary stream of power
        commands (one a line: off, on, reset)."""
        ctl = control.fileno() if control is not None else None
        buf = b""
        self.event("usb " + (self.usb.link or self.usb.path))
        self.event("test " + (self.test.link or self.test.path))
        self.power_on()
        while True:
            if ctl is not None and select.select([ctl], [], [], 0)[0]:
                chunk = os.read(ctl, 1024)
                if not chunk:
                    ctl = None  # no more commands; keep running
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.command(line.decode(errors="replace"))
            self.step(0.02)

    def close(self) -> None:
        if self.p is not None:
            procs.kill(self.p)
            self.p = None
        self.usb.close()
        self.test.close()


def _stop(signum, frame):
    raise SystemExit(0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m liftcard_testing.virtualboard",
        description="A virtual reader on two serial ports (USB: the REPL, for mpremote; test: the line protocol)."
        " Prints the ports, then runs until Ctrl-C. Power commands on stdin: off, on, reset.",
    )
    ap.add_argument("--dir", required=True, help="the board's flash: fs.img (littlefs) and log.img (ridelog)")
    ap.add_argument("--usb-link", help="a stable symlink to the USB port (the REPL)")
    ap.add_argument("--test-link", help="a stable symlink to the test port (the line protocol)")
    ap.add_argument("--heap", default=firmware.HEAP, help="MicroPython heap (default: the production %(default)s)")
    ap.add_argument(
        "--blank",
        action="store_true",
        help="a new flash stays empty (no firmware: the REPL only, as a freshly flashed board); "
        "without it a new flash gets the built firmware, as deploy would put it",
    )
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    rig = Rig(args.dir, args.heap, args.usb_link, args.test_link, blank=args.blank)
    try:
        rig.run(sys.stdin.buffer)
    except KeyboardInterrupt:
        pass
    finally:
        rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


class VirtualBoard:
    """A rig process for a test: its ports (`usb`, `test`), its events and
    its power. A `with` block (or stop()) makes sure it and its board are gone."""

    def __init__(self, workdir, timeout: float = 60.0, usb_link=None, test_link=None, blank: bool = False):
        self.timeout = timeout
        links = [
            *(["--usb-link", str(usb_link)] if usb_link else []),
            *(["--test-link", str(test_link)] if test_link else []),
            *(["--blank"] if blank else []),
        ]
        self.p = procs.spawn(
            [sys.executable, "-m", "liftcard_testing.virtualboard", "--dir", str(workdir), *links],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=firmware.reader_env(),
        )
        self.events: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.usb = self.wait_event("usb ")[len("usb ") :]
            self.test = self.wait_event("test ")[len("test ") :]
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        for raw in self.p.stdout:
            with self._cond:
                self.events.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.events.append("")  # the rig is gone
            self._cond.notify_all()

    def wait_event(self, prefix: str, after: int = 0, suffix: str = "") -> str:
        """The first event from index `after` on with that prefix and suffix."""
        end = time.monotonic() + self.timeout
        with self._cond:
            while True:
                for ev in self.events[after:]:
                    if ev.startswith(prefix) and ev.endswith(suffix):
                        return ev
                    assert ev != "", "the rig ended: %s" % self.events
                left = end - time.monotonic()
                assert left > 0, "no %r from the rig in %gs: %s" % (prefix, self.timeout, self.events)
                self._cond.wait(left)

    def _power(self, word: bytes) -> None:
        self.p.stdin.write(word + b"\n")
        self.p.stdin.flush()

    def power_off(self) -> None:
        """Cut the power (SIGKILL, wherever the board is); returns once it is off."""
        n = len(self.events)
        self._power(b"off")
        self.wait_event("off", n)

    def power_on(self) -> str:
        """Power on (a cold boot: main.py runs); returns the boot event."""
        n = len(self.events)
        self._power(b"on")
        return self.wait_event("boot ", n)

    def stop(self) -> None:
        procs.stop(self.p)
        with contextlib.suppress(OSError, ValueError):
            self.p.stdin.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
