"""Choosing, per record, between the unrolled and the level-wise engine.

Both engines compute the same sketch (to float rounding). Their costs differ
by orders of magnitude depending on the record's shape:

- unrolled (``_unroll`` + ``_paths``): one coefficient per (object, module
  path reaching it), one column block per distinct (path, slot), each block
  one ``d x d`` product away from its suffix's. Cheap on trees and layered
  networks whose objects are reached by few module paths; exponential on a
  lattice (every object consuming every object below: ``2^L`` paths) and
  quadratic on long chains (paths of every length).
- level-wise (``_levelwise``): ``O(d^2)`` per object, whatever the shape.

The plan prices both in floating-point operations and takes the cheaper.
Counting the unrolled cost is itself an unrolling, capped: a record is
dropped the moment its coefficient work alone passes its level-wise cost, so
planning never costs more than a small multiple of the cheaper engine.

Costs depend only on the batch's structure and ``d`` -- never on what is
cached -- so the same records always get the same plan and the same bits.
"""

from typing import NamedTuple

import numpy as np

from ._unroll import unroll

# Cost of one coefficient value of the unrolled build (a gather, a multiply
# and a scattered add), and of one module of a path's key (tuples built and
# hashed in Python), in floating-point operations of a matrix product:
# measured on 2-core x86 machines, where a product runs near 10-30 GFLOP/s
# and the coefficient build near 0.2 G values/s (benchmarks/bench_shapes.py).
COEFFICIENT_FLOPS = 100.0
PATH_MODULE_FLOPS = 200.0
# Python overhead of one path block (cache look-ups, small products).
BLOCK_OVERHEAD_FLOPS = 2e5
# Sketches a path block is expected to serve once built, when the blocks fit
# the cache: blocks are built once per sketcher, not once per call, so a
# batch of one record must not pay for them alone (it would then never get
# them, and every later call would run level-wise, up to 100x slower on
# trees at d = 4096). The price: a first call can cost up to this many times
# the level-wise one. Blocks that cannot stay cached are charged in full.
BLOCK_REUSE = 64


class Plan(NamedTuple):
    """Which records each engine sketches.

    Attributes
    ----------
    levelwise : ndarray of bool of shape (n_records,)
        True for the records the level-wise engine takes.
    unrolled : Unrolled or None
        The unrolled entries of the other records, when every record is
        unrolled (so the batch need not be unrolled again).
    unrolled_cost, levelwise_cost : ndarray of shape (n_records,)
        The estimates, in floating-point operations (``inf`` where
        unrolling was cut short).
    """

    levelwise: np.ndarray
    unrolled: object
    unrolled_cost: np.ndarray
    levelwise_cost: np.ndarray


def levelwise_cost(batch, sketch_dim, wrapper):
    """Operations of the level-wise engine, per record."""
    d = float(sketch_dim)
    dims = np.array([block.shape[1] for block in batch._attributes] or [0], float)
    m = dims[batch._module_codes]
    n_inputs = np.bincount(batch._parent, minlength=batch.n_objects)
    per_object = (2 * d * (2 * m + 1)             # A_M [x; 1] and N_{M,s} x
                  + 2 * d * d * (n_inputs > 0)    # C_M on the inputs' sum
                  + 2 * d * n_inputs              # the inputs' weighted sum
                  + (2 * d * d if wrapper != "none" else 0.0))
    return np.bincount(batch._record, weights=per_object,
                       minlength=batch.n_records)


