"""The virtual reader: firmware/main.py (compiled) under the real micropython
with the production heap and its own flash images, spoken to line by line on
stdin/stdout (the host board's protocol, firmware/liftcard/lineproto.py).

Also the standard test reader: its key, ids, config and two cards, shared by
the tests that run one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from liftcard_protocol.card import CardRecord
from liftcard_protocol.ride import RideRecord
from liftcard_protocol.whitelist import build_whitelist

from . import firmware, procs

KEY = bytes(range(32))
READER, BUILDING = 1017, 12
CONFIG = {
    "reader_id": READER,
    "building_id": BUILDING,
    "floors": 7,
    "ground_floor": 0,
    "key": KEY.hex(),
    "tariff": {
        "fee_fen": [0, 0, 10, 20, 30, 40, 50],
        "free_classes": ["exempt"],
        "monthly_cap_fen": 3000,
        "debounce_s": 30,
    },
}
CARD = 0x1122334455667788
CARDS = [CardRecord(CARD, 501, 0b100001), CardRecord(0x8000000000000000, 502, 0b1001)]


class VirtualReader:
    """A reader process; boots (READY) in the constructor. `kill()` (or a
    `with` block) makes sure it is gone; `quit()` is the clean way out."""

    def __init__(self, workdir: str | Path, env: dict | None = None, args: tuple = ()):
        """env: the process's environment (default firmware.reader_env());
        args: more of main.py's options (e.g. ("--log-size", "24576"))."""
        self.dir = Path(workdir)
        self.p = procs.spawn(
            firmware.reader_argv(self.dir, *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=firmware.reader_env() if env is None else env,
            cwd=self.dir,
        )
        try:
            self.until("READY")
        except BaseException:
            self.kill()
            raise

    def until(self, prefix):
        lines = []
        while True:
            line = self.p.stdout.readline().decode(errors="replace")
            assert line, "reader exited: %s" % "".join(lines)
            lines.append(line)
            if line.startswith(prefix):
                return lines

    def send(self, raw: bytes):
        self.p.stdin.write(raw)
        self.p.stdin.flush()

    def command(self, text: str) -> str:
        self.send(text.encode() + b"\n")
        out = self.until(("OK", "ERR", "STATUS"))
        return out[-1].strip()

    def tap(self, card: int, floor: int = 0) -> RideRecord:
        self.send(b"TAP %016x %d\n" % (card, floor))
        line = self.until("RIDE ")[-1].split()
        return RideRecord.unpack(bytes.fromhex(line[1]))

    def status(self) -> dict:
        return json.loads(self.command("STATUS")[len("STATUS ") :])

    def file(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def quit(self, timeout: float = 30) -> int:
        """QUIT, then its exit status (killed if it does not exit in time)."""
        try:
            self.send(b"QUIT\n")
            self.p.stdin.close()
            return self.p.wait(timeout=timeout)
        finally:
            procs.stop(self.p)

    def kill(self) -> None:
        """SIGKILL if it still runs (a power cut); reaped and its pipes closed either way."""
        procs.kill(self.p)
        for stream in (self.p.stdin, self.p.stdout):
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


# Writes one file onto a virtual reader's flash (its littlefs image), as
# configure does on a board: mounted by the host board itself, written beside
# and renamed over (atomic.py).
_PUT = """
import sys
from board_host import Board
from liftcard import atomic
fs, log, size, src, name = sys.argv[1:]
b = Board(fs, log, fs_size=int(size))
b.mount()
with open(src, "rb") as f:
    data = f.read()
atomic.write(name, name + ".new", data)
print("OK", len(data))
"""


def put_flash_file(workdir: str | Path, name: str, data: bytes, fs_size: int = 2 * 1024 * 1024) -> None:
    """Writes `name` (a plain file name) onto the flash of the virtual reader
    in workdir, which must not be running; a first write makes the
    filesystem, as the reader's first boot would (fs_size: its --fs-size)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / (".put-" + name)
    src.write_bytes(data)
    script = workdir / ".put.py"
    script.write_text(_PUT)
    try:
        p = procs.spawn(
            [
                firmware.micropython(),
                str(script),
                str(workdir / firmware.FS_IMG),
                str(workdir / firmware.LOG_IMG),
                str(fs_size),
                str(src),
                name,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=firmware.reader_env(),
            cwd=workdir,
        )
        try:
            out, _ = p.communicate(timeout=60)
        finally:
            procs.stop(p)
        assert p.returncode == 0 and out.startswith(b"OK"), out.decode(errors="replace")
    finally:
        src.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


def configured_reader(
    workdir: str | Path,
    host: str,
    port: int,
    password: str,
    keepalive: int = 10,
    args: tuple = (),
    tls: dict | None = None,
    ca_der: bytes | None = None,
) -> VirtualReader:
    """The standard test reader (CONFIG) with an uplink to host:port,
    whitelist v1 of CARDS and its clock set; killed if any step fails.
    args: more of main.py's options (VirtualReader). tls: the uplink's "tls"
    object (docs/formats.md); ca_der: the CA certificate (DER) put on its
    flash first, under tls["ca"] (default ca.der)."""
    if ca_der is not None:
        size = dict(zip(args[::2], args[1::2])).get("--fs-size", 2 * 1024 * 1024)
        put_flash_file(workdir, (tls or {}).get("ca", "ca.der"), ca_der, int(size))
    r = VirtualReader(workdir, args=args)
    try:
        uplink = {"host": host, "port": port, "password": password, "keepalive_s": keepalive}
        if tls is not None:
            uplink["tls"] = tls
        cfg = dict(CONFIG, uplink=uplink)
        path = r.file("config.json", json.dumps(cfg).encode())
        reply = r.command("CONFIG " + path)
        assert reply.startswith("OK config reader %d" % READER), reply
        assert password not in reply
        wl = r.file("wl1.bin", build_whitelist(KEY, READER, BUILDING, 1, CARDS))
        assert r.command("WL " + wl) == "OK whitelist v1 2 cards"
        assert r.command("TIME 91000000") == "OK time 91000000"
    except BaseException:
        r.kill()
        raise
    return r
