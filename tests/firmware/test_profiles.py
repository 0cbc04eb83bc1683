# Board profiles (liftcard/profiles.py): every shipped profile passes its own
# check, and a wiring that uses a pin the module reserves, a missing or
# input-only pin, or one pin twice is refused with one line naming it.
from rig import check, expect_error
from liftcard import profiles
from liftcard.profiles import PROFILES


def _row(base="devkit-v1", **pins):
    row = list(PROFILES[base])
    for k, v in pins.items():
        row[getattr(profiles, k.upper())] = v
    return tuple(row)


def _refused(row, *words):
    msg = expect_error(profiles.check, "test", row)
    check("\n" not in msg and msg.startswith("board test: "), msg)
    for w in words:
        check(w in msg, "%r should say %r" % (msg, w))
    return msg


def test_profiles_shipped_ones_pass_and_default_is_devkit():
    for name in profiles.NAMES:
        check(profiles.get(name) == PROFILES[name])
    check(profiles.get() == PROFILES["devkit-v1"] == profiles.get(None))
    msg = expect_error(profiles.get, "nonesuch")
    check("unknown profile" in msg and "devkit-v1" in msg, msg)


def test_profiles_wrover_refuses_psram_pins_for_the_test_uart():
    # The devkit's test UART (16/17) on a WROVER module: PSRAM pins.
    _refused(_row("wrover-v1", test_tx=17, test_rx=16), "GPIO17", "WROVER", "PSRAM")
    _refused(_row("wrover-v1", test_rx=16), "test UART RX", "GPIO16")
    # The same pins are fine on a WROOM module.
    profiles.check("test", _row("devkit-v1", test_tx=17, test_rx=16))


def test_profiles_refuse_flash_missing_input_only_and_shared_pins():
    for pin in (6, 7, 8, 9, 10, 11):
        _refused(_row(relay=pin), "relay", "GPIO%d" % pin, "SPI flash")
    _refused(_row(buzzer=20), "no such GPIO")
    _refused(_row(led_red=40), "no such GPIO")
    _refused(_row(relay=34), "input-only")
    _refused(_row(test_tx=39), "input-only")
    profiles.check("test", _row(test_rx=36))  # an input-only pin may receive
    _refused(_row(led_green=26), "GPIO26", "twice")
    _refused(_row(safe_pin=26), "safe-mode", "another role")
    _refused(_row(safe_pin=8), "safe-mode", "SPI flash")
    _refused(_row(nfc_bus="spi"), "NFC bus")
    _refused(_row(module="esp32s3"), "unknown module")
    _refused(("wroom", 1), "11 fields")


def test_profiles_without_nfc_ignore_its_pins():
    profiles.check("test", _row(nfc_bus="", nfc_a=8, nfc_b=9))
    profiles.check("test", _row(safe_pin=-1))


def test_profiles_config_names_the_known_profiles():
    from liftcard import config as configmod
    from rig import CONFIG

    cfg = dict(CONFIG, board="wrover-v1")
    check(configmod.validate(cfg)["board"] == "wrover-v1")
    check("board" not in configmod.validate(CONFIG))
    msg = expect_error(configmod.validate, dict(CONFIG, board="nonesuch"))
    check("board must be one of devkit-v1" in msg, msg)


def test_profiles_board_name_is_read_before_the_config_is_loaded():
    import json
    import rig
    from liftcard import config as configmod

    f = rig.path("cfg-board.json")
    check(configmod.board_name(f) is None)  # no file: the default
    for text, want in (
        (json.dumps(dict(rig.CONFIG, board="wrover-v1")), "wrover-v1"),
        (json.dumps(rig.CONFIG), None),
        ('{"board": 7}', None),
        ("[1, 2]", None),
        ("not json", None),
    ):
        with open(f, "w") as fh:
            fh.write(text)
        check(configmod.board_name(f) == want, "%s -> %r" % (text, configmod.board_name(f)))
