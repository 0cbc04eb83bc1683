"""What happens during the run, beyond the daily traffic: the bank's card
updates and the faults, each at a simulated time.

    start      v1: a snapshot of every card (residents, elders, visitors);
                 the bank's household register (every household but the one
                 moving in) goes into the ledger
    day 1 05:45  the month's elevator maintenance is paid from each building's
                 fund (again on the 1st of each later month of the run)
    day 1 07:30  one reader's network drops for an hour, in the morning peak (08:30 back)
    day 1 09:30  v2: a family moves in: the bank issues its cards and adds it
                 to its building's register
    day 1 13:00  a resident reports a card lost: v3 marks it lost and issues
                 a replacement; from 13:05 to 21:25 someone who found the card
                 tries it at every elevator of the building every 25 minutes
    day 1 15:00  the gateway is killed (SIGKILL); 15:40 it is started again
    last 11:00   a repair (a door sensor) is paid from one building's fund
    last 17:00   the ledger is killed (SIGKILL); 18:30 started again
    last 20:00   the bank broker stops; 21:30 it is back

The card updates are ordinary bank input files (tools/liftcard_tools/bank.py
signs them); `versions` says which cards each version holds per building, so
the reconciliation can run the fee model with the list a reader held;
`costs` and `registers` say what the bank entered in the ledger's account
book, so the reconciliation can share each cost by floor itself.

The costs are small, like the monthly cap: scaled to what a few dozen
households ride in a few days, so each fund keeps a balance to show.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Status

from liftcard_protocol.epoch import day_to_date, local_day
from liftcard_tools.statement import yuan

from .population import GROUND, UTC_OFFSET_MIN, Compound, card_id, register_rows
from .schedule import Clock, Tap, all_taps, hm

# Until 22:00: long enough, in real time, for the revocation to arrive even on
# a loaded machine at a high speed, so refusals after its arrival are seen.
FINDER_TRIES = 21
FINDER_EVERY_S = 25 * 60
MAINTENANCE_FEN = 450  # per elevator and month
MAINTENANCE_MEMO = "elevator maintenance for %s"  # the month
REPAIR_FEN = 317
REPAIR_MEMO = "repair: door sensor of elevator %d"


@dataclass(frozen=True)
class Cost:
    """A maintenance or repair cost the bank enters (liftcard-ledger cost)."""

    t: int  # simulated time it is entered
    building_id: int
    amount_fen: int
    memo: str
    day: str  # the bank's local date it is charged on (YYYY-MM-DD)


@dataclass(frozen=True)
class Event:
    t: int
    # issue, register, cost, cut, restore, kill_gateway, start_gateway, kill_ledger, start_ledger, stop_bank, start_bank
    kind: str
    text: str
    reader_id: int | None = None
    version: int | None = None
    costs: tuple = ()  # Cost, for a cost event
    rows: tuple = ()  # (building, household, floor), for a register event


@dataclass(frozen=True)
class CardVersion:
    version: int
    base: int | None  # None: a snapshot
    ops: list  # (building_id, CardRecord): upserts


@dataclass(frozen=True)
class LostCard:
    card_id: int
    replacement: int
    building_id: int
    household_id: int
    version: int  # the update that revokes it
    reported: int  # simulated time of the report (and of the bank's update)
    holder: str


@dataclass
class Script:
    events: list
    versions: list  # CardVersion, in order
    taps: list
    lost: LostCard
    cut_reader: int
    cards: dict = field(default_factory=dict)  # version -> {building_id: {card_id: CardRecord}}
    costs: list = field(default_factory=list)  # Cost, in the order they are entered
    # (simulated time, rows): each import replaces the register of the buildings its rows name
    registers: list = field(default_factory=list)

    def cards_at(self, version: int, building_id: int) -> dict:
        return self.cards.get(version, {}).get(building_id, {})

    def register_at(self, building_id: int, t: int) -> list:
        """[(household, floor)] the ledger held for the building at simulated time t."""
        held = []
        for at, rows in self.registers:
            mine = sorted((h, f) for b, h, f in rows if b == building_id)
            if at <= t and mine:
                held = mine
        return held


def make_script(rng: random.Random, clock: Clock, compound: Compound) -> Script:
    last = clock.days - 1
    b1 = compound.buildings[0]
    settled = [h for h in b1.households if not h.moves_in]
    hh = rng.choice(settled)
    person = next(p for p in hh.people if p.role == "worker")
    reported = clock.at(0, hm(13))
    spare = CardRecord(card_id(b1.building_id, hh.household_id, 0x40), hh.household_id, person.card.floors)
    lost = LostCard(person.card.card_id, spare.card_id, b1.building_id, hh.household_id, 3, reported, person.name)

    def card_of(p, t):
        return spare.card_id if p is person and t >= reported else p.card.card_id

    moved_in_at = clock.at(0, hm(11))
    taps = all_taps(rng, clock, compound, card_of, moved_in_at)
    for k in range(FINDER_TRIES):
        for rid in b1.reader_ids:
            t = reported + 300 + k * FINDER_EVERY_S
            taps.append(Tap(t, rid, lost.card_id, GROUND, "finder of a lost card", hh.household_id))
    taps.sort(key=lambda x: (x.t, x.reader_id, x.card_id))

    first, newcomers = [], []
    for h in compound.households():
        for p in h.people:
            (newcomers if h.moves_in else first).append((h.building_id, p.card))
    first += [(host.building_id, p.card) for p, host in compound.visitors]
    revoked = dataclasses.replace(person.card, status=Status.LOST)
    versions = [
        CardVersion(1, None, first),
        CardVersion(2, 1, newcomers),
        CardVersion(3, 2, [(b1.building_id, revoked), (b1.building_id, spare)]),
    ]
    cards, cur = {}, {}
    for v in versions:
        for bid, rec in v.ops:
            cur.setdefault(bid, {})[rec.card_id] = rec
        cards[v.version] = {b: dict(cs) for b, cs in cur.items()}

    cut_reader = compound.reader_ids[-1]
    at = clock.at

    def local_date(t: int):
        return day_to_date(local_day(t, UTC_OFFSET_MIN))

    costs, cost_events = [], []
    for day in range(clock.days):
        t = at(day, hm(5, 45))
        if day == 0 or local_date(t).day == 1:
            month = local_date(t).strftime("%Y-%m")
            batch = tuple(
                Cost(
                    t, b.building_id, MAINTENANCE_FEN * len(b.reader_ids), MAINTENANCE_MEMO % month, str(local_date(t))
                )
                for b in compound.buildings
            )
            costs += batch
            cost_events.append(
                Event(
                    t,
                    "cost",
                    "the bank pays %s's elevator maintenance from each building's fund: %s"
                    % (month, ", ".join("b%d %s yuan" % (c.building_id, yuan(c.amount_fen)) for c in batch)),
                    costs=batch,
                )
            )
    fixed = compound.buildings[1] if len(compound.buildings) > 1 else b1
    t = at(last, hm(11))
    repair = Cost(t, fixed.building_id, REPAIR_FEN, REPAIR_MEMO % fixed.reader_ids[0], str(local_date(t)))
    costs.append(repair)
    cost_events.append(
        Event(
            t,
            "cost",
            "building %d: %s, %s yuan from its fund" % (fixed.building_id, repair.memo, yuan(repair.amount_fen)),
            costs=(repair,),
        )
    )
    registers = [(clock.start, register_rows(compound, moved_in=False))]
    movers = [h for h in compound.households() if h.moves_in]
    if movers:
        moved = {h.building_id for h in movers}
        rows = tuple(r for r in register_rows(compound, moved_in=True) if r[0] in moved)
        t = at(0, hm(9, 30))
        registers.append((t, rows))
        cost_events.append(
            Event(
                t,
                "register",
                "the bank adds household %s to the household register of building %s"
                % (", ".join(str(h.household_id) for h in movers), ", ".join(map(str, sorted(moved)))),
                rows=rows,
            )
        )
    events = [
        Event(at(0, hm(9, 30)), "issue", "the bank issues a moving-in family's cards (v2)", version=2),
        Event(at(0, hm(7, 30)), "cut", "reader %d: network down" % cut_reader, reader_id=cut_reader),
        Event(at(0, hm(8, 30)), "restore", "reader %d: network back" % cut_reader, reader_id=cut_reader),
        Event(reported, "issue", "%s reports a card lost: the bank revokes it (v3)" % person.name, version=3),
        Event(at(0, hm(15)), "kill_gateway", "the gateway is killed (SIGKILL)"),
        Event(at(0, hm(15, 40)), "start_gateway", "the gateway is started again"),
        Event(at(last, hm(17)), "kill_ledger", "the ledger is killed (SIGKILL)"),
        Event(at(last, hm(18, 30)), "start_ledger", "the ledger is started again"),
        Event(at(last, hm(20)), "stop_bank", "the bank broker stops: the bank link is down"),
        Event(at(last, hm(21, 30)), "start_bank", "the bank broker is back"),
        *cost_events,
    ]
    events.sort(key=lambda e: e.t)  # stable: the register comes after the card update of the same moment
    return Script(events, versions, taps, lost, cut_reader, cards, costs, registers)
