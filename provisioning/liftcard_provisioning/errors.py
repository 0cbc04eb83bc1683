"""The CLI's one-line errors."""


class Fail(Exception):
    """One-line error for the user; exit code 1 (2 for bad input)."""

    def __init__(self, msg: str, code: int = 1):
        super().__init__(msg)
        self.code = code
