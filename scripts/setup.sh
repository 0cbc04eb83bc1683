#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian / Raspberry Pi OS machine: Debian packages
# when missing, a local venv with the project and its pinned tools, and the
# hash-checked micropython-lib files. Sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

need_apt=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || need_apt+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The local broker (tests and the demo run a private instance; see docs/broker.md).
# mosquitto lives in /usr/sbin, which is often not on a normal user's PATH.
{ command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null 2>&1 && command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.liftcard-setup"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating the venv in .venv (pip install -e '.[firmware,test]')"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[firmware,test]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -m liftcard_provisioning.mplib -q
"$VENV/bin/python" -m liftcard_provisioning.mpybuild -q   # the firmware as readers run it: .mpy in build/firmware (host-only modules: build/host)
export PATH="$VENV/bin:$PATH"
