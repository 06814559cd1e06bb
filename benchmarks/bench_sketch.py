"""Speed of the sketch engine against its peers, measured in one run.

For records of a fixed shape (every record the same DAG, >= 50 objects), and
for each sketch dimension d, it times:

- the engine (``RecursiveSketcher.transform``) on a RecordBatch, warm (path
  blocks cached) and cold (the first call after fit), and end to end from a
  list of ActivationRecord;
- the literal recursion (``sksketch._reference``), on a few records;
- scikit-learn's GaussianRandomProjection of the same records' attributes,
  concatenated into one vector per record, to the same d;
- a plain NumPy product of the engine's shape, ``(n x K) @ (K x d)``, to rate
  the engine's achieved GFLOP/s.

Prints a table and writes ``benchmarks/results/bench_sketch.json``.
Run: ``python benchmarks/bench_sketch.py [--n-records 2000] [--dims 256 1024 4096]``
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from common import best_time, write_results
from sklearn.random_projection import GaussianRandomProjection

from sksketch import RecordBatch, RecursiveSketcher, make_activation_records
from sksketch._reference import reference_sketch
from sksketch._unroll import ColumnLayout, unroll


def fixed_shape_records(n_records, attribute_dim):
    # One class and no sharing: every record is the same DAG of 70 objects
    # (2 roots of 3-level chains, 2 objects per consumed module).
    records, _ = make_activation_records(
        n_records, n_modules=9, depth=3, fan_in=3, attribute_dim=attribute_dim,
        n_classes=1, n_roots=2, n_children=2, shared_fraction=0.0, random_state=0)
    return records


def run(n_records, dims, attribute_dim, n_reference):
    records = fixed_shape_records(n_records, attribute_dim)
    n_objects = records[0].n_objects
    assert all(r.n_objects == n_objects for r in records)
    # GaussianRandomProjection's input: the attributes and weights, concatenated.
    flat = np.array([np.concatenate([np.append(a, 1.0) for a in r.attributes])
                     for r in records])
    batch = RecordBatch.from_records(records)
    layout = ColumnLayout.from_unrolled(batch, unroll(batch))
    n_columns = layout.n_columns
    rng = np.random.default_rng(0)
    rows = []
    for d in dims:
        sketcher = RecursiveSketcher(d, random_state=0, cache_size=4096).fit(batch)
        start = time.perf_counter()
        sketcher.transform(batch)
        cold = time.perf_counter() - start
        engine = best_time(lambda s=sketcher: s.transform(batch))
        end_to_end = best_time(lambda s=sketcher: s.transform(records), repeat=2)
        subset = records[:n_reference]
        reference = best_time(
            lambda s=sketcher, rs=subset: [reference_sketch(r, s) for r in rs],
            repeat=1) / len(subset) * n_records
        with warnings.catch_warnings():  # d > input dim at d=4096: fine here
            warnings.simplefilter("ignore")
            projection = GaussianRandomProjection(d, random_state=0).fit(flat)
        grp = best_time(lambda p=projection: p.transform(flat))
        z = rng.standard_normal((n_records, n_columns))
        g = rng.standard_normal((n_columns, d))
        matmul = best_time(lambda z=z, g=g: z @ g)
        flops = 2.0 * n_records * n_columns * d
        rows.append({
            "sketch_dim": d,
            "n_records": n_records,
            "objects_per_record": n_objects,
            "attribute_dim": attribute_dim,
            "engine_columns": n_columns,
            "grp_input_dim": flat.shape[1],
            "engine_s": engine,
            "engine_cold_s": cold,
            "engine_from_records_s": end_to_end,
            "reference_s": reference,
            "grp_s": grp,
            "matmul_s": matmul,
            "engine_records_per_s": n_records / engine,
            "engine_objects_per_s": n_records * n_objects / engine,
            "reference_records_per_s": n_records / reference,
            "grp_records_per_s": n_records / grp,
            "speedup_vs_reference": reference / engine,
            "engine_time_over_grp": engine / grp,
            "engine_gflops": flops / engine / 1e9,
            "matmul_gflops": flops / matmul / 1e9,
            "gflops_ratio": matmul / engine,
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-records", type=int, default=2000)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--attribute-dim", type=int, default=8)
    parser.add_argument("--n-reference", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "bench_sketch.json"))
    args = parser.parse_args()
    rows = run(args.n_records, args.dims, args.attribute_dim, args.n_reference)

    header = (f"{'d':>5} {'engine rec/s':>13} {'engine obj/s':>13} "
              f"{'ref rec/s':>10} {'x ref':>7} {'GRP rec/s':>11} "
              f"{'t/t_GRP':>8} {'GFLOP/s':>8} {'matmul':>8} {'ratio':>6} "
              f"{'e2e rec/s':>10} {'cold rec/s':>11}")
    print(f"{rows[0]['n_records']} records of {rows[0]['objects_per_record']} "
          f"objects, attribute_dim {rows[0]['attribute_dim']}; engine columns "
          f"K={rows[0]['engine_columns']}, GRP input dim {rows[0]['grp_input_dim']}")
    print("Rates are warm (best of repeated calls after a first one), except "
          "'cold rec/s': the first transform after fit, caches empty.")
    print(header)
    for r in rows:
        print(f"{r['sketch_dim']:>5} {r['engine_records_per_s']:>13,.0f} "
              f"{r['engine_objects_per_s']:>13,.0f} "
              f"{r['reference_records_per_s']:>10,.1f} "
              f"{r['speedup_vs_reference']:>7,.0f} {r['grp_records_per_s']:>11,.0f} "
              f"{r['engine_time_over_grp']:>8.2f} {r['engine_gflops']:>8.1f} "
              f"{r['matmul_gflops']:>8.1f} {r['gflops_ratio']:>6.2f} "
              f"{r['n_records'] / r['engine_from_records_s']:>10,.0f} "
              f"{r['n_records'] / r['engine_cold_s']:>11,.0f}")
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
