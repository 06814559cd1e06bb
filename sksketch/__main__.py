"""``python -m sksketch``: the command line (see :mod:`sksketch.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
