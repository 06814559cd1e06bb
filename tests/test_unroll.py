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


def _sum_layout(batch, entries):
    """The layout from the general constructor (a Python sort of the items)."""
    n_slots = max(len(batch._slot_keys), 1)
    pairs = np.unique(entries.path * n_slots + batch._slot_codes[entries.obj])
    items = [(p, None) for p in entries.paths]
    items += [(entries.paths[k // n_slots], batch._slot_keys[k % n_slots])
              for k in pairs.tolist()]
    return ColumnLayout(items, batch.module_dims)


def _mixed_slot_batch():
    # Slots of every kind: ints past 9 (their keys sort as "10" < "2"),
    # strings and positions.
    slots = [2, 10, "x", (0, 1), (0, 10), "10", 1]
    return RecordBatch(module=["top"] + ["mid"] * 3 + ["low"] * 3,
                       attributes={"top": np.ones((1, 2)), "mid": np.ones((3, 3)),
                                   "low": np.ones((3, 1))},
                       record=[0] * 7, slot=slots,
                       edges=[[0, 1], [0, 2], [0, 3], [1, 4], [2, 5], [3, 6],
                              [1, 6]])


def test_layout_from_entries_is_the_one_of_its_items(tree_batch):
    # from_unrolled orders the items with array sorts; it must give the
    # layout the general constructor gives, for every kind of slot.
    from sksketch._unroll import block_offsets

    for batch in (tree_batch, _mixed_slot_batch(),
                  RecordBatch.from_records([_diamond(True), _diamond(False)])):
        entries = unroll(batch)
        layout = ColumnLayout.from_unrolled(batch, entries)
        expected = _sum_layout(batch, entries)
        assert layout.items == expected.items
        assert np.array_equal(layout.offsets, expected.offsets)
        assert layout.index == expected.index
        for a, b in zip(block_offsets(batch, entries, layout),
                        block_offsets(batch, entries, expected), strict=True):
            assert np.array_equal(a, b)


def test_offset_tables_follow_the_entries_paths(tree_batch):
    # A layout keeps the offset tables of the entries it was built from; the
    # same entries with their paths numbered otherwise must not reuse them.
    from sksketch._unroll import Unrolled, block_offsets

    entries = unroll(tree_batch)
    layout = ColumnLayout.from_unrolled(tree_batch, entries)
    before = block_offsets(tree_batch, entries, layout)
    n_paths = len(entries.paths)
    renumbered = Unrolled(entries.paths[::-1], n_paths - 1 - entries.path,
                          entries.obj, entries.weight)
    after = block_offsets(tree_batch, renumbered, layout)
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a, b)


def test_written_coefficients_are_the_added_ones_to_the_bit(monkeypatch):
    # Where no two entries share an attribute block, Z is written a row per
    # entry instead of added a value at a time: the same bits, a zero's sign
    # included (weights of 0 on negative attributes give -0.0 products).
    from sksketch import _unroll

    rng = np.random.default_rng(0)
    n = 40
    attributes = {"conv": rng.standard_normal((3 * n, 4)), "fc": -np.ones((n, 2))}
    weight = np.concatenate((rng.random(3 * n), np.zeros(n)))
    weight[::7] = 0.0
    batch = RecordBatch(module=["conv"] * (3 * n) + ["fc"] * n,
                        attributes=attributes, weight=weight,
                        record=np.concatenate((np.repeat(np.arange(n), 3),
                                               np.arange(n))),
                        slot=np.concatenate((np.tile([0, 5, 2], n), np.zeros(n, int))),
                        edges=[[3 * n + r, 3 * r + i] for r in range(n)
                               for i in range(3)])
    entries = unroll(batch)
    layout = ColumnLayout.from_unrolled(batch, entries)
    distinct = _unroll.all_distinct
    for chunk_size in (1, 7, n):
        answers = []
        with monkeypatch.context() as patch:
            patch.setattr(_unroll, "all_distinct",
                          lambda *a, seen=answers: seen.append(distinct(*a))
                          or seen[-1])
            written = [z.copy() for *_, z in _unroll.coefficient_chunks(
                batch, entries, layout, chunk_size)]
        assert answers and all(answers)  # every chunk took the written path
        with monkeypatch.context() as patch:
            patch.setattr(_unroll, "all_distinct", lambda cells, n_cells: False)
            added = [z.copy() for *_, z in _unroll.coefficient_chunks(
                batch, entries, layout, chunk_size)]
        assert len(written) == len(added)
        for a, b in zip(written, added):
            assert np.array_equal(a.view(np.int64), b.view(np.int64))
            assert not np.signbit(a[a == 0]).any()  # 0.0 + -0.0 is 0.0


def test_merging_walks_by_counting_is_the_sort_to_the_bit():
    from sksketch._unroll import _merge_by_key

    rng = np.random.default_rng(1)
    key = rng.integers(0, 50, 400)
    weight = rng.standard_normal(400)
    unique, inverse = np.unique(key, return_inverse=True)
    expected = np.bincount(inverse, weights=weight)
    for n_keys in (50, 10**6):  # counted, sorted
        got_keys, got = _merge_by_key(key, weight, n_keys)
        assert np.array_equal(got_keys, unique)
        assert np.array_equal(got.view(np.int64), expected.view(np.int64))
