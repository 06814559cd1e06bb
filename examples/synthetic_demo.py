"""Synthetic demo: sketch a synthetic network's records.

Run with ``python examples/synthetic_demo.py``. It makes the records of a
synthetic 3-layer modular network, sketches them, and shows what the
sketches keep: linearity (merged records sketch to the sum), similarity
(nearest neighbours share a class), clustering, a classifier trained on
sketches, what can be decoded from a sketch alone (counts, mean attributes,
the module tree, also after erasure), and how the network's wiring and path
blocks are learned back from sketches.
"""

import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from sksketch import (
    ActivationRecord,
    NetworkRecoveryDictionaryLearner,
    RecordBatch,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    erase,
    make_activation_records,
    merge_records,
    score_network_recovery,
    suggest_sketch_dim,
)


def main():
    records, labels, network = make_activation_records(
        3000, n_modules=9, depth=3, fan_in=2, attribute_dim=8, n_classes=4,
        n_roots=(2, 3), n_children=(1, 3), class_sep=2.0, shared_fraction=0.2,
        random_state=0, return_network=True)
    n_objects = sum(r.n_objects for r in records)
    print(f"Synthetic network: {len(network.module_dims)} modules in "
          f"{len(network.layers)} layers, {len(network.edges)} wiring edges")
    print(f"Records: {len(records)} records, {n_objects} objects "
          f"({n_objects / len(records):.1f} per record), 4 classes")

    sketcher = RecursiveSketcher(sketch_dim=256, random_state=0)
    # A first call also converts the records and fills the sketcher's caches
    # of random matrices, so it is timed apart from a warm call.
    start = time.perf_counter()
    batch = RecordBatch.from_records(records)
    sketches = sketcher.fit_transform(batch)
    cold = time.perf_counter() - start
    warm = np.inf
    for _ in range(3):
        start = time.perf_counter()
        sketcher.transform(batch)
        warm = min(warm, time.perf_counter() - start)
    raw_floats = sum(sum(a.size + 1 for a in r.attributes) for r in records)
    print(f"Sketched into {sketches.shape}: {sketches.shape[1]} floats per record "
          f"instead of {raw_floats / len(records):.0f} (attributes and weights)")
    print(f"Speed: cold (first call: convert, fit, fill caches) {cold:.2f} s, "
          f"{len(records) / cold:,.0f} records/s; warm (transform of a batch, "
          f"best of 3) {warm:.3f} s, {len(records) / warm:,.0f} records/s")

    merged = sketcher.transform([merge_records(records[:10])])[0]
    error = np.abs(merged - sketches[:10].sum(axis=0)).max()
    print(f"Linearity: sketch(merge of 10 records) - sum of their sketches: "
          f"max |error| = {error:.1e}")

    unit = Normalizer().fit_transform(sketches)
    neighbours = NearestNeighbors(n_neighbors=6).fit(unit)
    _, index = neighbours.kneighbors(unit)
    same_class = (labels[index[:, 1:]] == labels[:, None]).mean()
    chance = np.sum((np.bincount(labels) / len(labels)) ** 2)
    print(f"Retrieval: {same_class:.1%} of each record's 5 nearest sketches "
          f"share its class (chance: {chance:.0%})")

    clusters = KMeans(4, n_init=10, random_state=0).fit_predict(unit)
    print(f"Clustering: KMeans on sketches, adjusted Rand index "
          f"{adjusted_rand_score(labels, clusters):.3f}")

    train, test, y_train, y_test = train_test_split(records, labels, random_state=0)
    model = make_pipeline(RecursiveSketcher(256, random_state=0),
                          LogisticRegression(max_iter=2000)).fit(train, y_train)
    print(f"Classification: Pipeline(RecursiveSketcher, LogisticRegression) "
          f"test accuracy {model.score(test, y_test):.3f}")


    decode(records)
    recover_network()