def plan_sketch(batch, sketch_dim, wrapper, *, cache_bytes=np.inf, force=None):
    """Price both engines for every record of a validated batch; pick the cheaper.

    ``cache_bytes`` bounds the cache the path blocks would live in (blocks
    that fit are expected to be reused, see ``BLOCK_REUSE``). ``force``
    ("unrolled" or "levelwise") skips the pricing, for tests and benchmarks.
    """
    n_records = batch.n_records
    lw_cost = levelwise_cost(batch, sketch_dim, wrapper)
    if force == "levelwise":
        return Plan(np.ones(n_records, bool), None, np.full(n_records, np.inf),
                    lw_cost)
    d = float(sketch_dim)
    dims = np.array([block.shape[1] for block in batch._attributes] or [0], float)
    entry_cost = COEFFICIENT_FLOPS * (dims[batch._module_codes] + 1)
    budget = np.full(n_records, np.inf) if force == "unrolled" else lw_cost
    unrolled = unroll(batch, budget=budget, entry_cost=entry_cost,
                      depth_cost=PATH_MODULE_FLOPS)
    over, cost = unrolled.over_budget, unrolled.cost
    record = batch._record[unrolled.obj]
    path_length = np.array([len(p) for p in unrolled.paths] or [0], float)
    # Column blocks: each distinct (path, slot) is a chain of products with
    # d x d matrices, one per module of the path at most (fewer when its
    # suffixes are built for other paths), shared by the records that use
    # it; the final product costs 2 d per record and column.
    n_slots = max(len(batch._slot_keys), 1)
    wraps = 2.0 if wrapper != "none" else 1.0
    item = unrolled.path * n_slots + batch._slot_codes[unrolled.obj]
    if not over.any():
        # The whole batch unrolled, priced at once (no per-record pass): the
        # usual case for trees and layered networks.
        name_dim = dict(zip(batch._module_names, dims.tolist()))
        path_dim = np.array([name_dim[p[-1]] for p in unrolled.paths] or [0.0])
        used_paths = _distinct(unrolled.path, len(unrolled.paths))
        used_items = _distinct(item, len(unrolled.paths) * n_slots)
        block_paths = np.concatenate((used_paths, used_items // n_slots))
        widths = np.concatenate((path_dim[used_paths] + 1,
                                 path_dim[used_items // n_slots]))
        steps = path_length[block_paths]
        reuse = _reuse(widths, steps, d, cache_bytes)
        total = (cost.sum()
                 + ((2 * d * d * wraps * widths + BLOCK_OVERHEAD_FLOPS)
                    * steps).sum() / reuse
                 + 2 * d * n_records * widths.sum())
        if total <= lw_cost.sum():
            return Plan(np.zeros(n_records, bool), unrolled, cost, lw_cost)
    entry_dim = dims[batch._module_codes[unrolled.obj]]
    uses = []
    for key, width in ((unrolled.path, entry_dim + 1), (item, entry_dim)):
        # One row per (block, record) using it; a block's width is its
        # path's last module's dimension, the same for all its entries.
        _, first = np.unique(key * n_records + record, return_index=True)
        _, users = np.unique(key[first], return_inverse=True)
        users = users.reshape(-1)
        uses.append((record[first], width[first],
                     path_length[unrolled.path[first]],
                     np.bincount(users)[users]))
    reuse = _reuse(np.concatenate([u[1] for u in uses]),
                   np.concatenate([u[2] for u in uses]), d, cache_bytes,
                   weights=np.concatenate([1 / u[3] for u in uses]))
    for block_record, block_width, steps, n_users in uses:
        build = ((2 * block_width * d * d * wraps + BLOCK_OVERHEAD_FLOPS) * steps
                 / (n_users * reuse))
        cost += np.bincount(block_record, weights=build + 2 * d * block_width,
                            minlength=n_records)
    cost[over] = np.inf
    if force == "unrolled":
        return Plan(np.zeros(n_records, bool), unrolled, cost, lw_cost)
    levelwise = cost > lw_cost
    return Plan(levelwise, None if levelwise.any() else unrolled, cost, lw_cost)


def _distinct(values, n_values):
    """The distinct values of an int array in ``[0, n_values)``, sorted."""
    if n_values <= 4 * values.size:
        return np.flatnonzero(np.bincount(values, minlength=n_values))
    return np.unique(values)


def _reuse(widths, steps, sketch_dim, cache_bytes, weights=None):
    """How many sketches a block is expected to serve: see BLOCK_REUSE.

    The cached chains of the blocks (every suffix of their paths, float64)
    must fit ``cache_bytes``; ``weights`` counts each block that many times
    (a block listed once per record using it).
    """
    n_bytes = 8.0 * sketch_dim * np.dot(widths * steps,
                                        np.ones_like(widths) if weights is None
                                        else weights)
    return BLOCK_REUSE if n_bytes <= cache_bytes else 1.0
