# Reader entry point. On an ESP32 it runs at boot (after boot.py); on a
# computer, with the host modules (firmware/host/) on the path, as README.md shows:
#   MICROPYPATH=$(python -m liftcard_provisioning.mpybuild -q --micropypath) \
#       micropython build/firmware/main.py --flash reader-fs.img --log reader-log.img
#
# Safe mode and the watchdog (liftcard/safeboot.py, docs/board.md): Ctrl-C in
# the first seconds, the profile's safe-mode pin held, or Ctrl-C while the
# reader runs (a reset into a safe boot) leave the REPL with no watchdog.
import sys


def main():
    if sys.platform == "esp32":
        from liftcard import config, profiles
        from liftcard.board_esp32 import Board

        try:
            board = Board(config.board_name())
        except profiles.ProfileError as e:
            print("ERR " + str(e))  # no pins, no reader, no watchdog: the REPL
            return
    else:
        from board_host import Board  # host only: firmware/host/, not on a board

        board = Board.from_argv(sys.argv)
    from liftcard import safeboot

    safeboot.main(board)


main()
