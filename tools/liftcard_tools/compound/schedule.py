"""When people ride: the simulated clock and every tap of the run.

A day's traffic follows a walk-up's rhythm: workers leave in a morning peak
around 07:50 and come home in an evening peak around 18:40 (some go out again
after dinner), students leave before eight and are back before five, elders
(free class) go out mid-morning and for an afternoon walk, and a visitor comes
up in the afternoon. A trip out is a tap at the household's floor (down to the
ground floor, never charged); a trip home is a tap at the ground floor (up to
the household's floor, charged by floor).

Simulated time is liftcard epoch seconds, local time UTC+8. Only the active
part of each day (05:30 .. 23:30) is played; the night is skipped, so the
mapping to real time (`Clock`) runs `speed` simulated seconds per real second
during the day and jumps over the night.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .population import GROUND, UTC_OFFSET_MIN, Compound, Household, Person

DAY_S = 86400
DAY_START_S = 5 * 3600 + 1800  # 05:30
DAY_END_S = 23 * 3600 + 1800  # 23:30
ACTIVE_S = DAY_END_S - DAY_START_S


def hm(h: int, m: int = 0) -> int:
    return h * 3600 + m * 60


@dataclass(frozen=True)
class Tap:
    t: int  # liftcard epoch seconds
    reader_id: int
    card_id: int
    floor: int  # where the car is when the card is tapped
    who: str
    household_id: int  # whose card it is


class Clock:
    """Simulated time <-> real seconds since the start of the play."""

    def __init__(self, start_epoch: int, days: int, speed: float):
        self.start = start_epoch  # local midnight of the first day
        self.days = days
        self.speed = speed

    def day_and_time(self, t: int) -> tuple:
        return divmod(t - self.start, DAY_S)

    def real(self, t: int) -> float:
        day, tod = self.day_and_time(t)
        return (day * ACTIVE_S + min(max(tod - DAY_START_S, 0), ACTIVE_S)) / self.speed

    def at(self, day: int, tod: int) -> int:
        return self.start + day * DAY_S + tod

    @property
    def end(self) -> int:
        return self.at(self.days - 1, DAY_END_S)

    def text(self, t: int) -> str:
        day, tod = self.day_and_time(t)
        return "day %d %02d:%02d" % (day + 1, tod // 3600, tod // 60 % 60)

    def real_duration(self) -> float:
        return self.days * ACTIVE_S / self.speed


def start_epoch_for(local_date_day: int) -> int:
    """Liftcard epoch seconds of local midnight of local day number `local_date_day`."""
    return local_date_day * DAY_S - UTC_OFFSET_MIN * 60


def _around(rng: random.Random, mean: int, sd_min: float, lo: int, hi: int) -> int:
    return int(min(max(rng.gauss(mean, sd_min * 60), lo), hi))


def _trips(rng: random.Random, role: str) -> list:
    """(leave, return) times of day for one person's day."""
    if role == "worker":
        out = [
            (
                _around(rng, hm(7, 50), 35, hm(6), hm(10)),
                _around(rng, hm(18, 40), 60, hm(16), hm(21, 30)),
            )
        ]
        if rng.random() < 0.3:
            leave = rng.randrange(out[0][1] + 1800, max(out[0][1] + 1801, hm(22)))
            out.append((leave, min(leave + rng.randrange(2700, 7200), hm(23))))
        return out
    if role == "student":
        return [(_around(rng, hm(7, 15), 15, hm(6, 30), hm(8)), _around(rng, hm(16, 45), 30, hm(15, 30), hm(18)))]
    if role == "elder":
        leave = _around(rng, hm(9, 15), 40, hm(7), hm(11))
        out = [(leave, leave + _around(rng, 6000, 30, 1800, 10800))]
        if rng.random() < 0.5:
            walk = rng.randrange(hm(15), hm(16, 30))
            out.append((walk, walk + rng.randrange(3600, 5400)))
        return out
    raise ValueError(role)


def person_taps(rng, clock: Clock, hh: Household, p: Person, card_of, not_before: int = 0) -> list:
    """Every tap of one resident over the run. card_of(person, t) is the card they
    carry at t (a replacement after a loss)."""
    taps = []
    for day in range(clock.days):
        for leave, back in _trips(rng, p.role):
            for tod, floor in ((leave, hh.floor), (back, GROUND)):
                t = clock.at(day, tod)
                if t >= not_before:
                    taps.append(Tap(t, hh.reader_id, card_of(p, t), floor, p.name, hh.household_id))
    return taps


def visitor_taps(rng, clock: Clock, p: Person, host: Household) -> list:
    """Up in the afternoon, down an hour or two later; on a later day the card
    has expired and the one tap is refused (the visitor takes the stairs)."""
    taps = []
    for day in range(clock.days):
        up = clock.at(day, rng.randrange(hm(14), hm(16)))
        taps.append(Tap(up, host.reader_id, p.card.card_id, GROUND, p.name, host.household_id))
        if day == 0:
            down = up + rng.randrange(3600, 7200)
            taps.append(Tap(down, host.reader_id, p.card.card_id, host.floor, p.name, host.household_id))
    return taps


def all_taps(rng: random.Random, clock: Clock, compound: Compound, card_of, moved_in_at: int) -> list:
    """The whole run's taps, in time order (ties keep a stable order). A household
    that moves in rides from `moved_in_at` on."""
    taps = []
    for hh in compound.households():
        for p in hh.people:
            taps += person_taps(rng, clock, hh, p, card_of, moved_in_at if hh.moves_in else 0)
    for p, host in compound.visitors:
        taps += visitor_taps(rng, clock, p, host)
    taps.sort(key=lambda x: (x.t, x.reader_id, x.card_id))
    return taps
