"""End-to-end demo: sketch what a trained CNN saw, on scikit-learn's digits.

Run with ``make demo``. It trains a small CNN on the 8x8 digits images
(fixed seeds), records every image through
:class:`sksketch.torch.ActivationRecorder` (the strongest positions of both
convolutions, each consuming the positions of the layer below inside its
receptive field, and the classifier's output), sketches the records at
several dimensions ``d``, and compares the sketches with the raw activations
they replace and with two flat reductions of those raw activations to the
same ``d`` (a Gaussian random projection and PCA): nearest-neighbour
retrieval, a linear classifier, clustering. It then decodes per-layer counts
from sketches alone, prints one table and saves the plots.

``--fast`` runs a smaller version (CI runs it, so that the demo never rots).
"""

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.random_projection import GaussianRandomProjection

LAYERS = ["conv1", "conv2", "fc"]
TOP_K = {"conv1": 12, "conv2": 6}


def make_cnn(torch, channels=(8, 16)):
    nn = torch.nn
    first, second = channels
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, first, 3, padding=1))
    model.add_module("relu1", nn.ReLU())
    model.add_module("pool1", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(first, second, 3, padding=1))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool2", nn.MaxPool2d(2))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(second * 2 * 2, 10))
    return model


def train_cnn(torch, X, y, *, epochs, seed=0):
    torch.manual_seed(seed)
    model = make_cnn(torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = torch.tensor(X), torch.tensor(y)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(X), generator=generator).split(128):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def raw_activations(torch, model, X):
    """The full outputs of the recorded layers, flattened and concatenated."""
    outputs = []
    hooks = [dict(model.named_modules())[name].register_forward_hook(
        lambda module, inputs, output: outputs.append(output.flatten(1)))
        for name in LAYERS]
    with torch.no_grad():
        model(torch.tensor(X))
    for hook in hooks:
        hook.remove()
    return torch.cat(outputs, dim=1).numpy().astype(np.float64)


def recall_at_10(reference, features):
    """Mean fraction of each item's 10 nearest neighbours (by ``reference``)
    that its 10 nearest by ``features`` find."""
    def neighbours(Z):
        index = NearestNeighbors(n_neighbors=11).fit(Z).kneighbors(Z)[1]
        return index[:, 1:]  # drop the item itself
    truth, found = neighbours(reference), neighbours(features)
    return np.mean([np.intersect1d(t, f).size / 10 for t, f in zip(truth, found)])


def evaluate(features, y, train, test, seed):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    accuracy = clf.fit(features[train], y[train]).score(features[test], y[test])
    clusters = KMeans(10, n_init=2, random_state=seed).fit_predict(
        StandardScaler().fit_transform(features))
    return accuracy, adjusted_rand_score(y, clusters)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true",
                        help="fewer images, epochs and dimensions (for CI)")
    parser.add_argument("--out", default="demo_output",
                        help="folder for the plots (default: demo_output)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    import torch
    from tqdm.auto import tqdm

    from sksketch import RecursiveSketcher, SketchAttributeRecoverer, suggest_sketch_dim
    from sksketch.torch import ActivationRecorder

    # One thread: on a small, busy machine, more threads spin against each
    # other on these tiny convolutions (measured: 20x slower training).
    torch.set_num_threads(1)
    seed = 0
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target
    if args.fast:
        X, y = X[:600], y[:600]
    dims = [16, 64] if args.fast else [32, 64, 128, 256]
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=0.3, stratify=y,
                                   random_state=seed)

    model = train_cnn(torch, X[train], y[train], epochs=5 if args.fast else 15,
                      seed=seed)
    with torch.no_grad():
        predicted = model(torch.tensor(X[test])).argmax(1).numpy()
    cnn_accuracy = (predicted == y[test]).mean()
    print(f"Trained a CNN ({' -> '.join(LAYERS)}) on {len(train)} digits "
          f"images (8x8): test accuracy {cnn_accuracy:.1%}")

    recorder = ActivationRecorder(model, LAYERS, top_k=TOP_K, weight="one")
    with recorder:
        batches = list(recorder.iter_batches(torch.tensor(X).split(256)))
    batch = _concatenate(batches)
    raw = raw_activations(torch, model, X)
    print(f"Recorded {batch.n_records} images: {batch.n_objects / batch.n_records:.0f} "
          f"objects each (the {TOP_K['conv1']} strongest conv1 positions, the "
          f"{TOP_K['conv2']} strongest conv2 positions, the output), "
          f"{len(batch._parent) / batch.n_records:.0f} receptive-field edges; "
          f"raw activations: {raw.shape[1]} floats per image")

    rows = [("raw activations", raw.shape[1], 1.0,
             1.0, *evaluate(raw, y, train, test, seed))]
    for d in tqdm(dims, desc="sketching at each d", unit="d"):
        sketches = RecursiveSketcher(d, random_state=seed).fit_transform(batch)
        projected = GaussianRandomProjection(d, random_state=seed).fit_transform(raw)
        pca = PCA(min(d, raw.shape[1]), random_state=seed).fit_transform(raw)
        for name, features in (("sketch", sketches), ("random projection", projected),
                               ("PCA", pca)):
            rows.append((name, d, raw.shape[1] / d, recall_at_10(raw, features),
                         *evaluate(features, y, train, test, seed)))

    counts = decode_counts(batch, test, seed, SketchAttributeRecoverer,
                           RecursiveSketcher, suggest_sketch_dim, n=40 if args.fast
                           else 100)

    print()
    header = (f"{'features':<18} {'d':>5} {'ratio':>6} {'recall@10':>9} "
              f"{'LogReg acc':>10} {'KMeans ARI':>10}")
    print(header)
    print("-" * len(header))
    for name, d, ratio, recall, accuracy, ari in rows:
        print(f"{name:<18} {d:>5} {ratio:>5.1f}x {recall:>9.3f} {accuracy:>10.3f} "
              f"{ari:>10.3f}")
    print("ratio: raw activation floats / features floats; recall@10 against "
          "the raw activations' 10 nearest neighbours")
    d_count, exact, n_checked = counts
    print(f"\nCounts decoded from sketches alone (lstsq, d = {d_count} from "
          f"suggest_sketch_dim): per-layer counts exact for {exact}/{n_checked} "
          f"test images")

    out = Path(args.out)
    saved = plot(rows, dims, out)
    print(f"\nPlots saved in {out}/: {', '.join(saved)}")
    print(f"Total time {time.perf_counter() - start:.0f} s")
    print(NEXT_STEPS)


