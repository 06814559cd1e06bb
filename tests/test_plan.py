"""Choosing the engine per record: cheap to decide, never exponential."""

import numpy as np

from sksketch import ActivationRecord, RecordBatch, RecursiveSketcher
from sksketch import _shapes as shapes
from sksketch._plan import (
    COEFFICIENT_FLOPS,
    ENTRY_FLOPS,
    LEVELWISE_OBJECT_FLOPS,
    levelwise_cost,
    plan_sketch,
)
from sksketch._reference import reference_sketch
from sksketch._unroll import unroll


def test_pricing_a_lattice_stops_at_the_levelwise_cost():
    # 2^30 module paths. Unrolling stops as soon as the coefficient work
    # passes the level-wise price, so it registers at most that many entries.
    batch = shapes.lattice(30, n_records=1, dim=4)
    plan = plan_sketch(batch, 64, "half_identity")
    assert plan.levelwise.all()
    assert np.isinf(plan.unrolled_cost).all()
    entry_cost = ENTRY_FLOPS + COEFFICIENT_FLOPS * (4 + 1)
    max_entries = levelwise_cost(batch, 64, "half_identity").sum() / entry_cost
    assert max_entries < 1e5
    capped = unroll(batch, budget=plan.levelwise_cost,
                    entry_cost=np.full(batch.n_objects, entry_cost))
    assert capped.over_budget.all()
    assert len(capped.paths) <= max_entries


def test_trees_are_unrolled(tree_batch):
    for d in (256, 1024, 4096):
        plan = plan_sketch(tree_batch, d, "half_identity")
        assert not plan.levelwise.any(), d
        assert plan.unrolled is not None


def test_small_d_prices_the_levelwise_handling_per_object():
    # 50 records of 30 lone objects (a recorder's detections without
    # inputs): at d = 8 the level-wise products cost 272 flops an object,
    # less than unrolling one entry, but gathering and writing each object's
    # sketch costs more than both; the plan must see that and unroll.
    batch = RecordBatch(module=["m"] * 1500, attributes={"m": np.ones((1500, 4))},
                        record=np.repeat(np.arange(50), 30),
                        slot=np.tile(np.arange(30), 50))
    d = 8
    products = 2 * d * (2 * 4 + 1) + 2 * d * d
    per_object = levelwise_cost(batch, d, "half_identity")[0] / 30
    assert per_object == products + LEVELWISE_OBJECT_FLOPS
    assert products < ENTRY_FLOPS + COEFFICIENT_FLOPS * 5 < per_object
    assert not plan_sketch(batch, d, "half_identity").levelwise.any()


def test_mixed_batch_takes_both_engines_and_matches_the_recursion(tree_batch):
    # Blocks are shared by 200 trees (unrolled); the lattice record has 2^12
    # paths (level-wise).
    records = tree_batch.to_records() + shapes.lattice(12).to_records()
    batch = RecordBatch.from_records(records)
    plan = plan_sketch(batch, 256, "half_identity")
    # A tree using a block no other record uses pays for it alone, and may
    # go level-wise; most share their blocks with many others.
    assert plan.levelwise[-1] and plan.levelwise[:-1].mean() < 0.5
    sketcher = RecursiveSketcher(256, random_state=0).fit(batch)
    sketches = sketcher.transform(batch)
    checked = [0, 1, 2, *np.flatnonzero(plan.levelwise)[:3].tolist()]
    expected = np.array([reference_sketch(records[i], sketcher) for i in checked])
    np.testing.assert_allclose(sketches[checked], expected, rtol=0,
                               atol=1e-10 * np.abs(expected).max())
    # The plan depends on structure only: the same bits after the cache is
    # emptied.
    sketcher._matrices().clear()
    np.testing.assert_array_equal(sketcher.transform(batch), sketches)


def test_a_long_chain_goes_levelwise_and_a_short_one_unrolled():
    long_chain = shapes.chain(2000, n_records=1)
    assert plan_sketch(long_chain, 256, "half_identity").levelwise.all()
    short = RecordBatch.from_records([ActivationRecord([
        {"id": 0, "module": "a", "attributes": [1.0, 2.0], "inputs": [1]},
        {"id": 1, "module": "b", "attributes": [0.5, 0.1]}])] * 50)
    assert not plan_sketch(short, 256, "half_identity").levelwise.any()


def test_chain_widths_by_table_and_by_sorted_set_agree(tree_batch, monkeypatch):
    # The seen (trie node, slot) keys live in a table when it is small and in
    # a sorted set otherwise; both must count the same chains in the same
    # order. A chain of one module repeated walks long suffix links.
    from sksketch import _plan

    for batch in (tree_batch, shapes.chain(12, n_records=3),
                  shapes.receptive_field(6, n_layers=3, n_records=2)):
        unrolled = unroll(batch)
        n_slots = max(len(batch._slot_keys), 1)
        items = np.unique(unrolled.path * n_slots + batch._slot_codes[unrolled.obj])
        dims = np.array([block.shape[1] for block in batch._attributes], float)
        by_table = _plan._chain_widths(unrolled, items, n_slots, dims)
        monkeypatch.setattr(_plan, "_TABLE_KEYS", 0)
        by_set = _plan._chain_widths(unrolled, items, n_slots, dims)
        monkeypatch.undo()
        assert np.array_equal(by_table, by_set)
