"""The bank's part in the run: a card version becomes the bank's input file
(cards-vN.json), is signed with the bank's key by liftcard-bank's
make_update, and is published to the gateway by the ledger's publish_card on
the bank broker, as the card publisher. Each issue runs in a thread of its own
(a TLS connection takes a moment; the residents do not wait), and publishes
again if the gateway has not applied it after a while (a redelivery is
harmless: the gateway takes a version once)."""

from __future__ import annotations

import json
import threading
import time

from liftcard_tools.bank import make_update
from liftcard_tools.ledger import load_config, publish_card

from .population import card_entry

APPLY_WAIT_S = 15.0
TRIES = 6


class BankSide:
    def __init__(self, site, say):
        self.site = site
        self.say = say  # one line of progress
        self.dir = site.dir / "bank"
        self.threads: list[threading.Thread] = []
        self.failures: list[str] = []

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

    def join(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
