"""Unrolling records into per-path coefficients (SPEC sections 3 and 8).

By linearity, a sketch is ``S = sum_P G_P^A z_P + sum_{P,s} G_{P,s}^N u_{P,s}``
over the module paths ``P`` from a root and the slots ``s``. The attribute
part of ``z_P`` is ``sum_s u_{P,s}``, so with ``a`` the presence column of
``G_P^A`` and ``H_{P,s} = G_P^A[:, :dim] + G_{P,s}^N``,

    S = sum_P a_P c_P + sum_{P,s} H_{P,s} u_{P,s},

where ``c_P`` is the path's weighted count. These are the columns the engine
uses: ``dim`` fewer per path than ``[A | N]``, with the same sketch, and
exactly the quantities a sketch can identify (counts per path, attribute sums
per path and slot). This module computes the coefficients ``c`` and ``u`` of a
whole batch with array operations: one pass per DAG level, never a Python step
per object.
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
    paths = []
    # child_path[parent_path + 1, module]: id of the path one module longer.
    child_path = np.full((1, n_modules), -1, np.intp)

    def register(parent_path, child_module):
        nonlocal child_path
        if child_path.shape[0] < len(paths) + 1:
            grown = np.full((len(paths) + 1, n_modules), -1, np.intp)
            grown[:child_path.shape[0]] = child_path
            child_path = grown
        ids = child_path[parent_path + 1, child_module]
        new = ids < 0
        if new.any():
            keys = (parent_path[new] + 1) * n_modules + child_module[new]
            # One Python step per distinct new path, never per entry.
            for key in np.flatnonzero(np.bincount(keys)).tolist():
                parent, mod = divmod(key, n_modules)
                prefix = paths[parent - 1] if parent else ()
                child_path[parent, mod] = len(paths)
                paths.append(prefix + (names[mod],))
            ids = child_path[parent_path + 1, child_module]
        return ids

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
        path = register(path[source], module[kids])
        obj, eff = kids, eff[source] * weight[kids]
        # Merge walks that reach one object by one module path, so that
        # entries never outnumber (path, object) pairs; only shared objects
        # can repeat, so only they pay for the sort.
        repeated = np.bincount(kids, minlength=n_objects)[kids] > 1
        if repeated.any():
            key = path[repeated] * n_objects + kids[repeated]
            unique_keys, inverse = np.unique(key, return_inverse=True)
            merged = np.bincount(inverse.reshape(-1), weights=eff[repeated])
            single = ~repeated
            path = np.concatenate((path[single], unique_keys // n_objects))
            obj = np.concatenate((obj[single], unique_keys % n_objects))
            eff = np.concatenate((eff[single], merged))
    if not levels:
        empty = np.zeros(0, np.intp)
        return Unrolled(paths, empty, empty, np.zeros(0))
    return Unrolled(paths, *(np.concatenate(parts) for parts in zip(*levels)))


def slot_sort_key(slot):
    return json.dumps(slot, separators=(",", ":"))


class ColumnLayout:
    """An ordered set of path blocks: which columns of a stacked ``G`` are whose.

    Items are ``(path, key)``: ``key`` is ``None`` for the presence column
    ``a_P`` (one column: the path's weighted count) and a slot ``s`` for the
    block ``H_{P,s}`` (``dim`` columns: the attribute sum of the path's
    objects in that slot). Items are sorted by path, then presence before the
    slots, so a layout depends only on its set of items.
    """

    def __init__(self, items, module_dims):
        def order(item):
            path, key = item
            return (path, key is not None, "" if key is None else slot_sort_key(key))

        self.items = sorted(set(items), key=order)
        widths = [1 if key is None else module_dims[path[-1]]
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
    if batch.n_records <= chunk_size:
        yield 0, batch.n_records, unrolled
        return
    n_chunks = -(-batch.n_records // chunk_size)
    chunk = batch._record[unrolled.obj] // chunk_size
    # A stable sort of small integers is a radix sort: linear in the entries.
    order = np.argsort(chunk.astype(np.uint16 if n_chunks < 2**16 else np.uint32),
                       kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(chunk, minlength=n_chunks))))
    for k in range(n_chunks):
        take = order[bounds[k]:bounds[k + 1]]
        yield (k * chunk_size, min((k + 1) * chunk_size, batch.n_records),
               Unrolled(unrolled.paths, unrolled.path[take], unrolled.obj[take],
                        unrolled.weight[take]))


class Workspace:
    """Scratch buffers reused across chunks.

    Fresh large arrays cost a page fault per 4 KiB on first touch, which on
    virtual machines doubles the cost of the coefficient build; reusing a few
    cache-sized buffers pays that once.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, name, size, dtype=np.float64):
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(max(size, 1), dtype)
        return buffer[:size]


