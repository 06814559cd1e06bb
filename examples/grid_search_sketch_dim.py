"""
Grid search over the sketch dimension
=====================================

A larger sketch keeps more of each record, at more memory per input. Which
``sketch_dim`` is enough is a model-selection question, and a
:class:`~sksketch.RecursiveSketcher` in a :class:`~sklearn.pipeline.Pipeline`
answers it like any other hyperparameter: ``GridSearchCV`` cross-validates a
classifier on the sketches at each ``d``.

The records come from a synthetic network whose classes overlap
(``class_sep=0.3``, ``noise=1.0``), so that the accuracy climbs with ``d``
instead of saturating at once. Run ``python examples/grid_search_sketch_dim.py
[--fast] [--out FOLDER]``; the plot is saved to ``FOLDER``.
"""

import argparse
import os

# The Agg canvas, without pyplot: no window, no global backend to set.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksketch import RecursiveSketcher, make_activation_records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="fewer records and dimensions (for CI)")
    parser.add_argument("--out", default="examples_output",
                        help="folder for the plot (default: examples_output)")
    args = parser.parse_args(argv)

    n_records, dims = (120, [2, 8, 32, 128]) if args.fast else (
        400, [2, 4, 8, 16, 32, 64, 128, 256])
    records, y = make_activation_records(n_records, n_classes=4, class_sep=0.3,
                                         noise=1.0, random_state=0)
    pipeline = make_pipeline(RecursiveSketcher(random_state=0), StandardScaler(),
                             LogisticRegression(max_iter=2000))
    search = GridSearchCV(pipeline, {"recursivesketcher__sketch_dim": dims},
                          cv=3).fit(records, y)

    scores = search.cv_results_["mean_test_score"]
    spread = search.cv_results_["std_test_score"]
    for d, score, std in zip(dims, scores, spread):
        print(f"sketch_dim={d:4d}: accuracy {score:.3f} +- {std:.3f}")
    best = search.best_params_["recursivesketcher__sketch_dim"]
    print(f"best sketch_dim: {best}")

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.errorbar(dims, scores, yerr=spread, marker="o", capsize=3)
    ax.axvline(best, color="grey", linestyle=":", label=f"best d = {best}")
    ax.set(xscale="log", xlabel="sketch_dim d", ylabel="cross-validated accuracy",
           title="Accuracy of a classifier on sketches")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "grid_search_sketch_dim.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
