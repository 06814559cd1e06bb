"""The engines on every record shape: unrolled, level-wise and the chosen plan.

For each shape (trees of a layered network, chains, module lattices, dense
receptive fields of a 4-layer CNN with 3x3 kernels, residual stages), each
sketch dimension d and each dtype, it times, warm (best of ``--repeat`` after
one call) and cold (the first call, which draws the matrices and builds the
path blocks):

- the unrolled engine, unless its priced cost exceeds 30x the level-wise one
  (a lattice of 24 layers has 2^24 paths: it would not finish);
- the level-wise engine;
- the engine ``engine="auto"`` picks, per record;

and reports records/s, the peak memory of one call (tracemalloc), the chosen
plan's time over the better of the two (target <= 1.2) and over the
level-wise one (target <= 2), and the level-wise engine's GFLOP/s against a
plain NumPy product ``(n_objects x d) @ (d x d)`` timed in the same run.

Each row takes as many records as make about ``--work-gflop`` of level-wise
work (at most the shape's default count); a shape whose single record needs
more than ``--max-gflop`` is skipped (minutes on 2 cores), and the table
says so. ``--busy-core`` keeps one core
busy in another process throughout, to check the figures survive it.

Prints a table and writes ``benchmarks/results/bench_shapes.json``.
Run: ``python benchmarks/bench_shapes.py [--dims 256 1024 4096] [--quick]``
"""

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
from busy_core import busy_core
from common import best_time, write_results

from sksketch import RecordBatch, RecursiveSketcher, make_activation_records
from sksketch import _shapes as shapes
from sksketch._plan import levelwise_cost, plan_sketch

# name -> (builder of n records, records at d = 256)
SHAPES = {
    "tree-70": (lambda n: RecordBatch.from_records(make_activation_records(
        n, n_modules=9, depth=3, fan_in=3, attribute_dim=8, n_classes=1,
        n_roots=2, n_children=2, shared_fraction=0.0, random_state=0)[0]), 2000),
    "chain-10": (lambda n: shapes.chain(10, n_records=n, dim=8), 2000),
    "chain-100": (lambda n: shapes.chain(100, n_records=n, dim=8), 200),
    "chain-1000": (lambda n: shapes.chain(1000, n_records=n, dim=8), 20),
    "chain-5000": (lambda n: shapes.chain(5000, n_records=n, dim=8), 4),
    "lattice-4": (lambda n: shapes.lattice(4, n_records=n, dim=8), 2000),
    "lattice-8": (lambda n: shapes.lattice(8, n_records=n, dim=8), 1000),
    "lattice-12": (lambda n: shapes.lattice(12, n_records=n, dim=8), 500),
    "lattice-16": (lambda n: shapes.lattice(16, n_records=n, dim=8), 500),
    "lattice-24": (lambda n: shapes.lattice(24, n_records=n, dim=8), 500),
    "cnn-8x8": (lambda n: shapes.receptive_field(8, n_records=n, dim=8), 50),
    "cnn-16x16": (lambda n: shapes.receptive_field(16, n_records=n, dim=8), 12),
    "cnn-32x32": (lambda n: shapes.receptive_field(32, n_records=n, dim=8), 3),
    "residual-4": (lambda n: shapes.residual(4, n_records=n, dim=8), 500),
    "residual-16": (lambda n: shapes.residual(16, n_records=n, dim=8), 200),
}
QUICK = ["tree-70", "chain-1000", "lattice-16", "cnn-16x16", "residual-16"]
UNROLLED_LIMIT = 30.0  # skip the unrolled engine beyond this priced ratio




