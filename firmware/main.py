# Reader entry point. On an ESP32 it runs at boot; on a computer:
#   micropython firmware/main.py --flash reader-fs.img --log reader-log.img
import sys


def main():
    if sys.platform == "esp32":
        from liftcard.board_esp32 import Board

        board = Board()
    else:
        from liftcard.board_host import Board

        board = Board.from_argv(sys.argv)
    from liftcard.reader import Reader

    reader = Reader(board)
    reader.boot()
    if reader.error:
        board.reply("ERR " + reader.error)
    board.reply("READY")
    reader.run()


main()
