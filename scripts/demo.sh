#!/usr/bin/env bash
# The main job: the whole compound on this computer (local Mosquitto, gateway,
# the bank's TLS broker and ledger, one virtual reader per elevator), residents
# riding in fast simulated time through card updates and faults, then the
# reconciliation; exit 1 if anything does not add up (docs/demo.md).
# --walkthrough: the one-reader walk-through instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec liftcard-demo "$@"
