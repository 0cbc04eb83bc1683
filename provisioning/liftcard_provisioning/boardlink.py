"""The USB connection to a reader board: MicroPython's raw REPL, through
mpremote's own transport (``mpremote.transport_serial.SerialTransport``) used
as a library, so there is one raw-REPL implementation, mpremote's.

    with boardlink.connect(args.port) as b:       # --port, or the one ESP32 board
        b.eval("6 * 7")                           # -> 42
        b.write_file("config.new", data); b.rename("config.new", "config.json")
        b.hashes(["main.py", "liftcard/reader.mpy"])  # {path: sha256 hex or None}

``connect`` interrupts the reader (Ctrl-C), enters the raw REPL and soft-resets
(a clean interpreter; on an ESP32 main.py does not run after a raw-REPL soft
reset, so the reader stays stopped while the technician's command works).
Paths are relative: the board's current directory is its filesystem (``/`` on
an ESP32, the reader's flash image on the virtual board).

Every error a technician can meet is a ``BoardError``: one line, exit code 2
(no board, a busy or missing port, no MicroPython answering, a transfer cut
short). Nothing here prints what it sends: callers pass secrets in ``data``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time

from . import ports as P

ENTER_ATTEMPTS = 3  # a reader reset into safe mode by the Ctrl-C loses the first Ctrl-A
ENTER_TIMEOUT_S = 10
READ_TIMEOUT_S = 5  # longest wait for one read (mpremote reads the raw-paste handshake without a retry)
EXEC_TIMEOUT_S = 10  # longest silence from the board while a command runs
QUIET_RETRY_S = 3  # a failed attempt quicker than this is retried without a word

# Hashes each path given (a JSON list) with hashlib.sha256 on the board: a dict
# path -> hex digest, None for a missing file.
_HASH = """
import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr({p: _h(p) for p in %s}))
del _h
"""

# Every file under a directory (relative paths), [] if it does not exist.
_WALK = """
import os
def _w(d, out):
    try:
        it = list(os.ilistdir(d))
    except OSError:
        return out
    for e in it:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _w(p, out)
        else:
            out.append(p)
    return out
