#!/usr/bin/env bash
# The main job: a virtual reader (the firmware under the real MicroPython) takes a
# scripted stream of taps, shows each decision and fee, then the log summary.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec liftcard-demo "$@"
