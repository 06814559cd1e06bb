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

from ._block_product import (
    block_product_cost,
    dense_product_cost,
    distinct_per_record,
    n_chunks,
)
from ._unroll import distinct_values, unroll

# Costs of the unrolled engine's array work, in floating-point operations of
# the level-wise engine as priced by levelwise_cost (10-20 GFLOP/s of them on
# one core of a 2-core x86 machine). Measured with
# benchmarks/calibrate_plan.py on two recorded CNNs at d = 32..256:
# unrolling costs 900-1,500 per (object, path) entry; gathering and weighting
# a coefficient value 25-45 where no two entries of a record share an
# attribute block (the values are written row by row, or multiplied block
# by block). Where they share one (trees whose objects repeat a slot), every
# value is added by a bincount: about 300 in all, measured on a batch of
# trees, so the difference is charged once the entries are known.
ENTRY_FLOPS = 1500.0
COEFFICIENT_FLOPS = 40.0
SHARED_BLOCK_VALUE_FLOPS = 260.0
PATH_MODULE_FLOPS = 200.0
# Every call handles each distinct path as a tuple of module names (layout,
# block look-ups, hashing): about 5 us per module of every path, measured on
# a chain of 2,000 objects (2 million path modules: 11 s). Charged while
# unrolling, shared by the records that reach a path together, so that a
# lattice's capped unrolling stops before registering more paths than its
# level-wise cost can pay for (a coefficient value became 10 times cheaper
# to price; without it, planning a lattice of 24 layers took 3-4 times the
# level-wise engine's time).
PATH_KEY_FLOPS = 1e5
# Python overhead of one path block (cache look-ups, small products).
BLOCK_OVERHEAD_FLOPS = 2e5
# Sketches a path block is expected to serve once built, when the blocks fit
# the cache: blocks are built once per sketcher, not once per call, so a
# batch of one record must not pay for them alone (it would then never get
# them, and every later call would run level-wise, up to 100x slower on
# trees at d = 4096). The price: a first call can cost up to this many times
# the level-wise one. Blocks that cannot stay cached are charged in full.
BLOCK_REUSE = 64
# The level-wise engine's work per object besides its products (gathering
# its attributes and inputs, writing its sketch): about 0.7 us, measured on
# a recorded CNN's records (9,500 objects, d = 32..128, where it ran at
# 11-12 GFLOP/s with this term and 4-10 without). It decides small d: at
# d = 32 the products are cheaper than the per-object handling.
LEVELWISE_OBJECT_FLOPS = 8000.0


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
    #: Whether the final product was priced cheaper block by block (None:
    #: not priced for the whole batch).
    blockwise: bool | None = None


def levelwise_cost(batch, sketch_dim, wrapper):
    """Operations of the level-wise engine, per record."""
    d = float(sketch_dim)
    dims = np.array([block.shape[1] for block in batch._attributes] or [0], float)
    m = dims[batch._module_codes]
    n_inputs = np.bincount(batch._parent, minlength=batch.n_objects)
    per_object = (2 * d * (2 * m + 1)             # A_M [x; 1] and N_{M,s} x
                  + 2 * d * d * (n_inputs > 0)    # C_M on the inputs' sum
                  + 2 * d * n_inputs              # the inputs' weighted sum
                  + (2 * d * d if wrapper != "none" else 0.0)
                  + LEVELWISE_OBJECT_FLOPS)
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
    entry_cost = ENTRY_FLOPS + COEFFICIENT_FLOPS * (dims[batch._module_codes] + 1)
    budget = np.full(n_records, np.inf) if force == "unrolled" else lw_cost
    unrolled = unroll(batch, budget=budget, entry_cost=entry_cost,
                      depth_cost=PATH_MODULE_FLOPS, path_cost=PATH_KEY_FLOPS)
    over, cost = unrolled.over_budget, unrolled.cost
    record = batch._record[unrolled.obj]
    n_slots = max(len(batch._slot_keys), 1)
    item = unrolled.path * n_slots + batch._slot_codes[unrolled.obj]
    distinct = distinct_per_record(record, item, n_records,
                                   len(unrolled.paths) * n_slots)
    if not distinct:
        cost = cost + np.bincount(record, weights=SHARED_BLOCK_VALUE_FLOPS * (
            dims[batch._module_codes[unrolled.obj]] + 1), minlength=n_records)
    path_length = np.array([len(p) for p in unrolled.paths] or [0], float)
    # Column blocks: each distinct (path, slot) is a chain of products with
    # d x d matrices, one per module of the path at most (fewer when its
    # suffixes are built for other paths), shared by the records that use
    # it; the final product costs 2 d per record and column (dense) or per
    # value (block by block).
    wraps = 2.0 if wrapper != "none" else 1.0
    if not over.any():
        # The whole batch unrolled, priced at once (no per-record pass): the
        # usual case for trees and layered networks.
        name_dim = dict(zip(batch._module_names, dims.tolist()))
        path_dim = np.array([name_dim[p[-1]] for p in unrolled.paths] or [0.0])
        used_items = distinct_values(item, len(unrolled.paths) * n_slots)
        chains = _chain_widths(unrolled, used_items, n_slots, dims)
        reuse = _reuse(chains, d, cache_bytes)
        product, blockwise = _product_cost(batch, unrolled, distinct, dims,
                                           path_dim, used_items, n_slots, d)
        total = (cost.sum()
                 + (2 * d * d * wraps * chains + BLOCK_OVERHEAD_FLOPS).sum() / reuse
                 + product)
        if total <= lw_cost.sum():
            return Plan(np.zeros(n_records, bool), unrolled, cost, lw_cost,
                        blockwise)
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
    # Each record's share of the chains: its blocks' lengths (an upper bound
    # of their chains), scaled so that the shares add up to the exact count.
    chains = _chain_widths(unrolled, np.unique(item), n_slots, dims)
    reuse = _reuse(chains, d, cache_bytes)
    exact = (2 * d * d * wraps * chains + BLOCK_OVERHEAD_FLOPS).sum()
    bound = sum(((2 * d * d * wraps * width + BLOCK_OVERHEAD_FLOPS) * steps
                 / n_users).sum() for _, width, steps, n_users in uses)
    scale = exact / max(bound, 1.0) / reuse
    # (The path keys are in ``cost`` already: unrolling charged them.)
    for block_record, block_width, steps, n_users in uses:
        build = ((2 * block_width * d * d * wraps + BLOCK_OVERHEAD_FLOPS) * steps
                 / n_users * scale)
        cost += np.bincount(block_record, weights=build + 2 * d * block_width,
                            minlength=n_records)
    cost[over] = np.inf
    if force == "unrolled":
        return Plan(np.zeros(n_records, bool), unrolled, cost, lw_cost)
    levelwise = cost > lw_cost
    return Plan(levelwise, None if levelwise.any() else unrolled, cost, lw_cost)