print(repr(_w(%r, [])))
del _w
"""


class BoardError(Exception):
    """A one-line error for the technician; exit code 2."""

    code = 2


def _transport():
    try:
        from mpremote.transport_serial import SerialTransport
    except ImportError:  # pragma: no cover - mpremote is a dependency
        raise BoardError("mpremote is not installed: pip install mpremote") from None
    return SerialTransport


def _quiet():
    """mpremote prints what the board sent when a raw-REPL step fails (its
    own CLI's diagnostics): here that would be a stray line on the
    technician's stdout, maybe a piece of a file in transit, before our own
    one-line error. Kept off the screen."""
    return contextlib.redirect_stdout(io.StringIO())


def _errors():
    import serial
    from mpremote.transport import TransportError

    try:
        # pyserial's flush() and reset_input_buffer() on a port whose far end
        # went away (a board losing power) raise termios.error, which is not
        # an OSError.
        import termios

        return (TransportError, serial.SerialException, OSError, termios.error)
    except ImportError:  # Windows
        return (TransportError, serial.SerialException, OSError)


PROGRESS_BYTES = 64 * 1024  # a command's output this long gets a progress line per this much


class _Received:
    """mpremote's data_consumer for a command's output. Without one, mpremote
    grows the output a byte at a time by concatenation: quadratic, so a long
    answer (a full ride log's dump, a megabyte or more) is read slower than a
    115200-baud board sends it, and what overflows the port's buffer is lost.
    Here it goes into a bytearray, with a progress line every
    PROGRESS_BYTES (minutes at 115200 baud are not silent)."""

    def __init__(self, board: "Board"):
        self.board = board
        self.buf = bytearray()
        self.next = PROGRESS_BYTES

    def __call__(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= self.next:
            self.next += PROGRESS_BYTES
            self.board.say("  %d KB from the board on %s so far" % (len(self.buf) // 1024, self.board.port))

    def output(self) -> str:
        out = bytes(self.buf[:-1] if self.buf.endswith(b"\x04") else self.buf)  # the end-of-output mark
        return out.decode(errors="replace")


class Board:
    """An open raw-REPL session on one board (see ``connect``)."""

    def __init__(self, port: str, transport, say=None):
        self.port = port
        self.t = transport
        self.say = say or _stderr

    # ---- code ----

    def exec(self, code: str, timeout: float = EXEC_TIMEOUT_S) -> str:
        """Run `code` on the board; its output. A Python exception on the board
        is a BoardError naming its last line (the code is never shown);
        `timeout`: the longest silence from the board while it runs."""
        got = _Received(self)
        try:
            with _quiet():
                _, err = self.t.exec_raw(code, timeout=timeout, data_consumer=got)
        except _errors() as e:
            raise self.interrupted(e) from None
        out = got.output()
        if err:
            last = (err.decode(errors="replace").strip().splitlines() or ["error"])[-1]
            raise BoardError("the board refused a command on %s: %s" % (self.port, last))
        return out

    def eval(self, expr: str):
        """A Python literal the board computes."""
        import ast

        out = self.exec("print(repr(%s))" % expr).strip()
        try:
            return ast.literal_eval(out)
        except (ValueError, SyntaxError):
            raise BoardError("unexpected answer from the board on %s: %r" % (self.port, out[:60])) from None

    def interrupted(self, e: Exception) -> BoardError:
        return BoardError(
            "transfer with the board on %s interrupted (%s): check the cable and power, then run the same "
            "command again" % (self.port, str(e).splitlines()[0][:80] if str(e) else type(e).__name__)
        )

    # ---- files ----

    def hashes(self, paths) -> dict:
        """{path: sha256 hex digest, or None when the file does not exist}."""
        return self._literal(_HASH % json.dumps(list(paths)))

    def walk(self, top: str) -> list[str]:
        """Every file under directory `top` ([] if it does not exist)."""
        return self._literal(_WALK % top)

    def _literal(self, code: str):
        import ast

        out = self.exec(code).strip()
        try:
            return ast.literal_eval(out)
        except (ValueError, SyntaxError):
            raise BoardError("unexpected answer from the board on %s: %r" % (self.port, out[:60])) from None

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if self.hashes([path])[path] is None:
            return None
        try:
            with _quiet():
                return bytes(self.t.fs_readfile(path, chunk_size=512))
        except _errors() as e:
            raise self.interrupted(e) from None

    def write_file(self, path: str, data: bytes, progress=None) -> None:
        """Write `data` to `path`, making its directories; progress(done, total)."""
        self.makedirs(path.rsplit("/", 1)[0] if "/" in path else "")
        try:
            with _quiet():
                self.t.fs_writefile(path, data, chunk_size=512, progress_callback=progress)
        except _errors() as e:
            raise self.interrupted(e) from None

    def makedirs(self, d: str) -> None:
        if d:
            self.exec(
                "import os\np=''\nfor c in %r.split('/'):\n p=p+c if not p else p+'/'+c\n"
                " try:\n  os.mkdir(p)\n except OSError:\n  pass" % d
            )

    def remove(self, path: str) -> None:
        """Remove a file; no error if it is not there."""
        self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass" % path)

    def rename(self, old: str, new: str) -> None:
        """os.rename on the board (littlefs: replaces `new` atomically)."""
        self.exec("import os\nos.rename(%r, %r)" % (old, new))

    # ---- the session ----

    def soft_reset(self) -> None:
        """Ctrl-D at the raw REPL: a fresh interpreter (main.py not run)."""
        try:
            with _quiet():
                self.t.enter_raw_repl(soft_reset=True)
        except _errors() as e:
            raise self.interrupted(e) from None

    def close(self, run: bool = False) -> None:
        """Leave the raw REPL; `run`: then soft-reset at the friendly REPL, so
        main.py (the reader) runs again."""
        with contextlib.suppress(*_errors()):
            self.t.exit_raw_repl()
            if run:
                self.t.serial.write(b"\x04")
                self.t.read_until(1, b"soft reboot\r\n", timeout=5)
        with contextlib.suppress(*_errors()):
            self.t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resync(t) -> None:
    """At the raw REPL: drop what the board said before (a reader stopped
    while it booted can print after the banner mpremote waited for), then ask
    for the banner again (Ctrl-A at the raw REPL), leaving its '>' for exec."""
    s = t.serial
    old = s.timeout
    s.timeout = 0.3
    try:
        while s.read(4096):
            pass
    finally:
        s.timeout = old
    s.write(b"\x01")
    data = t.read_until(1, b"raw REPL; CTRL-B to exit\r\n", timeout_overall=ENTER_TIMEOUT_S)
    if not data.endswith(b"raw REPL; CTRL-B to exit\r\n"):
        from mpremote.transport import TransportError

        raise TransportError("could not enter raw repl")
    t.exec("pass")  # the raw REPL answers: in step with the board


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def connect(port: str | None, ports=None, say=_stderr) -> Board:
    """Open the board on `port` (None: the one ESP32 board plugged in), stop
    the reader and enter the raw REPL. BoardError on anything a technician can
    fix: no board, a busy or missing port, no MicroPython answering."""
    try:
        port = P.board_port(port, ports)
        P.check_free(port)
    except P.PortError as e:
        raise BoardError(str(e)) from None
    SerialTransport = _transport()
    from mpremote.transport import TransportError

    try:
        # A read time-out: on a pty mpremote reads without one, and its own
        # time-outs (read_until) could then wait forever for a silent board.
        t = SerialTransport(port, baudrate=115200, timeout=READ_TIMEOUT_S)
    except (TransportError, OSError) as e:
        raise BoardError("cannot open %s: %s" % (port, e)) from None
    last = None
    waited = 0.0
    for attempt in range(ENTER_ATTEMPTS):
        t0 = time.monotonic()
        try:
            if attempt and waited >= QUIET_RETRY_S:
                # An attempt that timed out waited ENTER_TIMEOUT_S: say so, rather
                # than a silent half minute (a quick retry, the usual lost Ctrl-A, is not news).
                say(
                    "waiting for the MicroPython REPL on %s: no answer in %d s, trying again (%d of %d)"
                    % (port, round(waited), attempt + 1, ENTER_ATTEMPTS)
                )
            if attempt:
                # A command cut short (a client killed mid-transfer) leaves the
                # raw REPL reading it: Ctrl-D ends it (at the friendly REPL it
                # is a soft reset, which the Ctrl-C below stops again).
                t.serial.write(b"\x04")
            with _quiet():
                t.enter_raw_repl(soft_reset=True, timeout_overall=ENTER_TIMEOUT_S)
                _resync(t)
            return Board(port, t, say)
        except _errors() as e:
            last = e
            waited = time.monotonic() - t0
    with contextlib.suppress(*_errors()):
        t.close()
    raise BoardError(
        "no MicroPython REPL answering on %s (%s): is it a reader board? If it is new, flash it first "
        "(liftcard-provision flash); otherwise unplug and replug it and try again"
        % (port, str(last).splitlines()[0][:60] if last and str(last) else "no answer")
    )
