"""The unrolled engine's block-wise final product against the dense one."""

import numpy as np
import pytest

from sksketch import RecordBatch, RecursiveSketcher
from sksketch._block_product import block_plan, block_sketch
from sksketch._paths import PathBlocks
from sksketch._unroll import ColumnLayout, block_offsets, coefficients, unroll


def sparse_batch(n_records=300, n_slots=40, per_record=4, dim=32, seed=0,
                 shared_slot=False):
    """Records of one root reading ``per_record`` of ``n_slots`` positions.

    Like a recorder's top-k detections: each record's coefficient row
    touches ``per_record`` of the ``n_slots`` attribute blocks
    (``shared_slot``: record 0's first two leaves share a slot).
    """
    rng = np.random.default_rng(seed)
    n_leaves = n_records * per_record
    slots = np.concatenate([rng.choice(n_slots, per_record, replace=False)
                            for _ in range(n_records)])
    if shared_slot:
        slots[1] = slots[0]
    leaf_record = np.repeat(np.arange(n_records), per_record)
    module = ["leaf"] * n_leaves + ["root"] * n_records
    record = np.concatenate((leaf_record, np.arange(n_records)))
    edges = np.stack((n_leaves + leaf_record, np.arange(n_leaves)), axis=1)
    return RecordBatch(module=module, record=record, n_records=n_records,
                       slot=np.concatenate((slots, np.zeros(n_records, int))),
                       weight=rng.uniform(0.5, 2.0, n_leaves + n_records),
                       attributes={"leaf": rng.standard_normal((n_leaves, dim)),
                                   "root": rng.standard_normal((n_records, 3))},
                       edges=edges)


def parts(batch, d):
    sketcher = RecursiveSketcher(d, random_state=0).fit(batch)
    unrolled = unroll(batch)
    layout = ColumnLayout.from_unrolled(batch, unrolled)
    g_rows = PathBlocks(sketcher._matrices(), batch.module_dims).stack(layout)
    return unrolled, layout, g_rows


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_product_matches_the_dense_product(dtype):
    batch = sparse_batch()
    unrolled, layout, g_rows = parts(batch, 64)
    a_offset, n_offset = block_offsets(batch, unrolled, layout)
    plan = block_plan(batch, unrolled, layout, n_offset, 64)
    assert plan is not None  # 4 of 40 blocks a row: the block-wise product
    g = g_rows.astype(dtype)
    z = coefficients(batch, unrolled, layout).astype(dtype)
    got = block_sketch(batch, unrolled, layout, g, dtype, a_offset, plan)
    assert got.dtype == dtype
    # Both sum the same products z_ij g_jk, each with an error of at most
    # gamma_n sum_j |z_ij g_jk| (n = columns, u = the dtype's unit roundoff).
    n, u = layout.n_columns, np.finfo(dtype).eps / 2
    bound = 2 * n * u / (1 - n * u) * (np.abs(z.astype(float))
                                       @ np.abs(g.astype(float)))
    assert np.all(np.abs(got.astype(float) - (z @ g).astype(float)) <= bound)
    # Deterministic: the same bits again.
    again = block_sketch(batch, unrolled, layout, g, dtype, a_offset, plan)
    np.testing.assert_array_equal(got, again)


def test_block_product_needs_distinct_blocks_per_record():
    # Two leaves of record 0 in one slot share its block: the dense product.
    batch = sparse_batch(shared_slot=True)
    unrolled, layout, _ = parts(batch, 64)
    _, n_offset = block_offsets(batch, unrolled, layout)
    assert block_plan(batch, unrolled, layout, n_offset, 64) is None


def test_dense_rows_keep_the_dense_product():
    # Every record uses every block: skipping zeros saves nothing.
    batch = sparse_batch(n_slots=4, per_record=4)
    unrolled, layout, _ = parts(batch, 64)
    _, n_offset = block_offsets(batch, unrolled, layout)
    assert block_plan(batch, unrolled, layout, n_offset, 64) is None


def test_sketches_agree_with_the_levelwise_engine():
    batch = sparse_batch()
    unrolled = RecursiveSketcher(64, engine="unrolled", random_state=0).fit(batch)
    levelwise = RecursiveSketcher(64, engine="levelwise", random_state=0).fit(batch)
    expected = levelwise.transform(batch)
    np.testing.assert_allclose(unrolled.transform(batch), expected, rtol=0,
                               atol=1e-10 * np.abs(expected).max())