def _product_cost(batch, unrolled, distinct, dims, path_dim, used_items, n_slots,
                  sketch_dim):
    """Operations of the final product, dense or block by block (the cheaper),
    and whether block by block is the cheaper.

    The columns: a presence column per path, a block of its last module's
    dimension per (path, slot) item used. Block by block only where no two
    entries of a record share an item (``distinct``); ``dims``: each
    module's attribute dimension.
    """
    n_records, n_paths = batch.n_records, len(unrolled.paths)
    n_columns = n_paths + path_dim[used_items // n_slots].sum()
    dense = dense_product_cost(n_records, n_columns, sketch_dim)
    if not distinct:
        return dense, False
    n_values = dims[batch._module_codes[unrolled.obj]].sum()
    n_steps = min(unrolled.obj.size,
                  used_items.size * n_chunks(n_records, sketch_dim))
    block = block_product_cost(unrolled.obj.size, n_values, n_steps, n_records,
                               n_paths, sketch_dim)
    return min(dense, block), bool(block < dense)


def _reuse(chain_rows, sketch_dim, cache_bytes):
    """How many sketches a block is expected to serve: see BLOCK_REUSE.

    The chains (float64 rows of ``d``) must fit ``cache_bytes``.
    """
    return BLOCK_REUSE if 8.0 * sketch_dim * chain_rows.sum() <= cache_bytes else 1.0


# Tables of (trie node, slot) keys up to this size replace sorted sets.
_TABLE_KEYS = 2**20


def _chain_widths(unrolled, items, n_slots, dims):
    """Rows of every distinct chain the blocks of ``items`` need."""
    return _chain_rows(unrolled.path_parent, unrolled.path_module,
                       np.asarray(items, np.intp), n_slots, dims)


def _chain_rows(path_parent, path_module, items, n_slots, dims):
    """Rows of every distinct chain the blocks of ``items`` need.

    A block is a chain of products on top of its suffix's chain, so the
    chains to build are all suffixes of the blocks' paths, once each: a
    chain of one module repeated ``D`` times needs ``D`` chains, not
    ``D^2 / 2``. Counted on a trie of module sequences with suffix links
    (each sequence's suffix is its first module dropped), in ``O(paths)``.

    ``items``: used (path, slot) codes ``path * n_slots + slot``. Returns
    the row counts (``dim + 1`` for presence chains, ``dim`` for slot
    chains) of every distinct chain.
    """
    trie, suffix, last = {}, [0], [-1]

    def child(node, module):
        # Create the sequence node+module and, first, the suffixes it links to.
        pending = []
        while (node, module) not in trie:
            pending.append(node)
            if node == 0:
                break
            node = suffix[node]
        link = trie.get((node, module), 0)
        for parent in reversed(pending):
            trie[(parent, module)] = len(suffix)
            suffix.append(0 if parent == 0 else link)
            last.append(module)
            link = len(suffix) - 1
        return link

    node_of = np.zeros(path_parent.size, np.intp)
    for p, (parent, module) in enumerate(zip(path_parent.tolist(),
                                             path_module.tolist())):
        node_of[p] = child(node_of[parent] if parent >= 0 else 0, module)
    suffix, last = np.array(suffix), np.array(last)
    # Presence chains: every sequence in the trie is a suffix of a path.
    rows = [dims[last[1:]] + 1]
    # Slot chains: the slot stays, the sequence walks its suffix links.
    # Keys (node, slot) seen are marked in a table of them all when it is
    # small (a few dozen NumPy calls fewer), else kept as a sorted set.
    n_keys = suffix.size * n_slots
    table = n_keys <= _TABLE_KEYS
    keys = distinct_values(node_of[items // n_slots] * n_slots + items % n_slots,
                           n_keys)
    if table:
        seen = np.zeros(n_keys, bool)
        seen[keys] = True
    else:
        seen = keys
    while keys.size:
        nodes = keys // n_slots
        rows.append(dims[last[nodes]])
        linked = suffix[nodes]
        linked_keys = linked * n_slots + keys % n_slots
        keys = distinct_values(linked_keys[linked > 0], n_keys)
        if table:
            keys = keys[~seen[keys]]
            seen[keys] = True
        else:
            keys = keys[~np.isin(keys, seen)]
            seen = np.union1d(seen, keys)
    return np.concatenate(rows)
