"""The compound: the whole system on one computer, driven by a simulated
population in fast time, then reconciled (liftcard-demo, docs/demo.md).

One module per idea:

- ``population``: buildings, elevators, households, people, cards, the tariff.
- ``schedule``: the simulated clock and the daily pattern of taps.
- ``script``: the card updates, the register, the costs and the faults, at their simulated times.
- ``bankside``: the bank signs a card update and publishes it; it imports the
  household register and enters the costs with the ledger's commands.
- ``play``: playing taps and events against the running processes; the drain.
- ``progress``: what is shown while it plays.
- ``reconcile``: readers vs gateway vs ledger vs the fee model, and the lost card.
- ``book``: the ledger's account book, as its statement reads it.
- ``funds``: each fund's balance and each cost's sharing by floor, checked.
- ``pages``: each building's statement page, if the ledger offers one.
- ``banksetup``: the bank side's files for a trial by hand.
- ``cli``: the command.

The processes themselves are liftcard_testing.compoundsite's.
"""
