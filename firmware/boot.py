# Runs first at every ESP32 boot, before main.py. Kept to what cannot fail:
# no watchdog, no network, no reader here (main.py and liftcard/safeboot.py
# decide whether the reader starts), so a technician's REPL always comes up.
try:
    import esp

    esp.osdebug(None)  # the IDF's log lines off the REPL's UART
except ImportError:
    pass  # not an ESP32 (the host's virtual board)
