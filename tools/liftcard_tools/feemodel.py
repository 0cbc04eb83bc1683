"""Reference model of the "Fee rules" in docs/formats.md, in plain CPython.

It is written for clarity, not speed: unbounded dictionaries instead of the
reader's fixed tables, so it never reports CAP_UNTRACKED. It produces the
expected outcomes in tests/vectors/fees.jsonl, which the firmware must match.

For one tap of a card at the car's current floor `at` (0xFF = unknown):

1. Lookup. A card not in `cards`: UNKNOWN_CARD, household 0, floor 0xFF.
2. Status. suspended -> SUSPENDED, lost -> LOST, expired -> EXPIRED (status is
   checked first, so a lost card past its end date reports LOST). Then, when
   valid_until != 0xFFFF and local_day(epoch_s) > valid_until: EXPIRED. The
   card is still valid during the whole local day valid_until. These denials
   carry floor 0xFF: the destination is not known yet.
3. Destination. home = the highest set bit of the floor mask other than
   ground_floor, or ground_floor if there is none. Boarding at the ground floor
   or at an unknown floor (0xFF) goes home; boarding anywhere else goes to the
   ground floor. NO_FLOOR when the destination is not in the mask, or is not a
   floor of the building (index >= config floors: a mask bit the building does
   not have; the firmware does the same). NO_FLOOR carries the destination.
4. Granted. The fee starts at fee_fen[destination]; the first of these that
   applies decides (the others are not looked at, so at most one of the three
   flags is set):
   - DEBOUNCED: see "Debounce" below. Fee 0.
   - FREE_CLASS: the card's class is in tariff.free_classes. Fee 0 (the flag is
     set even when fee_fen[destination] is 0).
   - monthly cap (monthly_cap_fen > 0): fee = min(fee, cap - spent), where spent
     is what the card's household has been charged in the current local month
     (month_key(epoch_s, utc_offset_min)); CAPPED when that lowered the fee. A
     cap of 0 means no cap. The household's spend then grows by the fee.
5. Every denial costs 0. The clock-unsynced flag is the caller's concern: the
   model takes epoch_s at face value.

Debounce (the exact rule)
    Each card has an *anchor*: the mono_ms of its last granted tap that was not
    itself debounced (free-class and capped-to-zero taps count: they are granted
    and not debounced), i.e. the window runs from the last charged-or-granted
    non-debounced tap. A granted tap is debounced when the card has an anchor
    and `mono_ms - anchor < debounce_s * 1000`, strictly less: a re-tap exactly
    debounce_s seconds after the anchor is a new ride and is charged. A debounced
    tap does NOT move the anchor, so the window never extends itself: with a
    30 s window and a tap every 20 s, the taps at 0, 40, 80 s ... are charged
    and those at 20, 60 s ... are debounced. Denied taps neither set nor clear
    the anchor. The window is per card (two cards of one household do not
    debounce each other) and ignores the direction of travel. debounce_s = 0
    disables debouncing. mono_ms is a monotonic clock and must not go backwards.

Monthly spend is kept per (household, month_key), so the cap "resets" when the
local month changes (at local midnight of the 1st, in the config's utc_offset_min).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from liftcard_protocol.card import CardRecord
from liftcard_protocol.codes import Flag, Result, Status
from liftcard_protocol.epoch import local_day, month_key
from liftcard_protocol.fields import NO_END, NO_FLOOR
from liftcard_protocol.readerconfig import free_class_mask, validate_config

_GRANTED = int(Result.GRANTED)
_STATUS_DENIAL = {
    Status.SUSPENDED: Result.SUSPENDED,
    Status.LOST: Result.LOST,
    Status.EXPIRED: Result.EXPIRED,
}


@dataclass(frozen=True)
class Decision:
    result: int  # Result code, 0 = granted
    fee: int  # fen charged (integer)
    flags: int  # Flag bits (DEBOUNCED / FREE_CLASS / CAPPED only)
    floor: int  # destination floor index, 0xFF when not known
    household: int  # the card's household, 0 for an unknown card

    def to_fields(self) -> dict:
        return {
            "result": self.result,
            "fee": self.fee,
            "flags": self.flags,
            "floor": self.floor,
            "household": self.household,
        }


def home_floor(mask: int, ground: int) -> int:
    """Highest allowed floor other than the ground floor, else the ground floor."""
    for f in range(15, -1, -1):
        if f != ground and mask >> f & 1:
            return f
    return ground


def destination(mask: int, ground: int, at_floor: int) -> int:
    if at_floor == ground or at_floor == NO_FLOOR:
        return home_floor(mask, ground)
    return ground


class FeeModel:
    """The fee rules for one reader (see the module docstring for every rule).

    config: a reader config (validated here with validate_config).
    cards: card_id -> CardRecord, the reader's current whitelist."""

    def __init__(self, config: Mapping, cards: Mapping[int, CardRecord]):
        cfg = validate_config(config)
        self.floors = cfg["floors"]
        self.ground = cfg["ground_floor"]
        self.utc_offset_min = cfg["utc_offset_min"]
        tariff = cfg["tariff"]
        self.fee_fen = list(tariff["fee_fen"])
        self.free_mask = free_class_mask(cfg)
        self.cap = tariff["monthly_cap_fen"]
        self.window_ms = tariff["debounce_s"] * 1000
        self.cards = dict(cards)
        self._anchor_ms: dict[int, int] = {}  # card_id -> mono_ms of the debounce anchor
        self._spent: dict[tuple[int, int], int] = {}  # (household, month_key) -> fen

    def spent(self, household: int, month: int) -> int:
        """Fen charged to a household in a month (month = year*100+month)."""
        return self._spent.get((household, month), 0)

    def tap(self, card_id: int, at_floor: int, mono_ms: int, epoch_s: int) -> Decision:
        card = self.cards.get(card_id)
        if card is None:
            return Decision(int(Result.UNKNOWN_CARD), 0, 0, NO_FLOOR, 0)
        hh = card.household

        def deny(result: int, floor: int = NO_FLOOR) -> Decision:
            return Decision(int(result), 0, 0, floor, hh)

        if card.status in _STATUS_DENIAL:
            return deny(_STATUS_DENIAL[card.status])
        if card.valid_until != NO_END and local_day(epoch_s, self.utc_offset_min) > card.valid_until:
            return deny(Result.EXPIRED)

        dest = destination(card.floors, self.ground, at_floor)
        if dest >= self.floors or not card.floors >> dest & 1:
            return deny(Result.NO_FLOOR, dest)

        anchor = self._anchor_ms.get(card_id)
        if anchor is not None and mono_ms - anchor < self.window_ms:
            # Granted, free, and the anchor stays where it is.
            return Decision(_GRANTED, 0, int(Flag.DEBOUNCED), dest, hh)
        self._anchor_ms[card_id] = mono_ms

        if self.free_mask >> card.klass & 1:
            return Decision(_GRANTED, 0, int(Flag.FREE_CLASS), dest, hh)

        fee = self.fee_fen[dest]
        flags = 0
        month = month_key(epoch_s, self.utc_offset_min)
        spent = self._spent.get((hh, month), 0)
        if self.cap:
            left = max(0, self.cap - spent)
            if fee > left:
                fee = left
                flags = int(Flag.CAPPED)
        # Tracked with or without a cap, so spent() always reports the month's total.
        self._spent[(hh, month)] = spent + fee
        return Decision(_GRANTED, fee, flags, dest, hh)
