"""
Clustering records by their sketches
====================================

Records of the same class share module paths and similar attributes, so
their sketches lie close together: k-means on the sketches groups the
records by class without labels. The adjusted Rand index (ARI) compares the
clusters with the classes of the synthetic network, at several ``d``; the
plot shows the sketches at the largest ``d`` projected on their first two
principal components, coloured by cluster.

Run ``python examples/clustering_sketches.py [--fast] [--out FOLDER]``; the
plot is saved to ``FOLDER``.
"""

import argparse
import os

# The Agg canvas, without pyplot: no window, no global backend to set.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from sksketch import RecursiveSketcher, make_activation_records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true",
                        help="fewer records and dimensions (for CI)")
    parser.add_argument("--out", default="examples_output",
                        help="folder for the plot (default: examples_output)")
    args = parser.parse_args(argv)

    n_classes = 4
    n_records, dims = (120, [4, 64]) if args.fast else (600, [4, 16, 64, 256])
    records, y = make_activation_records(n_records, n_classes=n_classes,
                                         random_state=0)
    for d in dims:
        S = RecursiveSketcher(d, random_state=0).fit_transform(records)
        clusters = KMeans(n_classes, n_init=10, random_state=0).fit_predict(S)
        print(f"sketch_dim={d:4d}: ARI {adjusted_rand_score(y, clusters):.3f}")

    xy = PCA(2, random_state=0).fit_transform(S)
    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(*xy.T, c=clusters, cmap="tab10", s=12)
    ax.set(xlabel="first principal component", ylabel="second principal component",
           title=f"k-means on sketches (d={dims[-1]}): "
                 f"ARI {adjusted_rand_score(y, clusters):.2f}")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "clustering_sketches.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
