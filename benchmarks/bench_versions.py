"""NumPy speed of two checkouts of sksketch, interleaved in one run.

For changes that must not slow NumPy down (such as the Array API backends):
times the sketcher on trees, lattices, chains, receptive fields and residual
stages (unrolled, level-wise and auto engines) and the lstsq decoder, in
fresh processes that alternate between the two checkouts, and reports the
best time of each and their ratio. Prints a table and writes
``benchmarks/results/bench_versions.json``.

Run: ``git worktree add /tmp/before <commit>`` then
``python benchmarks/bench_versions.py /tmp/before . [--rounds 3] [--busy-core]``
"""

import argparse
import ast
import subprocess
import sys
from pathlib import Path

from busy_core import busy_core
from common import write_results

WORKLOAD = r'''
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])  # the benchmarks folder, for common
from common import best_time
import sksketch
from sksketch import (RecursiveSketcher, SketchAttributeRecoverer,
                      make_activation_records)
from sksketch._batch import as_batch
from sksketch import _shapes
assert sksketch.__file__.startswith(sys.argv[1]), sksketch.__file__

trees = as_batch(make_activation_records(200, random_state=0)[0])
cases = {
    "tree-70 x200, d=256, auto": (trees, 256, "auto"),
    "lattice-12 x40, d=256, levelwise": (
        _shapes.lattice(12, width=3, n_records=40), 256, "levelwise"),
    "chain-300 x4, d=256, levelwise": (
        _shapes.chain(300, n_records=4), 256, "levelwise"),
    "receptive-16 x4, d=128, auto": (
        _shapes.receptive_field(16, n_records=4), 128, "auto"),
    "residual-8 x20, d=256, levelwise": (
        _shapes.residual(8, n_records=20), 256, "levelwise"),
}
out = {}
for name, (batch, d, engine) in cases.items():
    sketcher = RecursiveSketcher(d, engine=engine, random_state=0).fit(batch)
    out[name] = best_time(lambda: sketcher.transform(batch), 5)
records = make_activation_records(2000, random_state=0)[0]
recoverer = SketchAttributeRecoverer(RecursiveSketcher(256, random_state=0))
recoverer.fit(records[:200])
S = recoverer.sketcher_.transform(records)
out["lstsq decode 2000 sketches, d=256"] = best_time(
    lambda: recoverer.transform(S), 5)
print(repr(out))
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="checkout of the reference version")
    parser.add_argument("after", help="checkout of the new version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy-core", action="store_true",
                        help="keep one core busy with another process")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "bench_versions.json"))
    args = parser.parse_args()
    paths = {"before": str(Path(args.before).resolve()),
             "after": str(Path(args.after).resolve())}
    runs = {label: [] for label in paths}
    with busy_core(args.busy_core):
        for _ in range(args.rounds):
            for label, path in paths.items():
                done = subprocess.run([sys.executable, "-c", WORKLOAD, path,
                                       str(Path(__file__).resolve().parent)],
                                      capture_output=True, text=True, check=True)
                runs[label].append(ast.literal_eval(done.stdout.strip()
                                                    .splitlines()[-1]))
    rows = []
    print(f"{'case':38s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s}")
    for case in runs["before"][0]:
        before = min(run[case] for run in runs["before"])
        after = min(run[case] for run in runs["after"])
        rows.append({"case": case, "before_s": before, "after_s": after,
                     "ratio": after / before})
        print(f"{case:38s} {before * 1e3:10.2f} {after * 1e3:10.2f} "
              f"{after / before:13.2f}")
    write_results(args.out, rows, before=paths["before"], after=paths["after"],
                  busy_core=args.busy_core, rounds=args.rounds)


if __name__ == "__main__":
    main()
