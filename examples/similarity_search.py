"""
Similarity search over sketches
===============================

The inner product of two sketches estimates what their records share (module
paths in common, their counts and attributes), so a nearest-neighbour index
over sketches finds records like a query record. Here the neighbours of each
record, by the cosine of the sketches, are scored by how many belong to the
query's class (precision at 5), at several ``d``; the plot also shows the
cosine matrix of the sketches, sorted by class.

Run ``python examples/similarity_search.py [--fast] [--out FOLDER]``; the plot
is saved to ``FOLDER``.
"""

import argparse
import os

import numpy as np

# The Agg canvas, without pyplot: no window, no global backend to set.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from sksketch import RecursiveSketcher, make_activation_records

K = 5


def precision_at_k(S, y, k=K):
    """Fraction of each record's k nearest others (cosine) in its class."""
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(S)
    neighbours = index.kneighbors(S, return_distance=False)[:, 1:]  # not itself
    return float((y[neighbours] == y[:, None]).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="fewer records and dimensions (for CI)")
    parser.add_argument("--out", default="examples_output",
                        help="folder for the plot (default: examples_output)")
    args = parser.parse_args(argv)

    n_records, dims = (120, [2, 8, 64]) if args.fast else (
        600, [2, 4, 8, 16, 32, 64, 128])
    records, y = make_activation_records(n_records, n_classes=5, class_sep=0.5,
                                         noise=0.5, random_state=0)
    precision = []
    for d in dims:
        S = RecursiveSketcher(d, random_state=0).fit_transform(records)
        precision.append(precision_at_k(S, y))
        print(f"sketch_dim={d:4d}: precision@{K} {precision[-1]:.3f}")

    fig = Figure(figsize=(9, 3.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(dims, precision, marker="o")
    left.axhline(np.bincount(y).max() / len(y), color="grey", linestyle=":",
                 label="chance (largest class)")
    left.set(xscale="log", xlabel="sketch_dim d", ylabel=f"precision@{K}",
             title="Neighbours of the same class")
    left.set_xticks(dims, [str(d) for d in dims])
    left.legend()
    order = np.argsort(y, kind="stable")
    unit = normalize(S[order])
    image = right.imshow(unit @ unit.T, cmap="RdBu_r", vmin=-1, vmax=1)
    right.set(title=f"cosine of sketches (d={dims[-1]}), by class",
              xticks=[], yticks=[])
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "similarity_search.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
