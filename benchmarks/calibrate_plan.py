"""Measure the unrolled engine's cost constants (sksketch/_plan.py, _block_product.py).

The plan compares the two engines in floating-point operations of the
level-wise engine. This script expresses each measured piece of the
unrolled engine in that unit, on the records of the two CNNs of
bench_torch.py (untrained, 4,000 digits images, batches of 500), on one
thread, best of ``--repeat``:

- the unit: the level-wise engine's priced operations per second
  (``levelwise_cost`` over its time, at every ``d``);
- ``ENTRY_FLOPS``: ``unroll`` per (object, path) entry;
- ``COEFFICIENT_FLOPS``: gathering and weighting the attribute values, per
  value (the block-wise product's ``weighted_values``);
- ``DENSE_CELL_FLOPS``: building the dense ``Z`` besides its values, per cell;
- ``DENSE_PRODUCT_SHARE``: the dense product's time over its nominal
  arithmetic (``2 d`` per cell);
- ``BLOCK_PRODUCT_SHARE``, ``ROW_UPDATE_FLOPS`` and ``BLOCK_STEP_FLOPS``: the
  block-wise product's loop, fitted by least squares over both networks and
  every ``d`` (per nominal operation, ``2 d`` per value; per entry and
  sketch dimension; per block run).

Prints the measurements and the fitted constants beside the ones in use.
Run: ``python benchmarks/calibrate_plan.py [--dims 32 64 128 256]``
"""

import argparse
import time

import numpy as np
import torch
from bench_torch import NETWORKS
from common import best_time
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from sksketch import RecursiveSketcher
from sksketch import _block_product as blocks
from sksketch import _plan as plan
from sksketch._levelwise import levelwise_sketch
from sksketch._paths import PathBlocks
from sksketch._unroll import ColumnLayout, block_offsets, coefficient_chunks, unroll
from sksketch.torch import ActivationRecorder


def recorded(network, n_images, batch_size):
    from demo import LAYERS, TOP_K  # examples/, on the path bench_torch sets

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = load_digits().images / 16.0
    X = images[rng.integers(len(images), size=n_images)]
    X = (X + 0.05 * rng.standard_normal(X.shape)).astype(np.float32)[:, None]
    model = NETWORKS[network]().eval()
    recorder = ActivationRecorder(model, LAYERS, top_k=TOP_K)
    return [recorder.record(b) for b in torch.tensor(X).split(batch_size)]


def measure(batches, d, repeat):
    """Seconds and counts of every piece, summed over the batches."""
    matrices = RecursiveSketcher(d, random_state=0).fit(batches[0])._matrices()
    pieces = []
    for batch in batches:
        unrolled = unroll(batch)
        layout = ColumnLayout.from_unrolled(batch, unrolled)
        g_rows = PathBlocks(matrices, batch.module_dims).stack(layout)
        a_offset, n_offset = block_offsets(batch, unrolled, layout)
        block_plan = blocks.block_plan(batch, unrolled, layout, n_offset, d)
        if block_plan is None:  # priced dense: time the block product anyway
            item = np.searchsorted(layout.offsets[:-1], n_offset)
            key = ((batch._record[unrolled.obj] // blocks.chunk_records(d))
                   * len(layout.items) + item)
            order = np.argsort(key, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(key[order]) != 0])
            block_plan = blocks.BlockPlan(order, starts, item[order[starts]])
        pieces.append((batch, unrolled, layout, g_rows, a_offset, block_plan))

    def each(function):
        return lambda: [function(*p) for p in pieces]

    times = {
        "levelwise": each(lambda b, *_: levelwise_sketch(b, matrices, np.float64)),
        "unroll": each(lambda b, *_: unroll(b)),
        "values": each(lambda b, u, *_: blocks.weighted_values(
            b, u.obj, u.weight, np.float64)),
        "dense_z": each(lambda b, u, lay, *_: list(coefficient_chunks(
            b, u, lay, b.n_records))),
        "dense_product": each(lambda b, u, lay, g, *_: [z @ g for _, _, z in
                                                         coefficient_chunks(
                                                             b, u, lay, b.n_records)]),
        "block": each(lambda b, u, lay, g, a, bp: blocks.block_sketch(
            b, u, lay, g, np.float64, a, bp)),
    }
    seconds = {name: best_time(f, repeat, clock=time.process_time)
               for name, f in times.items()}
    dims = [np.array([blk.shape[1] for blk in p[0]._attributes]) for p in pieces]
    counts = {
        "levelwise_flops": sum(plan.levelwise_cost(p[0], d, "half_identity").sum()
                               for p in pieces),
        "entries": sum(p[1].obj.size for p in pieces),
        "values": sum(int(dm[p[0]._module_codes[p[1].obj]].sum())
                      for p, dm in zip(pieces, dims)),
        "cells": sum(p[0].n_records * p[2].n_columns for p in pieces),
        "steps": sum(p[5].starts.size for p in pieces),
        "presence": sum(p[0].n_records * len(p[1].paths) for p in pieces),
    }
    return seconds, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--n-images", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with threadpool_limits(1, user_api="blas"):
        for network in NETWORKS:
            batches = recorded(network, args.n_images, 500)
            for d in args.dims:
                seconds, counts = measure(batches, d, args.repeat)
                rows.append((network, d, seconds, counts))
    print(f"{'network':>9} {'d':>4} {'lw GF/s':>8} {'entry':>7} {'coef':>6} "
          f"{'cell':>6} {'block s':>8}")
    fit_rows, fit_rhs = [], []
    entry, coef, cell, dense = [], [], [], []
    for network, d, s, c in rows:
        rate = c["levelwise_flops"] / s["levelwise"]
        entry.append(s["unroll"] * rate / c["entries"])
        coef.append(s["values"] * rate / c["values"])
        cell.append((s["dense_z"] - s["values"]) * rate / c["cells"])
        # The loop: what is left of the block product once its values and
        # arithmetic are taken out.
        left = (s["block"] - s["values"]) * rate - 2 * d * c["presence"]
        fit_rows.append([2 * d * c["values"], d * c["entries"], c["steps"]])
        dense.append((s["dense_product"] - s["dense_z"]) * rate / (2 * d * c["cells"]))
        fit_rhs.append(left)
        print(f"{network:>9} {d:>4} {rate / 1e9:>8.1f} {entry[-1]:>7.0f} "
              f"{coef[-1]:>6.0f} {cell[-1]:>6.1f} {s['block']:>8.3f}")
    print("dense product: operations per nominal one (DENSE_PRODUCT_SHARE, in use "
          f"{blocks.DENSE_PRODUCT_SHARE}):", np.round(dense, 2))
    (arith, row_update, step), *_ = np.linalg.lstsq(np.array(fit_rows, float),
                                             np.array(fit_rhs), rcond=None)
    print("constant            measured (median / fit)   in use")
    for name, value, used in (
            ("ENTRY_FLOPS", np.median(entry), plan.ENTRY_FLOPS),
            ("COEFFICIENT_FLOPS", np.median(coef), plan.COEFFICIENT_FLOPS),
            ("DENSE_CELL_FLOPS", np.median(cell), blocks.DENSE_CELL_FLOPS),
            ("BLOCK_PRODUCT_SHARE", arith, blocks.BLOCK_PRODUCT_SHARE),
            ("ROW_UPDATE_FLOPS", row_update, blocks.ROW_UPDATE_FLOPS),
            ("BLOCK_STEP_FLOPS", step, blocks.BLOCK_STEP_FLOPS)):
        print(f"{name:<20} {value:>12,.1f} {used:>18,.1f}")


if __name__ == "__main__":
    main()
