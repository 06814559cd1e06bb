"""The unrolled engine's final product, block by block (docs: The mathematics).

A record's coefficient row ``z`` touches few of the layout's column blocks:
the presence column of each path it reaches and, per entry, the ``H`` block
of the entry's (path, slot). On a recorded CNN a row of 2,254 columns holds
781 non-zeros, so the dense ``Z @ G_stacked^T`` spends two thirds of its
work on zeros, and building the dense ``Z`` (zeroing it, then writing it) is
itself a pass over every cell. This product skips both:

- the presences: one small dense product, ``C @ A`` with ``C`` the records'
  weighted counts per presence column (``n_records x n_paths``) and ``A``
  the paths' presence rows;
- the blocks: the entries sorted by block, each block's weighted attributes
  times its rows of ``G_stacked^T`` (one product), added into the sketches
  of the records that use it. Records are taken in chunks whose sketches
  stay in the cache while their blocks add into them.

It pays where blocks are wide and rows sparse; where blocks are narrow its
Python step per block costs more than the zeros it skips, and the dense
product runs (:func:`block_plan` decides, from the batch's structure and
``d`` only). It applies where no two entries of a record share an ``H``
block (each block then adds once into a sketch row).

The sum runs in a fixed order (presences, then blocks in layout order, chunk
by chunk), so the same batch always gives the same bits; they differ from
the dense product's in the last places only (the same terms, added in
another order).
"""

import threading
from typing import NamedTuple

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from ._threads import blas_threads_for, one_blas_thread
from ._unroll import Workspace, all_distinct

# Costs of the final products, in the plan's unit (operations of the
# level-wise engine as levelwise_cost prices them), measured with
# benchmarks/calibrate_plan.py on one thread: a nominal multiply-add pair
# of a product costs 0.1-0.4 of them in the dense product (one large
# product) and about 0.5 block by block (small products); building the
# dense ``Z`` costs 20-70 per cell besides its values (zeroing, the
# presences' bincount over every cell); the block-wise loop costs about 17
# per entry and sketch dimension (its sketch row gathered, added and
# scattered) and 50,000-150,000 per block run (a Python step of four NumPy
# calls; the least-squares fit says 50,000, the demo CNN's narrow blocks,
# where the two products cost about the same, 150,000: taken).
DENSE_PRODUCT_SHARE = 0.3
BLOCK_PRODUCT_SHARE = 0.5
DENSE_CELL_FLOPS = 40.0
ROW_UPDATE_FLOPS = 17.0
BLOCK_STEP_FLOPS = 1.5e5
# Sketch values of a chunk of records (float64: 2 MiB, an L2 cache).
_CHUNK_SKETCH_VALUES = 2**18


