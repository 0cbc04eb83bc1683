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


def test_a_long_answer_arrives_whole_with_progress(tmp_path, capsys):
    """A long output (a ride log's dump is megabytes on a full reader) is
    collected as it comes, with a progress line every 64 KB: at 115200 baud
    that is minutes, and mpremote's own collection (a byte at a time by
    concatenation, quadratic) falls behind the board and loses what
    overflows the port's buffer."""
    from liftcard_provisioning import boardlink
    from liftcard_testing.ttyline import TtyLines
    from liftcard_testing.virtualboard import VirtualBoard

    with VirtualBoard(tmp_path / "board") as b, TtyLines(b.test) as port:
        port.until("READY")
        with boardlink.connect(b.usb) as link:
            capsys.readouterr()
            out = link.exec("for i in range(1100):\n print('%064d' % i)", timeout=60)
    assert out.split() == ["%064d" % i for i in range(1100)]
    err = capsys.readouterr().err
    assert err == "  64 KB from the board on %s so far\n" % b.usb
