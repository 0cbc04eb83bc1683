"""Logging: stdlib `logging`, one JSON object per line (docs/gateway.md,
docs/operations.md "The journal").

Every program logs *events*: `log = events("liftcard.gateway")`, then
`log("stored", reader_id=7, rides=3)` makes one record on that logger whose
JSON line is

    {"ts":1735689600.123,"event":"stored","reader_id":7,"rides":3}

`ts` is the record's time (Unix seconds, 3 decimals), then `event`, then the
fields in the order given. Records of other loggers (paho's own diagnostics,
wired in by mqttservice.py) become `{"ts":..,"event":"log","logger":..,
"level":..,"message":..}`; an exception attached to one shows as its type
name only, never a traceback.

Callers pass only safe fields: never a card id, a key, a password, a MAC or
a payload (a `config.Secret` prints as "Secret(<hidden>)" anyway).

Loggers: `liftcard.gateway` (the daemon), `liftcard.cards` (the card
service), `liftcard.upstream`, `liftcard.ledger`; paho's under each as
`<name>.paho`. `setup()` sends everything under `liftcard` to stderr as JSON
lines (the programs' `run` commands call it; journald keeps stderr).

`MemoryLog` is a logger that keeps its event records as dicts (tests, and
tools that run a component in their own process).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

ROOT = "liftcard"

# Event names logged above INFO: what an operator alerts on (docs/operations.md).
_WARNING_EVENTS = frozenset(
    {
        "refused",
        "broker_refused",
        "disconnected",
        "gap",
        "time_not_sent",
        "card_update_refused",
        "upstream_refused",
        "upstream_broker_refused",
        "upstream_disconnected",
        "config_refused",
        "config_needs_restart",
    }
)
_ERROR_EVENTS = frozenset({"error", "upstream_error"})


def _level(event: str) -> int:
    if event in _ERROR_EVENTS:
        return logging.ERROR
    if event in _WARNING_EVENTS:
        return logging.WARNING
    return logging.INFO


class EventLog:
    """log(event, **fields): one record on `logger` (module docstring)."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def __call__(self, event: str, **fields) -> None:
        self.logger.log(_level(event), event, extra={"event": event, "fields": fields})

    def __repr__(self) -> str:
        return "EventLog(%s)" % self.logger.name


def events(log: "logging.Logger | EventLog | str") -> EventLog:
    """The event log of a logger, of a logger's name, or `log` itself if it is one."""
    if isinstance(log, EventLog):
        return log
    if isinstance(log, str):
        log = logging.getLogger(log)
    return EventLog(log)


def event_dict(record: logging.LogRecord) -> dict:
    """The event and its fields of a record: its JSON line without `ts`."""
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict) and isinstance(getattr(record, "event", None), str):
        out = {"event": record.event}
        out.update(fields)
        return out
    out = {"event": "log", "logger": record.name, "level": record.levelname.lower()}
    try:
        out["message"] = record.getMessage()
    except Exception:  # a bad format string in someone else's call
        out["message"] = str(record.msg)
    if record.exc_info and record.exc_info[0] is not None:
        out["error"] = record.exc_info[0].__name__
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line, compact: `ts`, then event_dict()."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3)}
        line.update(event_dict(record))
        return json.dumps(line, separators=(",", ":"), default=str)


class _StreamHandler(logging.StreamHandler):
    """A stream that fails (a closed stderr) must not stop the program."""

    def handleError(self, record) -> None:
        pass


def setup(stream=None, level: int = logging.INFO) -> logging.Handler:
    """Send every record under `liftcard` to `stream` (default: stderr) as JSON
    lines, at `level` and above. Replaces what an earlier call installed."""
    root = logging.getLogger(ROOT)
    for h in list(root.handlers):
        if getattr(h, "_liftcard", False):
            root.removeHandler(h)
    h = _StreamHandler(sys.stderr if stream is None else stream)
    h._liftcard = True
    h.setFormatter(JsonFormatter())
    root.addHandler(h)
    root.setLevel(level)
    root.propagate = False
    return h


class MemoryLog(logging.Logger):
    """A logger of its own (not registered, propagating nowhere) that keeps the
    dict of each event record in `records`: pass it where a component takes
    its logger (`Gateway(cfg, log=MemoryLog())`) and read what it logged
    (event_dict: the event and its fields, no time)."""

    def __init__(self, name: str = "memory"):
        super().__init__(name)
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self.addHandler(_Collector(self))

    def keep(self, rec: dict) -> None:
        """Called for each record; a subclass may check or filter it."""
        with self._lock:
            self.records.append(rec)

    def find(self, pred) -> list[dict]:
        with self._lock:
            return [r for r in self.records if pred(r)]

    def wait(self, pred, timeout: float = 10.0) -> dict:
        """The first record that satisfies pred, waiting up to timeout seconds."""
        end = time.monotonic() + timeout
        while True:
            got = self.find(pred)
            if got:
                return got[0]
            if time.monotonic() >= end:
                raise AssertionError("no such log record; have %r" % self.records[-10:])
            time.sleep(0.02)


class _Collector(logging.Handler):
    def __init__(self, owner: MemoryLog):
        super().__init__()
        self._owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        self._owner.keep(event_dict(record))
