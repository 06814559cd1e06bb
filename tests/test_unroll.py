import numpy as np

from sksketch import ActivationRecord, RecordBatch
from sksketch._unroll import ColumnLayout, coefficients, unroll


def _diamond(same_module):
    # root -> a, b -> c: c is reached by two walks.
    middle = "mid" if same_module else None
    return ActivationRecord([
        {"id": "r", "module": "root", "attributes": [1.0], "weight": 2.0,
         "inputs": ["a", "b"]},
        {"id": "a", "module": middle or "left", "attributes": [0.0], "weight": 3.0,
         "slot": 0, "inputs": ["c"]},
        {"id": "b", "module": middle or "right", "attributes": [0.0], "weight": 5.0,
         "slot": 1, "inputs": ["c"]},
        {"id": "c", "module": "leaf", "attributes": [1.0, 2.0], "weight": 0.5}])


def test_walks_with_one_module_path_merge():
    batch = RecordBatch.from_records([_diamond(same_module=True)])
    entries = unroll(batch)
    paths = [entries.paths[p] for p in entries.path]
    leaf = paths.index(("root", "mid", "leaf"))
    # one entry for c: 2 * 3 * 0.5 + 2 * 5 * 0.5
    assert paths.count(("root", "mid", "leaf")) == 1
    assert entries.weight[leaf] == 2 * 3 * 0.5 + 2 * 5 * 0.5


def test_walks_with_two_module_paths_stay_apart():
    batch = RecordBatch.from_records([_diamond(same_module=False)])
    entries = unroll(batch)
    weight = {entries.paths[p]: w for p, w in zip(entries.path, entries.weight)}
    assert weight[("root", "left", "leaf")] == 2 * 3 * 0.5
    assert weight[("root", "right", "leaf")] == 2 * 5 * 0.5
    assert unroll(batch, max_depth=2).path.size == 3  # root, left, right


def test_coefficients_are_counts_and_slot_sums():
    batch = RecordBatch.from_records([_diamond(same_module=True)] * 2)
    entries = unroll(batch)
    layout = ColumnLayout.from_unrolled(batch, entries)
    z = coefficients(batch, entries, layout)
    assert z.shape == (2, layout.n_columns)
    path = ("root", "mid", "leaf")
    # c's effective weight: 2 * 3 * 0.5 + 2 * 5 * 0.5 = 8, attributes [1, 2];
    # its default slot is 0 (the first consumer lists one "leaf" input).
    np.testing.assert_allclose(z[:, layout.columns((path, None))], [[8.0]] * 2)
    np.testing.assert_allclose(z[:, layout.columns((path, 0))], [[8.0, 16.0]] * 2)
    np.testing.assert_allclose(z[:, layout.columns((("root", "mid"), 1))],
                               [[0.0]] * 2)


def test_layout_depends_only_on_its_items():
    items = [(("b",), None), (("a",), 1), (("a",), None), (("a",), "x"),
             (("a",), (0, 1))]
    dims = {"a": 2, "b": 3}
    first = ColumnLayout(items, dims)
    second = ColumnLayout(items[::-1] + items[:2], dims)
    assert first.items == second.items
    assert first.items[0] == (("a",), None)  # presence before the slots
    assert first.n_columns == 1 + 2 * 3 + 1