def decode(records):
    """What a sketch alone tells about its record."""
    # Room for exact least squares with half of the coordinates erased.
    sketch_dim = suggest_sketch_dim(records, max_active=0.25)
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(sketch_dim, random_state=0)).fit(records)
    sketches = recoverer.sketcher_.transform(records)
    print(f"\nDecoding: suggest_sketch_dim -> d = {sketch_dim} for "
          f"{len(recoverer.paths_)} module paths")
    record, sketch = records[0], sketches[:1]
    module = record.modules[-1]
    stats = recoverer.statistics(sketch, module)
    count, total = _walk_statistics(record, module)
    print(f"  record 0 reaches {count:.0f} {module} objects (along every path "
          f"from a root) with mean attributes {np.round(total / count, 3)[:3]}...; "
          f"decoded from its sketch: {stats.count[0]:.3f}, "
          f"{np.round(stats.mean[0], 3)[:3]}...")
    tree = recoverer.unroll(sketch[0])
    print(f"  module tree of record 0 from its sketch: {_tree_text(tree)}")
    features = recoverer.transform(sketches)
    half, _ = erase(sketches, sketch_dim // 2)
    error = np.abs(recoverer.transform(half) - features).max()
    print(f"  {features.shape[1]} features per sketch (counts and means of every "
          f"path); with half of the coordinates erased they change by at most "
          f"{error:.1e}")
    transpose = SketchAttributeRecoverer(recoverer.sketcher_,
                                         method="transpose").fit(records)
    counts = [i for i, n in enumerate(recoverer.get_feature_names_out())
              if n.endswith(":count")]
    gap = np.abs(transpose.transform(sketches)[:, counts] - features[:, counts])
    print(f"  the paper's transpose decoder gets the path counts within "
          f"{np.median(gap):.2f} (median) at this d")


def recover_network():
    """Learn the wiring and the path blocks back, without the matrices."""
    records, _, network = make_activation_records(
        1000, n_modules=12, depth=3, connectivity="dense", n_children=(1, 2),
        weights="random", random_state=0, return_network=True)
    sketcher = RecursiveSketcher(256, random_state=0).fit(records)
    sketches = sketcher.transform(records)
    # The detections without their edges, and the architecture's layers.
    detections = [ActivationRecord([o._replace(inputs=()) for o in r.objects])
                  for r in records]
    learner = NetworkRecoveryDictionaryLearner(
        layers=[list(layer) for layer in network.layers[::-1]])
    learner.fit(sketches, detections)
    paths = {}
    for record in records:
        for path, slots in _record_paths(record).items():
            paths.setdefault(path, set()).update(slots)
    edges = {(o.module, r.modules[r.ids.index(c)]) for r in records
             for o in r.objects for c in o.inputs}
    score = score_network_recovery(learner, sketcher,
                                   {p: sorted(s) for p, s in paths.items()}, edges)
    print(f"\nNetwork recovery from 1,000 (sketch, detections) pairs of a "
          f"12-module network: {len(learner.blocks_)} path blocks, block cosine "
          f"{score['block_cosine']:.3f}, wiring F1 {score['f1']:.2f} "
          f"({len(learner.wiring_edges())} edges)")

    chains, _ = make_activation_records(
        5000, n_modules=8, depth=3, n_roots=1, n_children=1, branching="one",
        shared_fraction=0.0, weights="random", class_sep=0.0, noise=1.0,
        n_classes=5, random_state=1)
    sketcher = RecursiveSketcher(256, random_state=0).fit(chains)
    learner = NetworkRecoveryDictionaryLearner(random_state=0).fit(
        sketcher.transform(chains))
    paths = {}
    for record in chains:
        for path, slots in _record_paths(record).items():
            paths.setdefault(path, set()).update(slots)
    score = score_network_recovery(learner, sketcher,
                                   {p: sorted(s) for p, s in paths.items()})
    print(f"From 5,000 sketches alone (one chain each): {len(learner.blocks_)} "
          f"path blocks for {len(paths)} true paths, block cosine "
          f"{score['block_cosine']:.3f}, path-tree F1 {score['f1']:.2f}")


def _record_paths(record):
    """{module path: slots} of a record's objects, walking from its roots."""
    objects = {obj.id: obj for obj in record.objects}
    paths = {}

    def walk(obj, prefix):
        path = prefix + (obj.module,)
        paths.setdefault(path, set()).add(obj.slot)
        for child in obj.inputs:
            walk(objects[child], path)

    for root in record.roots:
        walk(objects[root], ())
    return paths


def _walk_statistics(record, module):
    """Count and attribute sum of ``module``'s objects over every root path."""
    objects = {obj.id: obj for obj in record.objects}
    count, total = 0.0, 0.0

    def walk(obj, weight):
        nonlocal count, total
        weight *= obj.weight
        if obj.module == module:
            count, total = count + weight, total + weight * obj.attributes
        for child in obj.inputs:
            walk(objects[child], weight)

    for root in record.roots:
        walk(objects[root], 1.0)
    return count, total


def _tree_text(tree):
    return ", ".join(f"{module} x{node['count']:.0f}"
                     + (f" [{_tree_text(node['children'])}]" if node["children"]
                        else "")
                     for module, node in tree.items())


if __name__ == "__main__":
    main()