def _concatenate(batches):
    """One RecordBatch from several, through their records' arrays."""
    from sksketch import RecordBatch

    module, attributes, record, weight, slot, edges = [], {}, [], [], [], []
    objects = records = 0
    for b in batches:
        names = np.asarray(b._module_names)
        module.append(names[b._module_codes])
        record.append(b._record + records)
        weight.append(b._weight)
        slot.append(np.asarray(b._slot_keys)[b._slot_codes])
        edges.append(np.stack((b._parent, b._child), 1) + objects)
        for name, block in zip(b._module_names, b._attributes):
            attributes.setdefault(name, []).append(block)
        objects += b.n_objects
        records += b.n_records
    return RecordBatch(module=np.concatenate(module),
                       attributes={k: np.concatenate(v) for k, v in attributes.items()},
                       record=np.concatenate(record), n_records=records,
                       weight=np.concatenate(weight), slot=np.concatenate(slot),
                       edges=np.concatenate(edges))


def decode_counts(batch, test, seed, SketchAttributeRecoverer, RecursiveSketcher,
                  suggest_sketch_dim, n):
    """Decode each layer's object count (over all its paths) from sketches."""
    subset = batch.take(test[:n])
    d = suggest_sketch_dim(subset)
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(d, random_state=seed),
                                         method="lstsq").fit(subset)
    sketches = recoverer.sketcher_.transform(subset)
    exact = np.ones(subset.n_records, bool)
    for code, layer in enumerate(subset._module_names):
        decoded = recoverer.statistics(sketches, layer).count
        true = _path_counts(subset, code)
        exact &= np.abs(decoded - true) < 1e-6
    return d, int(exact.sum()), subset.n_records


def _path_counts(batch, code):
    """Per record, the number of root-to-object paths ending in module ``code``.

    Objects are numbered layer by layer from the leaves, so one pass from the
    roots down in reverse object order counts the paths reaching each one.
    """
    paths = np.zeros(batch.n_objects)
    paths[batch._roots] = 1
    order = np.argsort(-batch._parent, kind="stable")  # parents after children
    for parent, child in zip(batch._parent[order], batch._child[order]):
        paths[child] += paths[parent]
    mask = batch._module_codes == code
    return np.bincount(batch._record[mask], weights=paths[mask],
                       minlength=batch.n_records)


def plot(rows, dims, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    raw = rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, column, title in zip(axes, (3, 4, 5),
                                 ("retrieval recall@10 vs raw",
                                  "LogisticRegression accuracy", "KMeans ARI")):
        for name, marker in (("sketch", "o"), ("random projection", "s"),
                             ("PCA", "^")):
            values = [r[column] for r in rows if r[0] == name]
            ax.plot(dims, values, marker=marker, label=name)
        ax.axhline(raw[column], color="gray", linestyle="--",
                   label=f"raw ({raw[1]} floats)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("d (floats per image)")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    name = "digits_cnn_sketches.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [name]


NEXT_STEPS = """
Next: sketch your own model (about ten lines):

    import torch
    from sksketch import RecursiveSketcher
    from sksketch.torch import ActivationRecorder

    model = ...                       # any torch.nn.Module, trained
    names = [n for n, _ in model.named_modules()]   # pick layers from these
    recorder = ActivationRecorder(model, ["layer1", "layer2", "fc"], top_k=16)
    with recorder:
        batches = [b for b in recorder.iter_batches(loader)]   # DataLoader
    sketcher = RecursiveSketcher(256, random_state=0).fit(batches[0])
    sketches = [sketcher.transform(b) for b in batches]        # (n, 256) each
"""


if __name__ == "__main__":
    main()
