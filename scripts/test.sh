#!/usr/bin/env bash
# Every test: firmware under the real MicroPython with the production heap limit,
# power-loss and bad-input tests, format vectors, fee rules, mpy-cross compilation.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
exec python -m pytest -n 2 -q "$@"
