"""The compound: the whole system on one computer, driven by a simulated
population in fast time, then reconciled (liftcard-demo, docs/demo.md).

One module per idea:

- ``population``: buildings, elevators, households, people, cards, the tariff.
- ``schedule``: the simulated clock and the daily pattern of taps.
- ``script``: the card updates and faults, at their simulated times.
- ``bankside``: the bank signs a card update and publishes it.
- ``play``: playing taps and events against the running processes; the drain.
- ``progress``: what is shown while it plays.
- ``reconcile``: readers vs gateway vs ledger vs the fee model, and the lost card.
- ``book``: the ledger's account book, as its statement reads it.
- ``pages``: each building's statement page, if the ledger offers one.
- ``banksetup``: the bank side's files for a trial by hand.
- ``cli``: the command.

The processes themselves are liftcard_testing.compoundsite's.
"""
