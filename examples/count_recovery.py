"""
Recovering counts from sketches, against the sketch dimension
=============================================================

A :class:`~sksketch.SketchAttributeRecoverer` reads back, from each sketch
alone, how many objects every module path holds. The least-squares decoder
(``method="lstsq"``) is exact once ``d`` reaches what
:func:`~sksketch.suggest_sketch_dim` asks for; the paper's transpose decoder
(``method="transpose"``) has an error that shrinks like ``1 / sqrt(d)``.
The counts are checked against those counted directly in the records.

Run ``python examples/count_recovery.py [--fast] [--out FOLDER]``; the plot is
saved to ``FOLDER``.
"""

import argparse
import os
import warnings
from collections import Counter

import numpy as np

# The Agg canvas, without pyplot: no window, no global backend to set.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from sksketch import (
    OutOfStructureWarning,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    make_activation_records,
    suggest_sketch_dim,
)


def path_counts(record):
    """Weighted count of the objects on every module path, from the record."""
    data = record.to_dict()
    objects = {o["id"]: o for o in data["objects"]}
    consumed = {i for o in data["objects"] for i in o["inputs"]}
    roots = data.get("outputs") or [i for i in objects if i not in consumed]
    counts = Counter()

    def walk(object_id, path, weight):
        obj = objects[object_id]
        path, weight = path + (obj["module"],), weight * obj["weight"]
        counts[path] += weight
        for child in obj["inputs"]:
            walk(child, path, weight)

    for root in roots:
        walk(root, (), 1.0)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="fewer records and dimensions (for CI)")
    parser.add_argument("--out", default="examples_output",
                        help="folder for the plot (default: examples_output)")
    args = parser.parse_args(argv)

    n_records = 40 if args.fast else 200
    records, _ = make_activation_records(n_records, random_state=0)
    d_exact = suggest_sketch_dim(records)
    dims = sorted({16, 64, d_exact, 4 * d_exact} if args.fast else
                  {16, 32, 64, 128, 256, d_exact, 512, 1024, 2048})
    print(f"suggest_sketch_dim: {d_exact}")

    errors = {"lstsq": [], "transpose": []}
    for d in dims:
        sketcher = RecursiveSketcher(d, random_state=0).fit(records)
        S = sketcher.transform(records)
        for method, error in errors.items():
            recoverer = SketchAttributeRecoverer(sketcher, method=method)
            recoverer.fit(records)
            with warnings.catch_warnings():
                # Below d_exact, lstsq warns that the sketches hold more
                # unknowns than it can solve for: the plot shows it.
                warnings.simplefilter("ignore", OutOfStructureWarning)
                features = recoverer.transform(S)
            names = list(recoverer.get_feature_names_out())
            decoded = features[:, [names.index("/".join(path) + ":count")
                                   for path in recoverer.paths_]]
            truth = np.array([[counts[path] for path in recoverer.paths_]
                              for counts in map(path_counts, records)])
            error.append(float(np.abs(decoded - truth).mean()))
        print(f"sketch_dim={d:5d}: mean count error lstsq "
              f"{errors['lstsq'][-1]:.2g}, transpose {errors['transpose'][-1]:.2g}")

    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for method, error in errors.items():
        # Exact decodes are ~1e-15: floor them so the log scale shows them.
        ax.plot(dims, np.maximum(error, 1e-16), marker="o", label=method)
    ax.axvline(d_exact, color="grey", linestyle=":", label="suggest_sketch_dim")
    ax.set(xscale="log", yscale="log", xlabel="sketch_dim d",
           ylabel="mean absolute count error", title="Counts decoded from sketches")
    ax.xaxis.set_minor_locator(NullLocator())  # no crowded 2x10^1 labels
    ax.set_xticks(dims, [str(k) for k in dims])
    ax.legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "count_recovery.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