def chunk_records(sketch_dim):
    """Records per chunk of the block-wise product."""
    return max(1, _CHUNK_SKETCH_VALUES // max(int(sketch_dim), 1))


def dense_product_cost(n_records, n_columns, sketch_dim):
    """Operations of the dense product ``Z @ G_stacked^T`` and of writing ``Z``."""
    return n_records * n_columns * (DENSE_PRODUCT_SHARE * 2.0 * sketch_dim
                                    + DENSE_CELL_FLOPS)


def block_product_cost(n_entries, n_values, n_steps, n_records, n_presence,
                       sketch_dim):
    """Operations of the block-wise product (its arithmetic and handling).

    ``n_values``: the entries' attribute values; ``n_steps``: the (chunk,
    block) runs; ``n_presence``: the presence columns.
    """
    d = float(sketch_dim)
    return (BLOCK_PRODUCT_SHARE * 2 * d * (n_values + n_records * n_presence)
            + ROW_UPDATE_FLOPS * d * n_entries + BLOCK_STEP_FLOPS * n_steps)


class BlockPlan(NamedTuple):
    """Entries in the block-wise product's order, and its runs."""

    order: np.ndarray
    starts: np.ndarray
    items: np.ndarray


def distinct_per_record(record, item, n_records, n_items):
    """Whether no two entries share a record and an item (``item < n_items``)."""
    return all_distinct(record * n_items + item, n_records * n_items)


def n_chunks(n_records, sketch_dim):
    """Chunks of records the block-wise product takes."""
    return -(-n_records // chunk_records(sketch_dim))


def block_plan(batch, unrolled, layout, n_offset, sketch_dim):
    """The block-wise product's plan, or None where the dense one is cheaper.

    ``n_offset``: every entry's ``H`` block offset (``block_offsets``).
    None too where two entries of a record share a block.
    """
    n_entries, n_records = unrolled.obj.size, batch.n_records
    n_items = len(layout.items)
    if not n_entries:
        return None
    item = np.searchsorted(layout.offsets[:-1], n_offset)
    record = batch._record[unrolled.obj]
    if not distinct_per_record(record, item, n_records, n_items):
        return None
    # Runs of (chunk, block); a stable sort of small ints is a radix sort.
    key = (record // chunk_records(sketch_dim)) * n_items + item
    order = np.argsort(key.astype(np.uint16)
                       if n_chunks(n_records, sketch_dim) * n_items <= 2**16
                       else key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    dims = np.array([block.shape[1] for block in batch._attributes])
    n_values = int(dims[batch._module_codes[unrolled.obj]].sum())
    block = block_product_cost(n_entries, n_values, starts.size, n_records,
                               len(unrolled.paths), sketch_dim)
    if block >= dense_product_cost(n_records, layout.n_columns, sketch_dim):
        return None
    return BlockPlan(order, starts, item[order[starts]])


def block_sketch(batch, unrolled, layout, g_rows, dtype, a_offset, plan):
    """Sketches ``Z @ g_rows`` of a numpy batch without forming ``Z``.

    ``a_offset``: every entry's presence column (``block_offsets``);
    ``plan``: from :func:`block_plan`. Returns an array of shape
    (n_records, d) in ``dtype``.
    """
    n_records, d = batch.n_records, g_rows.shape[1]
    obj, weight = unrolled.obj, unrolled.weight
    record = batch._record[obj]
    # The presences: weighted counts per (record, presence column), then
    # one product with the presence rows.
    columns, column_of = np.unique(a_offset, return_inverse=True)
    counts = np.bincount(record * columns.size + column_of.reshape(-1),
                         weights=weight, minlength=n_records * columns.size)
    counts = counts.reshape(n_records, columns.size).astype(dtype, copy=False)
    with blas_threads_for(2.0 * counts.size * d):
        sketches = counts @ g_rows[columns]
    # The blocks, each a run of entries: their weighted attributes, gathered
    # module by module (a block's entries are all of its path's last module).
    order, starts, items = plan
    module = batch._module_codes[obj[order]]
    values, first = weighted_values(batch, obj[order], weight[order], dtype)
    record = record[order]
    stops = np.r_[starts[1:], order.size]
    offsets = layout.offsets[items]
    # Each block adds into its records' sketch rows inside the BLAS call
    # (C = A B + C: one pass over the rows fewer than a product then a sum;
    # 3-8% of the whole sketch on the recorded CNN at d = 64..256).
    gemm = get_blas_funcs("gemm", dtype=sketches.dtype)
    with one_blas_thread():
        for lo, hi, column in zip(starts.tolist(), stops.tolist(),
                                  offsets.tolist()):
            x = values[module[lo]]
            at = first[lo]
            rows = record[lo:hi]
            # In the transposed (Fortran) view: G_b^T x^T + S_rows^T.
            sketches[rows] = gemm(1.0, g_rows[column:column + x.shape[1]].T,
                                  x[at:at + hi - lo].T, beta=1.0,
                                  c=sketches[rows].T, overwrite_c=True).T
    return sketches


def weighted_values(batch, obj, weight, dtype):
    """Every entry's weighted attributes, gathered module by module.

    Returns one array per module, its entries in their order in ``obj``,
    and each entry's row in its module's array. Computed in float64 as the
    dense ``Z`` is, then converted to ``dtype``. Float64 values are written
    into this thread's scratch buffers, valid until its next call.
    """
    module = batch._module_codes[obj]
    rows = batch._rows[obj]
    values, first = [], np.zeros(obj.size, np.intp)
    for code, block in enumerate(batch._attributes):
        mine = np.flatnonzero(module == code)
        first[mine] = np.arange(mine.size)
        shape = (mine.size, block.shape[1])
        if block.dtype == np.float64 and mine.size * shape[1] <= _SCRATCH_VALUES:
            x = np.take(block, rows[mine], axis=0, out=_scratch(code, shape))
        else:
            x = np.take(block, rows[mine], axis=0).astype(np.float64, copy=False)
        x *= weight[mine, None]
        values.append(x.astype(dtype, copy=False))
    return values, first


# Fresh memory costs a page fault every 4 KiB on first touch: on a virtual
# machine that made gathering the values 5-10 times slower than the gather
# itself. Each thread keeps one buffer per module, up to this many values.
_SCRATCH_VALUES = 2**22
_local = threading.local()


def _scratch(code, shape):
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = Workspace()
    return buffers.get(code, shape[0] * shape[1]).reshape(shape)