def peak_memory(function):
    """Peak bytes NumPy allocates during one call (tracemalloc)."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(batch, d, dtype, engine, repeat):
    sketcher = RecursiveSketcher(d, engine=engine, dtype=dtype, cache_size=4096,
                                 random_state=0).fit(batch)
    start = time.perf_counter()
    sketches = sketcher.transform(batch)
    cold = time.perf_counter() - start
    warm = best_time(lambda: sketcher.transform(batch), repeat, warmup=False)
    memory = peak_memory(lambda: sketcher.transform(batch))
    return sketches, {"cold_s": cold, "warm_s": warm, "peak_mib": memory / 2**20}


def run_row(name, d, dtype, repeat, max_gflop, work_gflop):
    builder, n_at_256 = SHAPES[name]
    # About the same work at every d: fewer records as d^2 grows, and no
    # more than --work-gflop of level-wise work.
    n_records = max(1, int(n_at_256 * (256 / d) ** 2))
    per_record = float(levelwise_cost(builder(1), d, "half_identity").sum())
    n_records = max(1, min(n_records, int(work_gflop * 1e9 / per_record)))
    batch = builder(n_records)
    lw_flops = float(levelwise_cost(batch, d, "half_identity").sum())
    row = {"shape": name, "sketch_dim": d, "dtype": dtype, "n_records": n_records,
           "n_objects": batch.n_objects, "levelwise_gflop": lw_flops / 1e9}
    if lw_flops / 1e9 > max_gflop:
        row["skipped"] = f"level-wise work {lw_flops / 1e9:.0f} GFLOP > {max_gflop}"
        return row
    plan = plan_sketch(batch, d, "half_identity", cache_bytes=4096 * 2**20)
    priced = float(np.sum(np.minimum(plan.unrolled_cost, 1e300)) / lw_flops)
    row["plan_levelwise_fraction"] = float(plan.levelwise.mean())
    row["priced_unrolled_over_levelwise"] = (
        float("inf") if np.isinf(plan.unrolled_cost).any() else priced)
    results = {}
    for engine in ("levelwise", "unrolled", "auto"):
        priced_out = row["priced_unrolled_over_levelwise"] > UNROLLED_LIMIT
        if engine == "unrolled" and priced_out:
            continue
        sketches, results[engine] = measure(batch, d, dtype, engine, repeat)
        if engine == "levelwise":
            reference = sketches
        else:
            scale = np.abs(reference).max()
            results[engine]["max_rel_diff"] = float(
                np.abs(sketches - reference).max() / scale)
    row.update({f"{engine}_{key}": value for engine, r in results.items()
                for key, value in r.items()})
    best = min(r["warm_s"] for e, r in results.items() if e != "auto")
    row["auto_over_best"] = results["auto"]["warm_s"] / best
    row["auto_over_levelwise"] = (results["auto"]["warm_s"]
                                  / results["levelwise"]["warm_s"])
    row["auto_records_per_s"] = n_records / results["auto"]["warm_s"]
    # The machine's own product rate on the level-wise engine's shape.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch.n_objects, d)).astype(dtype)
    g = rng.standard_normal((d, d)).astype(dtype)
    matmul = best_time(lambda: x @ g, repeat)
    row["matmul_gflops"] = 2.0 * batch.n_objects * d * d / matmul / 1e9
    row["levelwise_gflops"] = lw_flops / results["levelwise"]["warm_s"] / 1e9
    row["levelwise_over_matmul_rate"] = row["levelwise_gflops"] / row["matmul_gflops"]
    return row


def print_row(r):
    if "skipped" in r:
        print(f"{r['shape']:>12} {r['sketch_dim']:>5} {r['dtype']:>7}  "
              f"skipped: {r['skipped']}", flush=True)
        return
    unrolled = (f"{r['n_records'] / r['unrolled_warm_s']:>10,.1f}"
                if "unrolled_warm_s" in r else f"{'(>30x)':>10}")
    print(f"{r['shape']:>12} {r['sketch_dim']:>5} {r['dtype']:>7} "
          f"{r['n_records']:>6} {r['n_objects']:>8} "
          f"{r['n_records'] / r['levelwise_warm_s']:>10,.1f} {unrolled} "
          f"{r['auto_records_per_s']:>10,.1f} "
          f"{r['n_records'] / r['auto_cold_s']:>10,.1f} "
          f"{r['plan_levelwise_fraction']:>5.2f} {r['auto_over_best']:>6.2f} "
          f"{r['auto_over_levelwise']:>6.2f} {r['auto_peak_mib']:>8.1f} "
          f"{r['levelwise_gflops']:>7.1f} {r['matmul_gflops']:>7.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--quick", action="store_true",
                        help="five shapes, float64 only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-gflop", type=float, default=40.0,
                        help="skip shapes whose one record needs more")
    parser.add_argument("--work-gflop", type=float, default=4.0,
                        help="level-wise work per row, at most")
    parser.add_argument("--busy-core", action="store_true",
                        help="keep one core busy in another process")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "bench_shapes.json"))
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.dtypes = QUICK, ["float64"]
    rows = []
    with busy_core(args.busy_core):
        print(f"{'shape':>12} {'d':>5} {'dtype':>7} {'recs':>6} {'objects':>8} "
              f"{'lw rec/s':>10} {'unr rec/s':>10} {'auto rec/s':>10} "
              f"{'cold rec/s':>10} {'lw%':>5} {'a/best':>6} {'a/lw':>6} "
              f"{'peak MiB':>8} {'lw GF/s':>7} {'mm GF/s':>7}", flush=True)
        for name in args.shapes:
            for d in args.dims:
                for dtype in args.dtypes:
                    row = run_row(name, d, dtype, args.repeat, args.max_gflop,
                                  args.work_gflop)
                    print_row(row)
                    rows.append(row)
                    # After every row: a long run stopped midway keeps its rows.
                    write_results(args.out, rows, busy_core=args.busy_core)
    measured = [r for r in rows if "skipped" not in r]
    if measured:
        print(f"worst chosen/best: {max(r['auto_over_best'] for r in measured):.2f}; "
              f"worst chosen/level-wise: "
              f"{max(r['auto_over_levelwise'] for r in measured):.2f}")

if __name__ == "__main__":
    main()
