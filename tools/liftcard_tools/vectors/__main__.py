"""python -m liftcard_tools.vectors: the same as liftcard-vectors."""

import sys

from . import main

sys.exit(main())
