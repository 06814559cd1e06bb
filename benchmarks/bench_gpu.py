"""The sketcher and the least-squares decoder on NumPy, CuPy and PyTorch (CUDA).

Runs on a GPU machine's own Python (one with CuPy and/or PyTorch, NumPy,
SciPy and scikit-learn; ``array-api-compat`` is the one pure-Python package
it may lack). For each backend it:

1. checks the results against NumPy's on a small batch (the same random
   matrices on every backend: sketches and decoded counts agree to float
   rounding), and stops if they do not;
2. measures the machine's own matrix-product rate (a square float32 GEMM)
   for the backend, to rate what the sketcher achieves;
3. times ``RecursiveSketcher.transform`` on CNN-like records (receptive
   fields, a dense DAG) with >= 10^6 objects per GPU call, for each ``d``
   (``matrix="sparse_sign"`` at d >= 16384, where one dense ``d x d``
   float32 matrix is 1 GiB per module), and the lstsq decoder on the
   sketches. NumPy runs on a slice of the records (it would take hours on
   all of them) and is reported per record.

Prints a table (records/s, objects/s, achieved TFLOP/s, share of the measured
GEMM rate, speed-up over NumPy) and writes ``benchmarks/results/bench_gpu.json``.

Run: ``bash benchmarks/bench_gpu.sh`` (or ``python benchmarks/bench_gpu.py
--quick`` anywhere: small sizes, PyTorch on the CPU counts as a backend).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_results  # noqa: E402

from sksketch import (  # noqa: E402
    RecursiveSketcher,
    SketchAttributeRecoverer,
    make_activation_records,
)
from sksketch._array_api import to_numpy  # noqa: E402
from sksketch._shapes import receptive_field  # noqa: E402


def backends(allow_cpu):
    """(name, namespace module, device, synchronize) of the usable backends."""
    found = [("numpy", np, None, lambda: None)]
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append(("cupy", cupy, None, cupy.cuda.Device().synchronize))
    except Exception as error:  # no CuPy, no driver, no card
        print(f"cupy: not used ({type(error).__name__}: {error})")
    try:
        import torch

        if torch.cuda.is_available():
            found.append(("torch-cuda", torch, "cuda", torch.cuda.synchronize))
        elif allow_cpu:
            found.append(("torch-cpu", torch, "cpu", lambda: None))
        else:
            print("torch: no CUDA device")
    except ImportError as error:
        print(f"torch: not used ({error})")
    return found


def timed(function, synchronize, repeat):
    """Best wall time of ``repeat`` synchronized calls after one warm-up."""
    result = function()
    synchronize()
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def gemm_rate(namespace, device, synchronize, n):
    """Measured float32 GEMM rate of the backend, in TFLOP/s."""
    rng = np.random.default_rng(0)
    a = as_backend(rng.standard_normal((n, n), dtype=np.float32), namespace,
                   device)
    seconds, _ = timed(lambda: a @ a, synchronize, 3)
    return 2 * n ** 3 / seconds / 1e12


def as_backend(array, namespace, device):
    """A NumPy array as an array of ``namespace`` on ``device``."""
    if namespace is np:
        return array
    import array_api_compat

    xp = array_api_compat.array_namespace(namespace.asarray([0.0]))
    return xp.asarray(array, device=device) if device else xp.asarray(array)


def levelwise_flops(batch, d, wrapper=True, sparse=False):
    """Multiply-adds x 2 of the batched recursion on ``batch``."""
    dims = np.array([batch.module_dims[n] for n in batch._module_names])
    dim = dims[batch._module_codes]
    consumers = np.unique(batch._parent).size
    square = 2 * 8 * d if sparse else 2 * d * d  # one d x d product per row
    return float((2 * d * (2 * dim + 1)).sum() + consumers * square
                 + (batch.n_objects * square if wrapper else 0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--size", type=int, default=16,
                        help="receptive-field grid side (objects per record "
                             "= about 4 x size^2)")
    parser.add_argument("--objects", type=int, default=1_000_000,
                        help="objects per GPU call")
    parser.add_argument("--numpy-seconds", type=float, default=20.0,
                        help="about this much NumPy work per d")
    parser.add_argument("--decode-sketches", type=int, default=100_000,
                        help="sketches per decoder call (NumPy: a tenth)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes; PyTorch on the CPU counts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "bench_gpu.json"))
    args = parser.parse_args()
    if args.quick:
        args.dims, args.size, args.objects = [128, 256], 6, 20_000
        args.numpy_seconds, args.repeat, args.decode_sketches = 2.0, 2, 5000
    found = backends(args.quick)
    print("backends:", ", ".join(name for name, *_ in found))

    one = receptive_field(args.size, n_layers=4, kernel=3, n_records=1)
    per_record = one.n_objects
    n_records = max(1, args.objects // per_record)
    batch = receptive_field(args.size, n_layers=4, kernel=3, n_records=n_records)
    print(f"records: receptive fields {args.size}x{args.size}, 4 layers, "
          f"{per_record} objects each; {n_records} records, "
          f"{batch.n_objects:,} objects per GPU call")

    rows = []
    rates = {name: gemm_rate(ns, dev, sync, 2048 if ns is np else 8192)
             for name, ns, dev, sync in found}
    for name, rate in rates.items():
        print(f"{name}: measured float32 GEMM {rate:.2f} TFLOP/s")

    for d in args.dims:
        sparse = d >= 16384
        sketcher = RecursiveSketcher(
            d, dtype="float32", matrix="sparse_sign" if sparse else "gaussian",
            cache_size=8192, random_state=0).fit(batch.take([0]))
        flops_per_record = levelwise_flops(batch.take([0]), d, sparse=sparse)
        # Correctness first: every backend against NumPy on a few records.
        check = batch.take(np.arange(min(8, n_records)))
        expected = sketcher.transform(check)
        # The decoder on sketches of tree-shaped records (90 unknowns: one
        # pseudo-inverse product per batch of sketches).
        trees, _ = make_activation_records(200, random_state=0)
        recoverer = SketchAttributeRecoverer(
            RecursiveSketcher(d, dtype="float32", matrix=sketcher.matrix,
                              random_state=0)).fit(trees)
        tree_sketches = recoverer.sketcher_.transform(trees)
        counts = recoverer.transform(tree_sketches)
        numpy_rate = None
        for name, namespace, device, sync in found:
            moved = check.to_namespace(namespace, device=device)
            got = to_numpy(sketcher.transform(moved))
            error = np.abs(got - expected).max() / np.abs(expected).max()
            decoded = to_numpy(recoverer.transform(
                as_backend(tree_sketches, namespace, device)))
            count_error = float(np.abs(decoded - counts).max())
            if error > 1e-4 or count_error > 1e-3:
                raise SystemExit(f"{name} at d={d}: sketches differ from NumPy's "
                                 f"by {error:.2g} (relative), counts by "
                                 f"{count_error:.2g}")
            if namespace is np:
                # NumPy on a slice sized to about numpy_seconds of work.
                probe = max(1, int(args.numpy_seconds * rates[name] * 1e12 * 0.2
                                   / flops_per_record))
                work = batch.take(np.arange(min(probe, n_records)))
            else:
                work = batch.to_namespace(namespace, device=device)
            sketch_s, S = timed(lambda w=work, f=sketcher.transform: f(w), sync,
                                args.repeat)
            n_decode = args.decode_sketches if namespace is not np else max(
                1, args.decode_sketches // 10)
            S = as_backend(np.tile(tree_sketches, (-(-n_decode // 200), 1))[
                :n_decode], namespace, device)
            decode_s, _ = timed(lambda S=S, f=recoverer.transform: f(S), sync,
                                args.repeat)
            records_s = work.n_records / sketch_s
            # Rated by the level-wise engine's flop count (what the records
            # cost without unrolling), whichever engine the plan chose.
            achieved = flops_per_record * records_s / 1e12
            if namespace is np:
                numpy_rate = records_s
            row = {"backend": name, "d": d, "matrix": sketcher.matrix,
                   "records": work.n_records, "objects": work.n_objects,
                   "sketch_s": sketch_s, "records_per_s": records_s,
                   "objects_per_s": work.n_objects / sketch_s,
                   "achieved_tflops": achieved,
                   "gemm_tflops": rates[name],
                   "share_of_gemm": achieved / rates[name],
                   "speedup_vs_numpy": records_s / numpy_rate if numpy_rate else None,
                   "decode_sketches_per_s": n_decode / decode_s,
                   "max_relative_error_vs_numpy": float(error)}
            rows.append(row)
            print(f"{name:>10s} d={d:<6d} {work.n_records:>7,d} records "
                  f"{records_s:>10,.1f} rec/s {row['objects_per_s']:>12,.0f} obj/s "
                  f"{achieved:6.2f} TFLOP/s ({row['share_of_gemm']:.0%} of GEMM) "
                  f"x{row['speedup_vs_numpy'] or 0:6.1f} vs NumPy; decode "
                  f"{row['decode_sketches_per_s']:>10,.0f} sketches/s; "
                  f"error {error:.1e}")
    write_results(args.out, rows, dims=args.dims, objects=args.objects)


if __name__ == "__main__":
    main()
