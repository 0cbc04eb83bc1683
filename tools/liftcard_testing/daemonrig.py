"""The gateway daemon (liftcard_gateway.daemon.Gateway) in a thread of the
test process, on a real broker, with simulated readers made on demand; all of
it stopped when the `with` block ends, pass or fail. Also the broker such
tests share (with an intruder that may write anywhere) and what the daemon's
database holds."""

from __future__ import annotations

import contextlib
import sqlite3
import threading

from liftcard_gateway.config import load_config
from liftcard_gateway.daemon import Gateway

from .configs import write_gateway_config
from .mosquitto import MosquittoInstance
from .simreader import SimReader

INTRUDER = "intruder"  # a client on the broker that may write anywhere: forged traffic


def daemon_broker(readers: dict) -> MosquittoInstance:
    """A private broker for `readers` (reader_id -> building_id) and INTRUDER
    (readwrite lc/#); use it in a with block."""
    return MosquittoInstance(readers=readers, extra_users={INTRUDER: ("topic readwrite lc/#",)})


@contextlib.contextmanager
def daemon_rig(workdir, broker, keys: dict, log, readers: dict | None = None, reader_cls=SimReader):
    """with daemon_rig(tmp_path, broker, keys, log) as (g, cfg, log, reader):

    A gateway config in workdir for `readers` (reader_id -> building_id;
    default: the broker's readers) with their `keys`, the daemon running on it
    and logging to `log`; reader(rid, **kw) makes a connected reader_cls
    (SimReader) that is closed at the end, before the daemon stops."""
    cfg = load_config(write_gateway_config(workdir, broker, keys, readers or broker.readers))
    g = Gateway(cfg, log=log)
    t = threading.Thread(target=g.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    made = []

    def reader(rid, **kw):
        r = reader_cls(broker, rid, keys[rid], **kw)
        made.append(r)
        return r

    try:
        assert g.wait_ready(10), "the gateway daemon did not get ready"
        yield g, cfg, log, reader
    finally:
        try:
            for r in made:
                r.close()
        finally:
            g.stop()
            t.join(10)
    assert not t.is_alive(), "the gateway daemon's thread did not end"


def db_acked(cfg, rid):
    """The acked seq the daemon's database holds for reader rid."""
    con = sqlite3.connect(str(cfg.db_path))
    try:
        return con.execute("SELECT acked_seq FROM readers WHERE reader_id=?", (rid,)).fetchone()[0]
    finally:
        con.close()


def db_rides(cfg, rid):
    """The seqs of reader rid's rides in the daemon's database, in order."""
    con = sqlite3.connect(str(cfg.db_path))
    try:
        return [r[0] for r in con.execute("SELECT seq FROM rides WHERE reader_id=? ORDER BY seq", (rid,))]
    finally:
        con.close()
