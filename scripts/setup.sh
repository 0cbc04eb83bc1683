#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian / Raspberry Pi OS machine: Debian packages
# when missing, a local venv with the project and its pinned tools, and the
# hash-checked micropython-lib files. Sourced by demo.sh and test.sh, or by hand
# (`source scripts/setup.sh`): the work runs in a subshell, so the caller's shell
# options stay as they were; only ROOT, VENV and PATH (the venv first) are set.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# Not `if ! ( ... )`: bash ignores set -e inside a condition.
(
  set -euo pipefail
  need_apt=()
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || need_apt+=(python3)
  python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
  python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
  # The local broker (tests and the demo run a private instance; see docs/broker.md).
  # mosquitto lives in /usr/sbin, which is often not on a normal user's PATH.
  { command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null 2>&1 && command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
  # The browser checks of the gateway console and the ledger's statement page,
  # and the ledger's PostgreSQL tests: wanted, not required (those tests skip,
  # saying why, where these cannot be installed).
  want_apt=()
  command -v chromium >/dev/null 2>&1 || want_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || want_apt+=(chromium-driver)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want_apt+=(postgresql)
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "${#need_apt[@]}" -gt 0 ]; then
    [ "$SUDO" = none ] && { echo "setup: need the Debian packages ${need_apt[*]} (and no sudo to install them)" >&2; exit 1; }
    echo "setup: installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ "${#want_apt[@]}" -gt 0 ] && [ "$SUDO" != none ] && [ -z "${LIFTCARD_NO_APT:-}" ]; then
    echo "setup: installing Debian packages: ${want_apt[*]}"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want_apt[@]}" >/dev/null; } \
      || echo "setup: could not install ${want_apt[*]}: the tests that need them will skip" >&2
  fi

  stamp="$VENV/.liftcard-setup"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating the venv in .venv (pip install -e '.[firmware,test,ledger-pg]')"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[firmware,test,ledger-pg]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$want" > "$stamp"
  fi
  "$VENV/bin/python" -m liftcard_provisioning.mplib -q
  "$VENV/bin/python" -m liftcard_provisioning.mpybuild -q   # the firmware as readers run it: .mpy in build/firmware (host-only modules: build/host)
)
_liftcard_setup_rc=$?
if [ "$_liftcard_setup_rc" -ne 0 ]; then
  unset _liftcard_setup_rc
  echo "setup: failed (see above)" >&2
  return 1 2>/dev/null || exit 1
fi
unset _liftcard_setup_rc
export PATH="$VENV/bin:$PATH"
