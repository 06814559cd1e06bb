"""Recording and sketching a CNN's activations against its own forward time.

The target (issue "sksketch.torch"): recording plus sketching 10,000 digits
images through a 3-layer CNN takes under 2x the network's forward time on the
same batches. Two networks, untrained (timing does not depend on the
weights), on 10,000 images (scikit-learn's digits, tiled with a little
noise), both recorded at ``conv1``, ``conv2`` and ``fc`` with the demo's
``top_k`` (12 and 6 positions: 19 objects per image):

- ``demo``: the demo's CNN (examples/demo.py), conv 1->8, conv 8->16,
  linear 64->10: about 23,700 multiply-adds per image;
- ``standard``: conv 1->32, conv 32->64, linear 256->10 (3x3 kernels,
  ReLU and 2x2 max pooling after each convolution), the size of a typical
  small digits CNN: about 316,000 multiply-adds per image.

For each it times, best of ``--repeat`` after a warm-up:

- ``forward``: the model alone on every batch, under ``torch.no_grad()``;
- ``record``: ``ActivationRecorder.record`` on every batch (the forward pass
  with hooks, plus building the RecordBatch), its calls alternating with
  the forward pass's (see ``best_times``);
- ``sketch``: ``RecursiveSketcher.transform`` of every batch, at each ``d``
  (fitted once before timing).

Each timing reads both clocks: the wall clock and the process's CPU time
(on a shared machine, other jobs add nothing to the latter with one
thread); the best of each is kept. PyTorch and the BLAS NumPy calls both run
on ``--threads`` threads (default 1), so that the network and the sketches
get the same resources. ``--busy-core`` times everything again while
another process keeps one core busy.

Prints a table and writes ``benchmarks/results/bench_torch.json``.
Run: ``python benchmarks/bench_torch.py [--n-images 10000] [--repeat 7]``
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
from common import write_results  # noqa: E402
from demo import LAYERS, TOP_K, make_cnn  # noqa: E402

# The demo's CNN, and a typical small digits CNN of the same layout: conv
# 1->32, conv 32->64, linear.
NETWORKS = {"demo": lambda: make_cnn(torch),
            "standard": lambda: make_cnn(torch, channels=(32, 64))}


def multiply_adds(model, image):
    """Multiply-adds of the convolutions and linear layers, per image."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            per_output = (module.in_channels // module.groups
                          * int(np.prod(module.kernel_size)))
            total[0] += output[0].numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        model(image[:1])
    for hook in hooks:
        hook.remove()
    return total[0]


def best_times(function, repeat, *others):
    """Best CPU time and best wall time of ``repeat`` calls, after a warm-up.

    With ``others``, the functions' calls alternate and each gets its pair:
    the forward pass alone is about 1.5 times slower in some of this
    machine's allocator states (its large outputs freed and faulted in again
    every batch), and a state can last a whole run; alternating puts the
    forward pass and the recording in the same states.
    """
    functions = (function, *others)
    for f in functions:
        f()
    cpu, wall = [[] for _ in functions], [[] for _ in functions]
    for _ in range(repeat):
        for i, f in enumerate(functions):
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            f()
            cpu[i].append(time.process_time() - start_cpu)
            wall[i].append(time.perf_counter() - start_wall)
    pairs = [(min(c), min(w)) for c, w in zip(cpu, wall)]
    return pairs[0] if not others else pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS),
                        choices=list(NETWORKS))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", default="auto",
                        choices=["auto", "unrolled", "levelwise"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--busy-core", action="store_true",
                        help="also time with one core kept busy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with threadpool_limits(args.threads, user_api="blas"):
        for network in args.networks:
            rows += run(args, network, busy=False)
            if args.busy_core:
                with busy.busy_core(True):
                    rows += run(args, network, busy=True)
    print(f"{args.n_images} images, batches of {args.batch_size}, "
          f"{rows[0]['objects_per_image']:.0f} objects per image, "
          f"{args.threads} thread(s) for PyTorch and BLAS, engine={args.engine!r}, "
          f"{args.dtype}; seconds are CPU time")
    print(f"{'network':>9} {'MACs':>8} {'busy':>5} {'d':>5} {'forward s':>10} "
          f"{'record s':>9} {'sketch s':>9} {'/fwd CPU':>9} {'/fwd wall':>10}")
    for r in rows:
        print(f"{r['network']:>9} {r['multiply_adds_per_image']:>8,} "
              f"{'yes' if r['busy_core'] else 'no':>5} {r['sketch_dim']:>5} "
              f"{r['forward_cpu_s']:>10.3f} {r['record_cpu_s']:>9.3f} "
              f"{r['sketch_cpu_s']:>9.3f} {r['ratio_cpu']:>8.2f}x "
              f"{r['ratio_wall']:>9.2f}x")
    write_results(Path(__file__).resolve().parent / "results" / "bench_torch.json",
                  rows, n_images=args.n_images, batch_size=args.batch_size,
                  threads=args.threads, engine=args.engine, dtype=args.dtype,
                  torch=torch.__version__)


def run(args, network, busy):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = load_digits().images / 16.0
    X = images[rng.integers(len(images), size=args.n_images)]
    X = (X + 0.05 * rng.standard_normal(X.shape)).astype(np.float32)[:, None]
    batches = torch.tensor(X).split(args.batch_size)
    model = NETWORKS[network]().eval()
    recorder = ActivationRecorder(model, LAYERS, top_k=TOP_K,
                                  dtype=np.dtype(args.dtype))

    def forward():
        with torch.no_grad():
            for b in batches:
                model(b)

    def record():
        return [recorder.record(b) for b in batches]

    (forward_cpu, forward_wall), (record_cpu, record_wall) = best_times(
        forward, args.repeat, record)
    records = record()
    n_objects = sum(r.n_objects for r in records)
    rows = []
    for d in args.dims:
        sketcher = RecursiveSketcher(d, engine=args.engine, dtype=args.dtype,
                                     random_state=0).fit(records[0])
        sketch_cpu, sketch_wall = best_times(
            lambda s=sketcher: [s.transform(r) for r in records], args.repeat)
        rows.append({
            "network": network, "busy_core": busy, "sketch_dim": d,
            "multiply_adds_per_image": multiply_adds(model, batches[0]),
            "objects_per_image": n_objects / args.n_images,
            "forward_cpu_s": forward_cpu, "record_cpu_s": record_cpu,
            "sketch_cpu_s": sketch_cpu,
            "ratio_cpu": (record_cpu + sketch_cpu) / forward_cpu,
            "forward_wall_s": forward_wall, "record_wall_s": record_wall,
            "sketch_wall_s": sketch_wall,
            "ratio_wall": (record_wall + sketch_wall) / forward_wall})
    return rows


if __name__ == "__main__":
    main()
