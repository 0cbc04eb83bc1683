# Replacing a file on flash so that a power cut leaves the old or the new one.
#
# The new content is written to a file of its own (`new`, beside `path`) and
# then renamed over `path`. littlefs commits a rename atomically: a power cut
# at any point leaves `path` holding either all of the old content or all of
# the new, never a mix. What a cut can leave behind is a partial `new` file:
# it is never read, and the next replace truncates it (mode "wb").
#
#   write(path, new, data, ...)   the whole content at once
#   with Replace(path, new) as f: streamed content; renamed when the block
#                                 ends, `new` removed if it raises
#   commit(new, path)             the rename alone, for a file already written
#                                 (and checked) where it is
#
# Never on the tap path: opening a file allocates.

import os


def commit(new, path):
    # The atomic step: `new` takes the place of `path` (replacing it, if any).
    os.rename(new, path)


def write(path, new, *parts):
    # Writes the parts (bytes-like, or str) to `new`, then commits it.
    with open(new, "wb") as f:
        for p in parts:
            f.write(p)
    os.rename(new, path)


class Replace:
    # with Replace(path, new) as f: write to f. When the block ends normally,
    # `new` is closed and committed over `path`; when it raises, `new` is
    # closed and removed and `path` is untouched.

    def __init__(self, path, new):
        self.path = path
        self.new = new
        self.f = None

    def __enter__(self):
        self.f = open(self.new, "wb")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        self.f = None
        if exc_type is None:
            os.rename(self.new, self.path)
        else:
            try:
                os.remove(self.new)
            except OSError:
                pass
        return False
