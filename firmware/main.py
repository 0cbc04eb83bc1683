# Reader entry point. On an ESP32 it runs at boot; on a computer, with the
# host modules (firmware/host/) on the path, as README.md shows:
#   MICROPYPATH=$(python -m liftcard_provisioning.mpybuild -q --micropypath) \
#       micropython build/firmware/main.py --flash reader-fs.img --log reader-log.img
import sys


def main():
    if sys.platform == "esp32":
        from liftcard.board_esp32 import Board

        board = Board()
    else:
        from board_host import Board  # host only: firmware/host/, not on a board

        board = Board.from_argv(sys.argv)
    from liftcard.reader import Reader

    reader = Reader(board)
    reader.boot()
    if reader.error:
        board.reply("ERR " + reader.error)
    board.reply("READY")
    reader.run()


main()
