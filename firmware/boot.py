# Runs first at every ESP32 boot and soft reset, before main.py. Kept to what
# cannot fail: no watchdog, no network, no reader here (main.py and
# liftcard/safeboot.py decide whether the reader starts), so a technician's
# REPL always comes up.
import os
import json

try:
    import esp

    esp.osdebug(None)  # the IDF's log lines off the REPL's UART
except ImportError:
    pass  # not an ESP32 (the host's virtual board)


# A deploy whose power went inside its switch (docs/technicians.md, "deploy"):
# once .fw-new/COMMIT is on the flash the new set is the one to run, and the
# renames that were not done yet are done here, before main.py imports a
# module, so the board never runs half of each set. Idempotent (a cut in here
# is finished by the next boot) and a no-op without the marker. The one copy
# of the switch: a deploy reads this function out of this file
# (liftcard_provisioning.deploy.APPLY) and runs it over USB, so it must stay
# plain MicroPython using only os and json.
def _fw_apply(stage=".fw-new"):
    try:
        with open(stage + "/COMMIT") as f:
            plan = json.load(f)
    except OSError:
        return 0
    n = 0
    for p in plan["move"]:
        d = ""
        for c in p.split("/")[:-1]:
            d = d + "/" + c if d else c
            try:
                os.mkdir(d)
            except OSError:
                pass
        try:
            os.rename(stage + "/" + p, p)
            n += 1
        except OSError:
            pass
    for p in plan["remove"]:
        try:
            os.remove(p)
        except OSError:
            pass
    os.remove(stage + "/COMMIT")
    return n


try:
    if _fw_apply():
        print("boot: finished the switch of an interrupted deploy")
except Exception as e:  # whatever it is, the REPL must come up
    print("boot: the switch of an interrupted deploy failed:", e)
del _fw_apply
