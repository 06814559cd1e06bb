"""
Graceful erasure of sketch coordinates
======================================

A sketch still decodes after losing coordinates: :func:`~sksketch.erase`
keeps a prefix of each sketch (or a random subset), and every decoder of
:class:`~sksketch.SketchAttributeRecoverer` accepts what is left. The
transpose decoder's error grows smoothly, like ``1 / sqrt(d')`` for ``d'``
kept coordinates; the least-squares decoder stays exact at least down to
what :func:`~sksketch.suggest_sketch_dim` asks for, then degrades.

Run ``python examples/graceful_erasure.py [--fast] [--out FOLDER]``; the plot
is saved to ``FOLDER``.
"""

import argparse
import os
import warnings

import numpy as np

# The Agg canvas, without pyplot: no window, no global backend to set.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from sksketch import (
    OutOfStructureWarning,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    erase,
    make_activation_records,
    suggest_sketch_dim,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="fewer records and kept sizes (for CI)")
    parser.add_argument("--out", default="examples_output",
                        help="folder for the plot (default: examples_output)")
    args = parser.parse_args(argv)

    n_records, d = (40, 512) if args.fast else (200, 2048)
    records, _ = make_activation_records(n_records, random_state=0)
    d_exact = suggest_sketch_dim(records)
    sketcher = RecursiveSketcher(d, random_state=0).fit(records)
    S = sketcher.transform(records)
    decoders = {method: SketchAttributeRecoverer(sketcher, method=method)
                .fit(records) for method in ("lstsq", "transpose")}
    # The reference: every coordinate, decoded exactly.
    full = decoders["lstsq"].transform(S)
    n_kept = np.unique(np.geomspace(16, d, 5 if args.fast else 12).astype(int))
    print(f"sketch_dim {d}; suggest_sketch_dim: {d_exact}")

    errors = {(method, how): [] for method in decoders for how in ("prefix",
                                                                   "random")}
    for keep in n_kept:
        for (method, how), error in errors.items():
            if how == "prefix":
                erased, kept = erase(S, int(keep))
            else:
                erased, kept = erase(S, keep / d, random_state=0)
            with warnings.catch_warnings():
                # Below d_exact, lstsq warns that too few coordinates are
                # left for its unknowns: the plot shows it.
                warnings.simplefilter("ignore", OutOfStructureWarning)
                decoded = decoders[method].transform(erased, kept=kept)
            error.append(float(np.abs(decoded - full).mean()))
        print(f"kept {keep:5d}: " + ", ".join(
            f"{method} {how} {error[-1]:.2g}"
            for (method, how), error in errors.items()))

    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for (method, how), error in errors.items():
        # Exact decodes are ~1e-15: floor them so the log scale shows them.
        ax.plot(n_kept, np.maximum(error, 1e-16), marker="o",
                linestyle="-" if how == "prefix" else "--",
                label=f"{method}, {how}")
    ax.axvline(d_exact, color="grey", linestyle=":", label="suggest_sketch_dim")
    ax.set(xscale="log", yscale="log", xlabel="coordinates kept d'",
           ylabel="mean absolute error of the features",
           title=f"Decoding erased sketches (d={d})")
    ax.xaxis.set_minor_locator(NullLocator())  # no crowded 2x10^1 labels
    ax.set_xticks(n_kept, [str(k) for k in n_kept])
    ax.legend(fontsize="small")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "graceful_erasure.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
