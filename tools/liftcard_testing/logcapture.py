"""Event logs that keep their records, for tests that run a component in
their own process and read what it logged (liftcard_gateway.logs.MemoryLog),
checking that every record makes one JSON line."""

from __future__ import annotations

import json

from liftcard_gateway.logs import MemoryLog


class EventLog(MemoryLog):
    """A MemoryLog whose every record must serialise to one JSON object
    (strictly, unless `json_default` is given, e.g. str), with events(name)."""

    def __init__(self, name: str = "memory", json_default=None):
        super().__init__(name)
        self._json_default = json_default

    def keep(self, rec: dict) -> None:
        json.dumps(rec, default=self._json_default)  # must be one JSON object
        super().keep(rec)

    def events(self, name: str) -> list[dict]:
        return self.find(lambda r: r["event"] == name)
