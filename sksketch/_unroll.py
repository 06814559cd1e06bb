"""Unrolling records into per-path coefficients (SPEC sections 3 and 8).

By linearity, a sketch is ``S = sum_P G_P^A z_P + sum_{P,slot} G_{P,slot}^N u_{P,slot}``
where ``P`` runs over the module paths from a root. This module computes the
coefficients ``z`` and ``u`` of a whole batch with array operations: one pass
per DAG level, never a Python step per object.
"""

import json
from typing import NamedTuple

import numpy as np

from ._dag import children_csr, expand


class Unrolled(NamedTuple):
    """Every (module path, object) pair reachable from a root.

    Attributes
    ----------
    paths : list of tuple of str
        Module names from the root, for each local path id.
    path : ndarray of int
        Local path id of each entry.
    obj : ndarray of int
        Object index (into the batch) of each entry.
    weight : ndarray of float64
        Effective weight of each entry: over every walk from a root with
        that module path, the product of the weights along it, summed.
    """

    paths: list
    path: np.ndarray
    obj: np.ndarray
    weight: np.ndarray


def unroll(batch, max_depth=None):
    """Unroll a :class:`RecordBatch` into path entries, down to ``max_depth``.

    ``max_depth`` counts modules on a path (1: roots only); ``None`` follows
    every path to its leaf.
    """
    n_objects = batch.n_objects
    module = batch._module_codes
    weight = batch._weight.astype(np.float64)
    names = batch._module_names
    n_modules = max(len(names), 1)
    indptr, indices = children_csr(n_objects, batch._parent, batch._child)
    registry, paths = {}, []

    def register(parent_path, child_module):
        # One Python step per distinct new path, not per entry.
        keys = (parent_path + 1) * n_modules + child_module
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        ids = np.empty(unique_keys.size, np.intp)
        for i, key in enumerate(unique_keys.tolist()):
            parent, mod = divmod(key, n_modules)
            path_id = registry.get((parent - 1, mod))
            if path_id is None:
                prefix = paths[parent - 1] if parent else ()
                path_id = registry[(parent - 1, mod)] = len(paths)
                paths.append(prefix + (names[mod],))
            ids[i] = path_id
        return ids[inverse.reshape(-1)]

    obj = batch._roots
    path = register(np.full(obj.size, -1, np.intp), module[obj])
    eff = weight[obj]
    levels = []
    depth = 0
    while obj.size and (max_depth is None or depth < max_depth):
        levels.append((path, obj, eff))
        depth += 1
        source, kids = expand(indptr, indices, obj)
        if not kids.size:
            break
        child_path = register(path[source], module[kids])
        # Merge walks that reach one object by the same module path.
        key = child_path * n_objects + kids
        unique_keys, inverse = np.unique(key, return_inverse=True)
        eff = np.bincount(inverse.reshape(-1), weights=eff[source] * weight[kids])
        path, obj = unique_keys // n_objects, unique_keys % n_objects
    if not levels:
        empty = np.zeros(0, np.intp)
        return Unrolled(paths, empty, empty, np.zeros(0))
    return Unrolled(paths, *(np.concatenate(parts) for parts in zip(*levels)))


def slot_sort_key(slot):
    return json.dumps(slot, separators=(",", ":"))


