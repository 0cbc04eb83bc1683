"""What the run shows while it plays: once a simulated hour the time, the
rides logged so far per building, how many the gateway and the ledger hold,
and each reader's backlog (rides on its flash not yet acknowledged); each
fault or bank action as it is injected; each reader's arrival of a card
update. Plain lines on stdout, so a log or a pipe keeps them."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, clock, site, building_of: dict, out=None):
        self.clock = clock
        self.site = site
        self.building_of = building_of
        self.out = out or sys.stdout

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def tick(self, t: int, played: list, backlogs: dict) -> None:
        per_b: dict = {}
        for p in played:
            b = self.building_of[p.tap.reader_id]
            per_b[b] = per_b.get(b, 0) + 1
        rides = " ".join("b%d:%d" % (b, per_b.get(b, 0)) for b in sorted(set(self.building_of.values())))
        logs = " ".join("%d:%d" % (rid, n) for rid, n in sorted(backlogs.items()))
        at_gw, at_ledger = self.site.counts()
        self.line(
            "%s  rides %s  gateway %d  ledger %d  backlog %s" % (self.clock.text(t), rides, at_gw, at_ledger, logs)
        )

    def event(self, t: int, text: str) -> None:
        self.line("%s  ** %s" % (self.clock.text(t), text))

    def arrival(self, reader_id: int, version: int, sim_s: int, real_s: float) -> None:
        self.line(
            "           reader %d holds whitelist v%d: %d simulated min (%.2f s real) after the bank issued it"
            % (reader_id, version, sim_s // 60, real_s)
        )
