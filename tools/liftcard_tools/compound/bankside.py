"""The bank's part in the run: a card version becomes the bank's input file
(cards-vN.json), is signed with the bank's key by liftcard-bank's
make_update, and is published to the gateway by the ledger's publish_card on
the bank broker, as the card publisher. Each issue runs in a thread of its own
(a TLS connection takes a moment; the residents do not wait), and publishes
again if the gateway has not applied it after a while (a redelivery is
harmless: the gateway takes a version once).

The bank also keeps the elevator funds' account book, through the ledger's
own command line (`liftcard-ledger households import`, `liftcard-ledger
cost`): the household register from the population model, and each
maintenance or repair cost. These run one after another in the order the
script gives them (a cost is shared by the register it finds), each in the
background so the residents' taps keep their times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from liftcard_tools.bank import make_update
from liftcard_tools.ledger import load_config, publish_card

from .population import card_entry

APPLY_WAIT_S = 15.0
TRIES = 6
LEDGER = "liftcard_tools.ledger"
BOOK_TRIES = 3  # exit 1 is the database out of reach (nothing written): try again


def run_ledger(*args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`liftcard-ledger ARGS...` as the bank's operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", LEDGER, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


class BankSide:
    def __init__(self, site, say):
        self.site = site
        self.say = say  # one line of progress
        self.dir = site.dir / "bank"
        self.threads: list[threading.Thread] = []
        self.failures: list[str] = []
        self._last_book: threading.Thread | None = None
        self._registers = 0

    def sign(self, cv) -> bytes:
        src = self.dir / ("cards-v%d.json" % cv.version)
        src.write_text(json.dumps({"cards": [card_entry(b, rec) for b, rec in cv.ops]}, indent=1))
        data = make_update(self.site.bank_key, self.site.compound_id, cv.version, cv.base, src)
        (self.dir / ("update-v%d.bin" % cv.version)).write_bytes(data)
        return data

    def applied(self, version: int) -> bool:
        return '"event":"card_update_applied","version":%d' % version in self.site.gw_log_text()

    def issue(self, cv, wait: bool = False) -> None:
        data = self.sign(cv)
        t = threading.Thread(target=self._publish, args=(cv.version, data), daemon=True)
        t.start()
        self.threads.append(t)
        if wait:
            t.join()

    def _publish(self, version: int, data: bytes) -> None:
        cfg = load_config(self.site.ledger_cfg)
        for _ in range(TRIES):
            try:
                publish_card(cfg, self.site.gateway_id, data)
            except Exception as e:  # the bank link may be down right now: try again
                self.say("bank: publishing card update v%d failed (%s), retrying" % (version, type(e).__name__))
                time.sleep(2)
                continue
            end = time.monotonic() + APPLY_WAIT_S
            while time.monotonic() < end:
                if self.applied(version):
                    return
                time.sleep(0.1)
        self.failures.append("card update v%d was never applied by the gateway" % version)

    # -- the account book -------------------------------------------------------------
    def import_register(self, rows, wait: bool = False) -> None:
        """Replace the register of the buildings `rows` (building, household, floor) name."""
        self._registers += 1
        path = self.dir / ("households-%d.csv" % self._registers)
        path.write_text("building,household,floor\n" + "".join("%d,%d,%d\n" % r for r in rows))
        what = "importing the household register %s" % path.name
        self._in_order(what, ("households", "import", path, "--config", self.site.ledger_cfg), wait)

    def enter_cost(self, cost) -> None:
        """A script.Cost, charged to its building's fund and shared by floor."""
        what = "entering the cost %r of building %d" % (cost.memo, cost.building_id)
        args = ("cost", "--config", self.site.ledger_cfg, "--building", cost.building_id)
        args += ("--amount-fen", cost.amount_fen, "--memo", cost.memo, "--date", cost.day)
        self._in_order(what, args, False)

    def _in_order(self, what: str, args: tuple, wait: bool) -> None:
        prev = self._last_book

        def go():
            if prev is not None:
                prev.join()
            self._book(what, args)

        t = threading.Thread(target=go, daemon=True)
        t.start()
        self._last_book = t
        self.threads.append(t)
        if wait:
            t.join()

    def _book(self, what: str, args: tuple) -> None:
        for _ in range(BOOK_TRIES):
            try:
                r = run_ledger(*args)
            except subprocess.TimeoutExpired:
                self.failures.append("%s: liftcard-ledger did not answer" % what)
                return
            if r.returncode == 0:
                for ln in r.stdout.splitlines():
                    if not ln.startswith(("cost ", "building ")):
                        break
                    self.say("           ledger: %s" % ln)
                return
            if r.returncode != 1:
                break
            time.sleep(1)
        err = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
        self.failures.append("%s: %s" % (what, err))

    def join(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