class ColumnLayout:
    """An ordered set of path blocks: which columns of a stacked ``G`` are whose.

    Items are ``(path, key)``: ``key`` is ``None`` for the module-subspace
    block ``G_P^A`` (``dim + 1`` columns, presence last) and a slot for the node
    block ``G_{P,slot}^N`` (``dim`` columns). Items are sorted by path, then
    ``A`` before the slots, so a layout depends only on its set of items.
    """

    def __init__(self, items, module_dims):
        def order(item):
            path, key = item
            return (path, key is not None, "" if key is None else slot_sort_key(key))

        self.items = sorted(set(items), key=order)
        widths = [module_dims[path[-1]] + (key is None)
                  for path, key in self.items]
        self.offsets = np.concatenate(([0], np.cumsum(widths, dtype=np.intp)))
        self.index = {item: i for i, item in enumerate(self.items)}

    @property
    def n_columns(self):
        return int(self.offsets[-1])

    def __len__(self):
        return len(self.items)

    def columns(self, item):
        i = self.index[item]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @classmethod
    def from_unrolled(cls, batch, unrolled):
        """The layout of every block the entries touch."""
        slot = batch._slot_codes[unrolled.obj]
        n_slots = max(len(batch._slot_keys), 1)
        pairs = np.unique(unrolled.path * n_slots + slot)
        items = [(p, None) for p in unrolled.paths]
        items += [(unrolled.paths[k // n_slots], batch._slot_keys[k % n_slots])
                  for k in pairs.tolist()]
        return cls(items, batch.module_dims)


def chunks_by_record(batch, unrolled, chunk_size):
    """Split the entries into runs of at most ``chunk_size`` whole records.

    Yields ``(lo, hi, entries)``: ``entries`` are those of records ``lo..hi-1``.
    """
    record = batch._record[unrolled.obj]
    order = np.argsort(record, kind="stable")
    record = record[order]
    for lo in range(0, max(batch.n_records, 1), chunk_size):
        hi = min(lo + chunk_size, batch.n_records)
        start, stop = np.searchsorted(record, [lo, hi])
        take = order[start:stop]
        yield lo, hi, Unrolled(unrolled.paths, unrolled.path[take],
                               unrolled.obj[take], unrolled.weight[take])


def coefficients(batch, unrolled, layout, lo=0, hi=None):
    """Dense coefficient matrix ``Z`` with ``S = Z @ G_stacked^T``.

    Parameters
    ----------
    batch : RecordBatch
    unrolled : Unrolled
        Entries of records ``lo..hi-1`` of ``batch`` only.
    layout : ColumnLayout
        Must hold every block that the entries touch.
    lo, hi : int
        The range of records; row ``i`` of ``Z`` is record ``lo + i``.

    Returns
    -------
    Z : ndarray of shape (hi - lo, layout.n_columns), float64
    """
    hi = batch.n_records if hi is None else hi
    path, obj, eff = unrolled.path, unrolled.obj, unrolled.weight
    row_of = batch._record[obj] - lo
    n_columns = layout.n_columns
    # Column offsets, looked up once per distinct path / (path, slot).
    a_offset = np.array([layout.offsets[layout.index[(p, None)]]
                         if (p, None) in layout.index else -1
                         for p in unrolled.paths], dtype=np.intp)
    n_slots = max(len(batch._slot_keys), 1)
    slot = batch._slot_codes[obj]
    pair, pair_inverse = np.unique(path * n_slots + slot, return_inverse=True)
    n_offset = np.array(
        [layout.offsets[layout.index[(unrolled.paths[k // n_slots],
                                      batch._slot_keys[k % n_slots])]]
         for k in pair.tolist()], dtype=np.intp)[pair_inverse.reshape(-1)]

    flat_index, values = [], []
    module = batch._module_codes[obj]
    for code, block in enumerate(batch._attributes):
        members = np.flatnonzero(module == code)
        if not members.size:
            continue
        dim = block.shape[1]
        w = eff[members][:, None]
        x = block[batch._rows[obj[members]]].astype(np.float64) * w
        base = row_of[members][:, None] * n_columns
        a_cols = a_offset[path[members]][:, None] + np.arange(dim + 1)
        n_cols = n_offset[members][:, None] + np.arange(dim)
        flat_index += [(base + a_cols).ravel(), (base + n_cols).ravel()]
        values += [np.hstack((x, w)).ravel(), x.ravel()]
    size = (hi - lo) * n_columns
    if not flat_index:
        return np.zeros((hi - lo, n_columns))
    z = np.bincount(np.concatenate(flat_index), weights=np.concatenate(values),
                    minlength=size)
    return z.reshape(hi - lo, n_columns)
