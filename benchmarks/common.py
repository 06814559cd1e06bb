"""Helpers the benchmark scripts share: timing and writing results."""

import json
import platform
import time
from pathlib import Path

import numpy as np


def best_time(function, repeat=3, *, warmup=True, clock=time.perf_counter,
              min_total=0.0):
    """Best time of ``repeat`` calls, after one warm-up call by default.

    The best, not the mean: on a shared machine other processes only ever
    add time. ``clock``: wall time by default; ``time.process_time`` gives
    the process's CPU time, which a loaded machine distorts less.
    ``min_total``: keep calling (past ``repeat``) until the calls took that
    many seconds together, so that a call of a few milliseconds gets as
    many chances to run undisturbed as a long one.
    """
    if warmup:
        function()
    times = []
    while len(times) < repeat or sum(times) < min_total:
        start = clock()
        function()
        times.append(clock() - start)
    return min(times)


def write_results(out, rows, **extra):
    """Write ``rows`` as JSON with the machine, NumPy version and date."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(),
                               "processor": platform.processor(),
                               "numpy": np.__version__,
                               "date": time.strftime("%Y-%m-%d"),
                               **extra, "results": rows}, indent=2))
    print(f"wrote {out}")
