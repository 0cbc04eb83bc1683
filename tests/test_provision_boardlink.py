"""boardlink's errors stay one line: mpremote prints what the board last
sent when a raw-REPL step fails (its own CLI's diagnostics, e.g. ``b''`` when
the board went silent mid-transfer); through liftcard-provision that would be
a stray line on the technician's stdout, possibly a piece of a file in transit.

The transport here is a stand-in that fails the way mpremote's does (print,
then TransportError): a power cut cannot be timed onto that line on the
virtual board reliably."""

import pytest

pytest.importorskip("mpremote")
from mpremote.transport import TransportError

from liftcard_provisioning.boardlink import Board, BoardError


class CutTransport:
    """mpremote's SerialTransport when the board dies mid-command."""

    def _die(self, *a, **kw):
        print(b"")  # what mpremote's exec_raw_no_follow / enter_raw_repl print before raising
        raise TransportError("could not enter raw repl")

    exec_raw = fs_writefile = fs_readfile = enter_raw_repl = _die


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.exec("pass"),
        lambda b: b.write_file("config.new", b"{}"),
        lambda b: b.soft_reset(),
    ],
    ids=["exec", "write_file", "soft_reset"],
)
def test_a_cut_mid_command_prints_nothing_of_mpremotes(capsys, call):
    b = Board("/dev/ttyUSB0", CutTransport())
    with pytest.raises(BoardError, match="interrupted"):
        call(b)
    assert capsys.readouterr().out == ""
