# What goes onto a reader board, in MicroPython's manifest format.
#
# Frozen into an ESP32 image:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this repo>/firmware/manifest.py
# or compiled to .mpy for a board's filesystem (and for the host tests, the
# demo and the benchmarks) by `python -m liftcard_provisioning.mpybuild`, which
# reads this file: build/firmware/ holds exactly what is listed here.
#
# The host-only modules in firmware/host/ (the host board, the file-backed
# flash emulator) are not listed: they never go onto a board (mpybuild
# compiles them to build/host/).

include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules

# micropython-lib, the version pinned in micropython-lib.lock (fetched into
# firmware/lib/ by `python -m liftcard_provisioning.mplib`).
require("umqtt.simple")

package("liftcard")

# The entry points: boot.py then main.py run at every boot (docs/board.md).
module("boot.py")
module("main.py")
