"""Helpers the benchmark scripts share: timing and writing results."""

import json
import platform
import time
from pathlib import Path

import numpy as np


def best_time(function, repeat=3, *, warmup=True, clock=time.perf_counter):
    """Best time of ``repeat`` calls, after one warm-up call by default.

    The best, not the mean: on a shared machine other processes only ever
    add time. ``clock``: wall time by default; ``time.process_time`` gives
    the process's CPU time, which a loaded machine distorts less.
    """
    if warmup:
        function()
    times = []
    for _ in range(repeat):
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