def block_offsets(batch, unrolled, layout):
    """Column offsets of every entry's presence column and ``H`` block.

    Looked up in a (path x slot) table, so the cost is one gather per entry.
    """
    n_paths, n_slots = len(unrolled.paths), max(len(batch._slot_keys), 1)
    a_table = np.full(n_paths, -1, np.intp)
    n_table = np.full((n_paths, n_slots), -1, np.intp)
    path_id = {path: i for i, path in enumerate(unrolled.paths)}
    slot_code = {key: i for i, key in enumerate(batch._slot_keys)}
    for (path, key), offset in zip(layout.items, layout.offsets[:-1].tolist()):
        p = path_id.get(path)
        if p is None:
            continue
        if key is None:
            a_table[p] = offset
        elif key in slot_code:
            n_table[p, slot_code[key]] = offset
    slot = batch._slot_codes[unrolled.obj]
    return a_table[unrolled.path], n_table[unrolled.path, slot]


def coefficients(batch, unrolled, layout, lo=0, hi=None, workspace=None):
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
    workspace : Workspace, default=None
        Scratch buffers to reuse.

    Returns
    -------
    Z : ndarray of shape (hi - lo, layout.n_columns), float64
    """
    hi = batch.n_records if hi is None else hi
    n_rows = hi - lo
    obj, eff = unrolled.obj, unrolled.weight
    a_offset, n_offset = block_offsets(batch, unrolled, layout)
    row_start = (batch._record[obj] - lo) * layout.n_columns
    a_start, n_start = row_start + a_offset, row_start + n_offset
    module = batch._module_codes[obj]
    dims = np.array([block.shape[1] for block in batch._attributes], np.intp)
    # One flat (index, value) buffer for every module, then a single bincount.
    # Per module it holds the attributes (n_entries x dim, contiguous), then
    # the presences.
    total = int((dims[module] + 1).sum())
    workspace = Workspace() if workspace is None else workspace
    flat_index = workspace.get("index", total, np.intp)
    values = workspace.get("values", total)
    position = 0
    for code, block in enumerate(batch._attributes):
        members = np.flatnonzero(module == code)
        if not members.size:
            continue
        dim, count = block.shape[1], members.size
        attribute_part = slice(position, position + dim * count)
        presence = slice(attribute_part.stop, attribute_part.stop + count)
        position = presence.stop
        w = eff[members]
        # (np.take gathers rows several times faster than fancy indexing)
        attributes = np.take(block, np.take(batch._rows, obj[members]), axis=0,
                             out=workspace.get("gather", count * dim,
                                               block.dtype).reshape(count, dim))
        np.multiply(attributes, w[:, None],
                    out=values[attribute_part].reshape(count, dim))
        values[presence] = w
        np.add(n_start[members, None], np.arange(dim),
               out=flat_index[attribute_part].reshape(count, dim))
        flat_index[presence] = a_start[members]
    z = np.bincount(flat_index, weights=values, minlength=n_rows * layout.n_columns)
    return z.reshape(n_rows, layout.n_columns)
