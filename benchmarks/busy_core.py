"""Time with one core kept busy by another process (``--busy-core``).

BLAS threads that spin on many small products slow down 30-60 fold once
another process holds one of the cores; timing the benchmarks both ways
shows whether a code path is exposed to it.
"""

import contextlib
import subprocess
import sys

# Set by the benchmarks' ``--busy-core`` option.
ENABLED = False


@contextlib.contextmanager
def busy_core(enabled=None):
    """Run the body while a subprocess spins ``while True: pass`` (if enabled)."""
    if not (ENABLED if enabled is None else enabled):
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()
