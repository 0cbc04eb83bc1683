"""Who lives in the compound: buildings, their elevators (one reader each),
households on floors, the people of each household and their cards, the
visitors' cards, and the tariff every reader applies.

Everything is drawn from one random.Random(seed), so a seed gives the same
compound every time. Ids follow one pattern so a line of output can be read
at a glance: building b (1, 2, ...) has readers b*100+1, b*100+2 (its
elevators), households b*10000 + floor*100 + n, and card ids that start with
the bank's prefix 6217 and carry the building and household.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import CLASS_NAMES, Klass, Status

FLOORS = 7  # floor indexes 0 (ground) .. 6: the six-storey walk-ups being retrofitted
GROUND = 0
FEE_FEN = [0, 0, 10, 20, 30, 40, 50]  # the first floor is free: it was never a climb
# Low, so that a large family on a high floor reaches it within a demo of a
# few days (a real compound's cap is around 3000 fen).
MONTHLY_CAP_FEN = 400
UTC_OFFSET_MIN = 480
# The readers' debounce window runs on their monotonic clock, which is real
# time; simulated time runs thousands of times faster, so a window of any
# realistic length would swallow a whole simulated morning. Off in the compound.
DEBOUNCE_S = 0
BANK_PREFIX = 0x6217


def tariff() -> dict:
    return {
        "fee_fen": list(FEE_FEN),
        "free_classes": ["exempt"],
        "monthly_cap_fen": MONTHLY_CAP_FEN,
        "debounce_s": DEBOUNCE_S,
    }


def reader_config(reader_id: int, building_id: int) -> dict:
    """A reader's config without its key and uplink (compoundsite adds them)."""
    return {
        "reader_id": reader_id,
        "building_id": building_id,
        "floors": FLOORS,
        "ground_floor": GROUND,
        "utc_offset_min": UTC_OFFSET_MIN,
        "tariff": tariff(),
    }


@dataclass
class Person:
    name: str
    role: str  # worker, student, elder (free class), visitor
    card: CardRecord


@dataclass
class Household:
    household_id: int
    building_id: int
    floor: int
    reader_id: int  # the elevator of its stairwell
    people: list = field(default_factory=list)
    moves_in: bool = False  # moves in during the first day: its cards come with a later card update


@dataclass
class Building:
    building_id: int
    reader_ids: list
    households: list = field(default_factory=list)


@dataclass
class Compound:
    buildings: list
    visitors: list  # (Person, Household visited): cards valid on the first day only

    @property
    def reader_ids(self) -> list:
        return [r for b in self.buildings for r in b.reader_ids]

    def building(self, building_id: int) -> Building:
        return next(b for b in self.buildings if b.building_id == building_id)

    def households(self) -> list:
        return [h for b in self.buildings for h in b.households]

    def household(self, household_id: int) -> Household:
        return next(h for h in self.households() if h.household_id == household_id)


_SURNAMES = ("Zhang", "Wang", "Li", "Zhao", "Liu", "Chen", "Yang", "Huang", "Zhou", "Wu", "Xu", "Sun", "Ma", "Zhu")
_GIVEN = ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Jun", "Hui", "Tao", "Ying", "Qiang", "Xia", "Bo", "Lan", "Hao")


def card_id(building_id: int, household_id: int, serial: int) -> int:
    return BANK_PREFIX << 48 | (building_id & 0xFF) << 40 | (household_id & 0xFFFFFF) << 8 | serial & 0xFF


def elevators_per_building(buildings: int, elevators: int) -> list:
    """`elevators` spread over `buildings`, each with one or two (the larger first)."""
    if not buildings <= elevators <= 2 * buildings:
        raise ValueError("--elevators must be between --buildings and twice --buildings")
    return [2 if i < elevators - buildings else 1 for i in range(buildings)]


def make_compound(rng: random.Random, buildings: int, elevators: int, households: int, first_day: int) -> Compound:
    """`households` per building on floors 2..6, each with 1..5 people; an
    elder (free class) in the first and in about a third of the others; in one building a family
    moves in during the first day (its cards come with a later card update).
    Each building also has a visitor whose card expires after the first day
    (`first_day`: its local day number)."""
    out = []
    visitors = []
    for b_index, n_elev in enumerate(elevators_per_building(buildings, elevators)):
        bid = b_index + 1
        b = Building(bid, [bid * 100 + e + 1 for e in range(n_elev)])
        per_floor: dict = {}
        for i in range(households):
            # Floors 2..6: nobody takes the lift to the first floor (and it is free).
            floor = 2 + (i * 3 + rng.randrange(2)) % (FLOORS - 2)
            per_floor[floor] = per_floor.get(floor, 0) + 1
            hid = bid * 10000 + floor * 100 + per_floor[floor]
            hh = Household(hid, bid, floor, b.reader_ids[i % n_elev])
            surname = rng.choice(_SURNAMES)
            roles = ["worker"] + rng.sample(["worker", "student", "elder", "worker"], rng.randrange(0, 4))
            if i == 0 and "elder" not in roles:
                roles.append("elder")  # every building has someone on the free class
            for serial, role in enumerate(roles, 1):
                klass = Klass.EXEMPT if role == "elder" else Klass.RESIDENT
                rec = CardRecord(card_id(bid, hid, serial), hid, 1 << GROUND | 1 << floor, Status.ACTIVE, klass)
                name = "%s %s (%s)" % (surname, _GIVEN[(hid + serial * 7) % len(_GIVEN)], role)
                hh.people.append(Person(name, role, rec))
            b.households.append(hh)
        if (bid == 2 or buildings == 1) and households > 1:
            b.households[-1].moves_in = True
        host = b.households[0]
        floors = 1 << GROUND | 1 << host.floor
        rec = CardRecord(
            card_id(bid, host.household_id, 0x80), host.household_id, floors, Status.ACTIVE, Klass.VISITOR, first_day
        )
        visitors.append((Person("a visitor of household %d" % host.household_id, "visitor", rec), host))
        out.append(b)
    return Compound(out, visitors)


def register_rows(compound: Compound, moved_in: bool) -> list:
    """The bank's household register, (building, household, floor) a line: every
    household of the compound, the family moving in only once it has (`moved_in`).
    The floor is the household's floor index, which is its number of storeys
    above the ground floor (index 0): what the ledger shares a cost by."""
    return [(h.building_id, h.household_id, h.floor) for h in compound.households() if moved_in or not h.moves_in]


def card_entry(building_id: int, rec: CardRecord, op: str = "upsert") -> dict:
    """A card as the bank's input file lists it (liftcard-bank update --from)."""
    if op == "remove":
        return {"building_id": building_id, "card_id": "%016x" % rec.card_id, "op": "remove"}
    floors = [f for f in range(16) if rec.floors >> f & 1]
    return {
        "building_id": building_id,
        "card_id": "%016x" % rec.card_id,
        "household": rec.household,
        "floors": floors,
        "status": ("active", "suspended", "lost", "expired")[rec.status],
        "class": CLASS_NAMES[rec.klass],
        "valid_until": None if rec.valid_until == 0xFFFF else rec.valid_until,
    }
