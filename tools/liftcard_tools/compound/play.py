"""Playing the script against the running compound: each tap at its
simulated time (mapped to real time by the Clock), each event as it comes,
progress once a simulated hour, and, after a card update, every reader
watched until it holds the new whitelist (the arrival the revocation latency
is measured to). Then the drain: until every reader's log is acknowledged
and the ledger holds what the gateway stored.

A tap is sent to its reader together with the simulated time, in one write
(`TIME t` then `TAP card floor`): the reader handles both lines before its
idle loop runs again, so no TIME from the gateway (which sends real time)
can come between them, and the ride carries the simulated time.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

from liftcard_gateway.upstream import upstream_backlog
from liftcard_protocol.ride import RideRecord

from .schedule import ACTIVE_S, DAY_S, DAY_START_S

WATCH_EVERY_S = 0.15  # real seconds between two STATUS asked of a watched reader (it must idle too)
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Played:
    """One tap and the ride record the reader answered with."""

    tap: object  # schedule.Tap
    raw: bytes
    rec: RideRecord
    n: int  # the order of the player's exchanges with the readers (taps and STATUS alike)
    real: float  # seconds into the play


@dataclass(frozen=True)
class Seen:
    """A reader's STATUS showed whitelist `version` at simulated time t (real: seconds into the play)."""

    reader_id: int
    version: int
    t: int
    real: float
    n: int


class Player:
    def __init__(self, site, script, clock, progress, bank):
        self.site = site
        self.script = script
        self.clock = clock
        self.progress = progress
        self.bank = bank
        self.played: list[Played] = []
        self.seen: list[Seen] = []
        self.issued: dict[int, tuple] = {}  # version -> (simulated time, real seconds into the play)
        self._watch: dict[int, int] = {}  # reader -> version it is watched for
        self._last_ask: dict[int, float] = {}
        self._t0 = 0.0
        self._n = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    # -- time ---------------------------------------------------------------------------
    def real_now(self) -> float:
        return time.monotonic() - self._t0

    def sim_now(self) -> int:
        """The simulated time the real clock has reached (inverse of Clock.real)."""
        s = self.real_now() * self.clock.speed
        day, into = divmod(s, ACTIVE_S)
        return int(self.clock.start + day * DAY_S + DAY_START_S + into)

    def _until(self, t: int) -> None:
        target = self.clock.real(t)
        while True:
            self._check_watched()
            left = target - self.real_now()
            if left <= 0:
                return
            time.sleep(min(left, 0.03))

    # -- the play -----------------------------------------------------------------------
    def run(self) -> None:
        items = []
        for i, e in enumerate(self.script.events):
            items.append((e.t, 0, i, "event", e))
        for i, tp in enumerate(self.script.taps):
            items.append((tp.t, 2, i, "tap", tp))
        for day in range(self.clock.days):
            for h in range(6, 24):
                t = self.clock.at(day, h * 3600)
                if t <= self.clock.end:
                    items.append((t, 1, h, "tick", None))
        heapq.heapify(items)
        self._t0 = time.monotonic()
        while items:
            t, _, _, kind, what = heapq.heappop(items)
            self._until(t)
            if kind == "tap":
                self._tap(what)
            elif kind == "event":
                self._event(what)
            else:
                self.progress.tick(t, self.played, self.backlogs())

    def _tap(self, tp) -> None:
        r = self.site.readers[tp.reader_id]
        r.send(b"TIME %d\nTAP %016x %d\n" % (tp.t, tp.card_id, tp.floor))
        lines = r.until("RIDE ")
        if not any(ln.startswith("OK time") for ln in lines):
            raise RuntimeError("reader %d refused the time: %s" % (tp.reader_id, "".join(lines).strip()))
        raw = bytes.fromhex(lines[-1].split()[1])
        self.played.append(Played(tp, raw, RideRecord.unpack(raw), self._next(), self.real_now()))

    def _event(self, e) -> None:
        self.progress.event(e.t, e.text)
        s = self.site
        if e.kind == "issue":
            cv = next(v for v in self.script.versions if v.version == e.version)
            self.issued[e.version] = (e.t, self.real_now())
            self.bank.issue(cv)
            for rid in s.readers:
                self._watch[rid] = max(self._watch.get(rid, 0), e.version)
        elif e.kind == "register":
            self.bank.import_register(e.rows)
        elif e.kind == "cost":
            for c in e.costs:
                self.bank.enter_cost(c)
        elif e.kind == "cut":
            s.cut(e.reader_id)
        elif e.kind == "restore":
            st = s.readers[e.reader_id].status()
            self.progress.line(
                "           reader %d while cut off: uplink %s, %d rides waiting on its flash"
                % (e.reader_id, st["uplink"], st["backlog"])
            )
            s.restore(e.reader_id)
        elif e.kind == "kill_gateway":
            s.kill_gateway()
        elif e.kind == "start_gateway":
            s.start_gateway()
        elif e.kind == "kill_ledger":
            s.kill_ledger()
        elif e.kind == "start_ledger":
            s.start_ledger()
        elif e.kind == "stop_bank":
            s.bank.stop()
        elif e.kind == "start_bank":
            s.bank.start()
        else:  # pragma: no cover - the script names only the kinds above
            raise ValueError(e.kind)

    # -- whitelist arrivals ---------------------------------------------------------------
    def _check_watched(self) -> None:
        now = self.real_now()
        for rid, want in list(self._watch.items()):
            if now - self._last_ask.get(rid, -1.0) < WATCH_EVERY_S:
                continue
            self._last_ask[rid] = now
            held = self.site.readers[rid].status()["whitelist_version"]
            if not any(x.reader_id == rid and x.version == held for x in self.seen):
                self.seen.append(Seen(rid, held, self.sim_now(), now, self._next()))
            if held >= want:
                del self._watch[rid]
                if want in self.issued:
                    self.progress.arrival(rid, want, self.sim_now() - self.issued[want][0], now - self.issued[want][1])

    def wait_whitelists(self, version: int, timeout: float = 60.0) -> None:
        """Before the play: every reader holds `version` (their first list)."""
        for rid in self.site.readers:
            self._watch[rid] = version
        end = time.monotonic() + timeout
        while self._watch and time.monotonic() < end:
            self._check_watched()
            time.sleep(0.05)
        if self._watch:
            raise RuntimeError("readers %s never got whitelist v%d" % (sorted(self._watch), version))
        self.seen.clear()
        self._last_ask.clear()  # asked on the clock before the play's

    def backlogs(self) -> dict:
        return {rid: r.status()["backlog"] for rid, r in self.site.readers.items()}

    # -- the drain ------------------------------------------------------------------------
    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Until every reader's log is acknowledged, the gateway has forwarded
        everything and the ledger holds as many rides as the gateway; False on timeout."""
        self.bank.join()
        end = time.monotonic() + timeout
        last = {rid: 0 for rid in self.site.readers}
        for p in self.played:
            last[p.tap.reader_id] = max(last[p.tap.reader_id], p.rec.seq)
        while time.monotonic() < end:
            self._check_watched()
            acked = all(r.status()["acked"] >= last[rid] for rid, r in self.site.readers.items())
            if acked:
                n_gw = len(self.site.gw_rides())
                if (
                    n_gw == len(self.played)
                    and sum(upstream_backlog(self.site.db_path).values()) == 0
                    and len(self.site.ledger_rides()) == n_gw
                ):
                    return True
            time.sleep(0.3)
        return False
