"""python -m liftcard_gateway: the `liftcard-gateway` command (cli.py).

A reader of the output that goes away (`liftcard-gateway status | head -1`)
ends the command quietly, as it ends `ls` or `cat`: no BrokenPipeError
traceback, whichever command was printing."""

import os
import sys

from . import cli


def main(argv=None) -> int:
    try:
        status = cli.main(argv)
        sys.stdout.flush()  # inside the try: the last lines may still be buffered
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that
        # flush cannot fail a second time and print "Exception ignored".
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # killed by SIGPIPE, as the shell reports it
    return status


if __name__ == "__main__":
    sys.exit(main())
