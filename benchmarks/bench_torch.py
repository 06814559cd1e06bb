"""Recording and sketching a CNN's activations against its own forward time.

The target (issue "sksketch.torch"): recording plus sketching 10,000 digits
images through a 3-layer CNN takes under 2x the network's forward time on the
same batches. For the demo's CNN (examples/demo.py, untrained: timing does
not depend on the weights) and 10,000 images (scikit-learn's digits, tiled
with a little noise), it times, best of ``--repeat`` after a warm-up:

- ``forward``: the model alone on every batch, under ``torch.no_grad()``;
- ``record``: ``ActivationRecorder.record`` on every batch (the forward pass
  with hooks, plus building the RecordBatch);
- ``sketch``: ``RecursiveSketcher.transform`` of every batch, at each ``d``
  (fitted once before timing).

PyTorch and the BLAS NumPy calls both run on ``--threads`` threads (default
1), so that the network and the sketches get the same resources.
``--busy-core`` times everything again while another process keeps one core
busy. ``--cpu-time`` times with the process's CPU time instead of the wall
clock: on a shared machine, other jobs then add nothing (with one thread).

Prints a table and writes ``benchmarks/results/bench_torch.json``.
Run: ``python benchmarks/bench_torch.py [--n-images 10000] [--repeat 5]``
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from sksketch import RecursiveSketcher
from sksketch.torch import ActivationRecorder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import busy_core as busy  # noqa: E402
from common import best_time, write_results  # noqa: E402
from demo import LAYERS, TOP_K, make_cnn  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", default="auto",
                        choices=["auto", "unrolled", "levelwise"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time (one thread)")
    parser.add_argument("--busy-core", action="store_true",
                        help="also time with one core kept busy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads, user_api="blas"):
        rows = run(args, busy=False)
        if args.busy_core:
            with busy.busy_core(True):
                rows += run(args, busy=True)
    print(f"{args.n_images} images, batches of {args.batch_size}, "
          f"{rows[0]['objects_per_image']:.0f} objects per image, "
          f"{args.threads} thread(s) for PyTorch and BLAS, engine={args.engine!r}, "
          f"{args.dtype}, {'CPU' if args.cpu_time else 'wall'} time")
    print(f"{'busy':>5} {'d':>5} {'forward s':>10} {'record s':>9} {'sketch s':>9} "
          f"{'rec+sk s':>9} {'/forward':>9}")
    for r in rows:
        print(f"{'yes' if r['busy_core'] else 'no':>5} {r['sketch_dim']:>5} "
              f"{r['forward_s']:>10.3f} {r['record_s']:>9.3f} "
              f"{r['sketch_s']:>9.3f} {r['record_plus_sketch_s']:>9.3f} "
              f"{r['ratio_to_forward']:>8.1f}x")
    write_results(Path(__file__).resolve().parent / "results" / "bench_torch.json",
                  rows, n_images=args.n_images, batch_size=args.batch_size,
                  threads=args.threads, engine=args.engine, dtype=args.dtype,
                  clock="cpu" if args.cpu_time else "wall",
                  torch=torch.__version__)


def run(args, busy):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = load_digits().images / 16.0
    X = images[rng.integers(len(images), size=args.n_images)]
    X = (X + 0.05 * rng.standard_normal(X.shape)).astype(np.float32)[:, None]
    batches = torch.tensor(X).split(args.batch_size)
    model = make_cnn(torch).eval()
    recorder = ActivationRecorder(model, LAYERS, top_k=TOP_K,
                                  dtype=np.dtype(args.dtype))

    def forward():
        with torch.no_grad():
            for b in batches:
                model(b)

    def record():
        return [recorder.record(b) for b in batches]

    def timed(function, repeat):
        return best_time(function, repeat, clock=time.process_time
                         if args.cpu_time else time.perf_counter)
    t_forward = timed(forward, args.repeat)
    t_record = timed(record, args.repeat)
    records = record()
    rows = []
    for d in args.dims:
        sketcher = RecursiveSketcher(d, engine=args.engine, dtype=args.dtype,
                                     random_state=0).fit(records[0])
        t_sketch = timed(lambda s=sketcher: [s.transform(r) for r in records],
                         args.repeat)
        total = t_record + t_sketch
        rows.append({"busy_core": busy, "sketch_dim": d, "forward_s": t_forward,
                     "record_s": t_record, "sketch_s": t_sketch,
                     "record_plus_sketch_s": total,
                     "ratio_to_forward": total / t_forward})
    n_objects = sum(r.n_objects for r in records)
    for row in rows:
        row["objects_per_image"] = n_objects / args.n_images
    return rows


if __name__ == "__main__":
    main()
