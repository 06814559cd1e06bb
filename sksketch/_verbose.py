"""Progress messages of the ``verbose`` parameter (scikit-learn's convention)."""

import sys
import time


class Progress:
    """Prints ``[Estimator] message (elapsed s)`` lines when ``verbose > 0``.

    Messages go to stdout, as scikit-learn's estimators print theirs; with
    ``verbose=0`` nothing is printed and nothing is formatted.
    """

    def __init__(self, estimator, verbose):
        self.name = type(estimator).__name__
        self.verbose = int(verbose)
        self.start = time.perf_counter()

    def __call__(self, message, level=1):
        """Print ``message`` (a str or a callable returning one) at ``level``."""
        if self.verbose >= level:
            text = message() if callable(message) else message
            elapsed = time.perf_counter() - self.start
            print(f"[{self.name}] {text} ({elapsed:.2f} s)", file=sys.stdout,
                  flush=True)
