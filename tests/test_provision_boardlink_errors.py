"""A board that loses power mid-command is an interrupted transfer (one line,
exit 2, "run the same command again"), whatever the serial layer raises: on a
port whose far end is gone pyserial's flush() and reset_input_buffer() raise
termios.error, which is not an OSError (seen as a traceback and exit 1 when a
deploy's board was cut at the wrong instant)."""

import os
import pty

import pytest
import serial

from liftcard_provisioning.boardlink import Board, BoardError


def _dead_port_error(op):
    m, s = pty.openpty()
    port = serial.Serial(os.ttyname(s), 115200, timeout=1)
    os.close(m)  # the board's end goes away
    try:
        getattr(port, op)()
    except Exception as e:
        return e
    finally:
        port.close()
        os.close(s)
    raise AssertionError("%s on a dead port raised nothing" % op)


class _DyingTransport:
    def __init__(self, exc):
        self.exc = exc

    def exec_raw(self, *a, **kw):
        raise self.exc

    def fs_writefile(self, *a, **kw):
        raise self.exc


@pytest.mark.parametrize("op", ["flush", "reset_input_buffer"])
def test_a_board_cut_mid_command_is_an_interruption(op):
    exc = _dead_port_error(op)
    assert not isinstance(exc, OSError)  # why it needs its own entry
    board = Board("/dev/ttyUSB0", _DyingTransport(exc), say=lambda m: None)
    for call in (lambda: board.exec("print(1)"), lambda: board.write_file("x.mpy", b"1")):
        with pytest.raises(BoardError) as e:
            call()
        assert e.value.code == 2
        assert "interrupted" in str(e.value) and "run the same command again" in str(e.value)
