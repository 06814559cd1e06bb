"""Unrolling records into per-path coefficients (docs: The mathematics).

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
    #: Records left out for exceeding their budget (None without a budget).
    over_budget: np.ndarray | None = None
    #: Cost counted per record (None without a budget).
    cost: np.ndarray | None = None
    #: For each path: the id of the path one module shorter (-1 for a root's
    #: module alone), and the code of its last module.
    path_parent: np.ndarray | None = None
    path_module: np.ndarray | None = None


def unroll(batch, max_depth=None, *, budget=None, entry_cost=None, depth_cost=0.0,
           path_cost=0.0):
    """Unroll a :class:`RecordBatch` into path entries, down to ``max_depth``.

    ``max_depth`` counts modules on a path (1: roots only); ``None`` follows
    every path to its leaf.

    With ``budget`` (one float per record), unrolling is also a capped count:
    every entry costs ``entry_cost[obj] + depth_cost * depth`` (the coefficient
    work, plus the path's length for its key), and a record whose running cost passes
    its budget is dropped on the spot, flagged in ``over_budget`` and left
    with no entries. Each new path also costs ``path_cost`` per module (its
    key's handling), shared by the entries that create it together: a path
    a thousand records reach costs each little, a lattice's paths each
    cost their one record in full. Merged walks mean a record costs at most
    its number of (object, module path) pairs times its largest fan-out
    before it is dropped, however many paths it holds.
    """
    n_objects = batch.n_objects
    module = batch._module_codes
    weight = batch._weight.astype(np.float64)
    names = batch._module_names
    n_modules = max(len(names), 1)
    indptr, indices = children_csr(n_objects, batch._parent, batch._child)
    paths = []
    trie = []  # (parent path, last module) of every path
    # child_path[parent_path + 1, module]: id of the path one module longer.
    child_path = np.full((1, n_modules), -1, np.intp)

    def register(parent_path, child_module):
        nonlocal child_path
        # Row-major codes into child_path: growing it keeps them valid.
        code = (parent_path + 1) * n_modules + child_module
        ids = np.take(child_path.reshape(-1), code)
        new = ids < 0
        if new.any():
            keys = distinct_values(code[new], child_path.size)
            if child_path.shape[0] < len(paths) + keys.size + 1:
                # Grown geometrically: a chain adds one path per level.
                grown = np.full((2 * (len(paths) + keys.size) + 1, n_modules), -1,
                                np.intp)
                grown[:child_path.shape[0]] = child_path
                child_path = grown
            # One Python step per distinct new path, never per entry.
            for key in keys.tolist():
                parent, mod = divmod(key, n_modules)
                prefix = paths[parent - 1] if parent else ()
                child_path[parent, mod] = len(paths)
                paths.append(prefix + (names[mod],))
                trie.append((parent - 1, mod))
            ids = np.take(child_path.reshape(-1), code)
        return ids

    obj = batch._roots
    over = spent = None
    if budget is not None:
        over = np.zeros(batch.n_records, bool)
        spent = np.zeros(batch.n_records)
        record_of = batch._record
    path = np.full(obj.size, -1, np.intp)
    eff = weight[obj]
    levels = []
    n_paths = 0
    depth = 0
    while obj.size and (max_depth is None or depth < max_depth):
        if budget is not None:
            records = record_of[obj]
            spent += np.bincount(records, weights=entry_cost[obj] + depth_cost * depth,
                                 minlength=batch.n_records)
            over |= spent > budget
            keep = ~over[records]
            if not keep.all():
                path, obj, eff = path[keep], obj[keep], eff[keep]
        # Register paths only now, so that a dropped record never builds the
        # keys of paths it alone would have.
        path = register(path, module[obj])
        if budget is not None and path_cost and len(paths) > n_paths:
            # The entries reaching a path new in this call share its cost.
            new = np.flatnonzero(path >= n_paths)
            local = path[new] - n_paths
            counts = np.bincount(local, minlength=len(paths) - n_paths)
            spent += np.bincount(record_of[obj[new]], minlength=batch.n_records,
                                 weights=path_cost * (depth + 1) / counts[local])
        n_paths = len(paths)
        levels.append((path, obj, eff))
        depth += 1
        source, kids = expand(indptr, indices, obj)
        if not kids.size:
            break
        path, obj, eff = path[source], kids, eff[source] * weight[kids]
        # Merge walks that reach one object by one module path, so that
        # entries never outnumber (path, object) pairs; only shared objects
        # can repeat, so only they pay for the sort. Counting is a bincount
        # over all objects when the level is wide, a sort of the level when
        # it is narrow: a deep batch must not pay n_objects per level.
        if 8 * kids.size >= n_objects:
            repeated = np.bincount(kids, minlength=n_objects)[kids] > 1
        else:
            _, first, counts = np.unique(kids, return_inverse=True,
                                         return_counts=True)
            repeated = counts[first.reshape(-1)] > 1
        if repeated.any():
            # Walks merge by (parent path, module, object): the module is the
            # object's own, so (parent path, object) identifies the new path.
            key = path[repeated] * n_objects + kids[repeated]
            unique_keys, merged = _merge_by_key(key, eff[repeated],
                                                len(paths) * n_objects)
            single = ~repeated
            path = np.concatenate((path[single], unique_keys // n_objects))
            obj = np.concatenate((obj[single], unique_keys % n_objects))
            eff = np.concatenate((eff[single], merged))
    path_parent, path_module = (np.array(side, np.intp).reshape(-1) for side in
                                (zip(*trie) if trie else ((), ())))
    if not levels:
        empty = np.zeros(0, np.intp)
        return Unrolled(paths, empty, empty, np.zeros(0), over, spent,
                        path_parent, path_module)
    path, obj, eff = (np.concatenate(parts) for parts in zip(*levels))
    if over is not None:
        over |= spent > budget
    if over is not None and over.any():
        keep = ~over[batch._record[obj]]
        path, obj, eff = path[keep], obj[keep], eff[keep]
    return Unrolled(paths, path, obj, eff, over, spent, path_parent, path_module)


def distinct_values(values, n_values):
    """The distinct values of an int array in ``[0, n_values)``, sorted.

    Counting (a bincount) where the range is small against the values,
    several times faster than the sort of ``np.unique``.
    """
    if n_values <= 4 * values.size:
        return np.flatnonzero(np.bincount(values, minlength=n_values))
    return np.unique(values)


def _merge_by_key(key, weight, n_keys):
    """The distinct keys, sorted, and the weights summed per key.

    Keys lie in ``[0, n_keys)``. When that range is small against the keys,
    counting (two bincounts) replaces the sort of ``np.unique``, several
    times faster; both add each key's weights in their order in ``key``, so
    the sums are the same to the bit.
    """
    if n_keys <= 4 * key.size:
        sums = np.bincount(key, weights=weight, minlength=n_keys)
        unique_keys = np.flatnonzero(np.bincount(key, minlength=n_keys))
        return unique_keys, sums[unique_keys]
    unique_keys, inverse = np.unique(key, return_inverse=True)
    return unique_keys, np.bincount(inverse.reshape(-1), weights=weight)


def slot_sort_key(slot):
    if type(slot) is int:  # the common case: what json.dumps gives, faster
        return str(slot)
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

    def slots_by_path(self):
        """``{path: [slot, ...]}`` in layout order (paths sorted)."""
        slots = {}
        for path, key in self.items:
            slots.setdefault(path, [])
            if key is not None:
                slots[path].append(key)
        return slots

    def columns(self, item):
        i = self.index[item]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @classmethod
    def from_unrolled(cls, batch, unrolled):
        """The layout of every block the entries touch.

        Ordered with array sorts, not a Python sort of the items: a
        recorder's batches of 500 images touch about 600 blocks, where the
        item sort alone cost about as much as their coefficients.
        """
        n_slots = max(len(batch._slot_keys), 1)
        pair = unrolled.path * n_slots + batch._slot_codes[unrolled.obj]
        n_pairs = len(unrolled.paths) * n_slots
        pairs = distinct_values(pair, n_pairs)
        paths, slot_keys = tuple(unrolled.paths), batch._slot_keys
        path_code = np.concatenate((np.arange(len(paths)), pairs // n_slots))
        slot_code = np.concatenate((np.full(len(paths), -1), pairs % n_slots))
        # The order of __init__: by path, presence first, then by slot key.
        path_rank = _ranks(paths)
        slot_rank = np.append(_ranks([slot_sort_key(k) for k in slot_keys]), -1)
        order = np.lexsort((slot_rank[slot_code], slot_code >= 0,
                            path_rank[path_code]))
        path_code, slot_code = path_code[order], slot_code[order]
        dims = batch.module_dims
        path_dim = np.array([dims[path[-1]] for path in paths] or [0], np.intp)
        widths = np.where(slot_code >= 0, path_dim[path_code], 1)
        layout = cls.__new__(cls)
        keys = (None, *slot_keys)
        layout.items = [(paths[p], keys[k + 1])
                        for p, k in zip(path_code.tolist(), slot_code.tolist())]
        layout.offsets = np.concatenate(([0], np.cumsum(widths, dtype=np.intp)))
        layout.index = dict(zip(layout.items, range(len(layout.items))))
        # The offset tables of block_offsets, by path and slot code.
        a_table = np.full(len(paths), -1, np.intp)
        n_table = np.full((len(paths), n_slots), -1, np.intp)
        start = layout.offsets[:-1]
        presence = slot_code < 0
        a_table[path_code[presence]] = start[presence]
        n_table[path_code[~presence], slot_code[~presence]] = start[~presence]
        layout._offset_tables = (paths, slot_keys, a_table, n_table)
        return layout


def _ranks(keys):
    """Rank of every key in sorted order (keys distinct)."""
    ranks = np.empty(len(keys), np.intp)
    ranks[sorted(range(len(keys)), key=keys.__getitem__)] = np.arange(len(keys))
    return ranks


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
    paths, slot_keys = tuple(unrolled.paths), batch._slot_keys
    # The tables depend on the layout, the paths and the slots only; a
    # layout from ColumnLayout.from_unrolled comes with them.
    tables = getattr(layout, "_offset_tables", None)
    if tables is None or tables[0] != paths or tables[1] != slot_keys:
        tables = layout._offset_tables = (paths, slot_keys,
                                          *_offset_tables(paths, slot_keys, layout))
    a_table, n_table = tables[2:]
    slot = batch._slot_codes[unrolled.obj]
    return a_table[unrolled.path], n_table[unrolled.path, slot]


def _offset_tables(paths, slot_keys, layout):
    """Column offset of each path's presence column and (path, slot) block."""
    n_paths, n_slots = len(paths), max(len(slot_keys), 1)
    a_table = np.full(n_paths, -1, np.intp)
    n_table = np.full((n_paths, n_slots), -1, np.intp)
    path_id = {path: i for i, path in enumerate(paths)}
    slot_code = {key: i for i, key in enumerate(slot_keys)}
    for (path, key), offset in zip(layout.items, layout.offsets[:-1].tolist()):
        p = path_id.get(path)
        if p is None:
            continue
        if key is None:
            a_table[p] = offset
        elif key in slot_code:
            n_table[p, slot_code[key]] = offset
    return a_table, n_table


def coefficient_chunks(batch, unrolled, layout, chunk_size, offsets=None):
    """Dense coefficient matrices ``Z`` with ``S = Z @ G_stacked^T``, by chunk.

    Yields ``(lo, hi, Z)`` for runs of at most ``chunk_size`` whole records:
    ``Z`` has shape (hi - lo, layout.n_columns), float64, and row ``i`` is
    record ``lo + i``. The layout must hold every block the entries touch.

    Everything per entry -- its chunk, module, row and column offsets -- is
    computed once; the entries are then sorted by (chunk, module) with a
    linear-time radix sort, so each chunk and module is a contiguous run.
    ``offsets``: ``block_offsets``' result, where the caller has it.
    """
    n_records, n_columns = batch.n_records, layout.n_columns
    chunk_size = max(1, min(chunk_size, max(n_records, 1)))
    n_chunks = max(1, -(-n_records // chunk_size))
    n_modules = max(len(batch._attributes), 1)
    obj, eff = unrolled.obj, unrolled.weight
    record = batch._record[obj]
    module = batch._module_codes[obj]
    key = (record // chunk_size) * n_modules + module
    # A stable sort of small integers is a radix sort: linear in the entries.
    order = np.argsort(key.astype(np.uint32 if n_chunks * n_modules < 2**32
                                  else np.uint64), kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(
        key, minlength=n_chunks * n_modules)))).reshape(-1)
    a_offset, n_offset = (block_offsets(batch, unrolled, layout) if offsets is None
                          else offsets)
    row_start = (record % chunk_size) * n_columns
    a_start = (row_start + a_offset)[order]
    n_start = (row_start + n_offset)[order]
    rows = batch._rows[obj][order]
    eff = eff[order]
    dims = [block.shape[1] for block in batch._attributes]
    workspace = Workspace()
    for chunk in range(n_chunks):
        lo, hi = chunk * chunk_size, min((chunk + 1) * chunk_size, n_records)
        run = slice(bounds[chunk * n_modules], bounds[(chunk + 1) * n_modules])
        # (+ 1: a block of width 0 may start where Z's row ends.)
        if all_distinct(n_start[run], (hi - lo) * n_columns + 1):
            z = _blocks_written(batch, bounds[chunk * n_modules:], rows, eff,
                                a_start, n_start, run, (hi - lo) * n_columns,
                                workspace)
            yield lo, hi, z.reshape(hi - lo, n_columns)
            continue
        # One flat (index, value) buffer for all modules, one bincount. Per
        # module it holds the attributes (entries x dim), then the presences.
        counts = np.diff(bounds[chunk * n_modules:(chunk + 1) * n_modules + 1])
        total = int(np.dot(counts[:len(dims)], np.add(dims, 1)))
        flat_index = workspace.get("index", total, np.intp)
        values = workspace.get("values", total)
        position = 0
        for code, block in enumerate(batch._attributes):
            start = bounds[chunk * n_modules + code]
            count, dim = counts[code], dims[code]
            stop = start + count
            if not count:
                continue
            attribute_part = slice(position, position + dim * count)
            presence = slice(attribute_part.stop, attribute_part.stop + count)
            position = presence.stop
            w = eff[start:stop]
            # (np.take gathers rows several times faster than fancy indexing)
            attributes = np.take(block, rows[start:stop], axis=0,
                                 out=workspace.get("gather", count * dim,
                                                   block.dtype).reshape(count, dim))
            np.multiply(attributes, w[:, None],
                        out=values[attribute_part].reshape(count, dim))
            values[presence] = w
            np.add(n_start[start:stop, None], np.arange(dim),
                   out=flat_index[attribute_part].reshape(count, dim))
            flat_index[presence] = a_start[start:stop]
        z = np.bincount(flat_index, weights=values,
                        minlength=(hi - lo) * n_columns)
        yield lo, hi, z.reshape(hi - lo, n_columns)


def all_distinct(values, n_values):
    """Whether the ints ``values`` (in ``[0, n_values)``) are all distinct.

    A table of the values seen where the range is small against them (or
    small outright), else a sort.
    """
    if n_values <= max(4 * values.size, 2**20):
        seen = np.zeros(n_values, bool)
        seen[values] = True
        return np.count_nonzero(seen) == values.size
    return np.unique(values).size == values.size


def _blocks_written(batch, bounds, rows, eff, a_start, n_start, run, n_cells,
                    workspace):
    """One chunk's ``Z`` where no two entries share an attribute block.

    Each entry's weighted attributes are then written, a row at a time,
    rather than added one value at a time: the bincount of every value
    costs several times more. The presences still add up, in entry order
    as in the general case, and each attribute is written as ``0.0 + value``
    (a zero's sign included), so ``Z`` is the same to the bit.
    """
    z = np.bincount(a_start[run], weights=eff[run], minlength=n_cells)
    for code, block in enumerate(batch._attributes):
        start, stop = bounds[code], bounds[code + 1]
        count, dim = stop - start, block.shape[1]
        if not count:
            continue
        values = np.take(block, rows[start:stop], axis=0,
                         out=workspace.get("gather", count * dim,
                                           block.dtype).reshape(count, dim))
        values = np.multiply(values, eff[start:stop, None],
                             out=workspace.get("values", count * dim).reshape(
                                 count, dim))
        values += 0.0
        # Overlapping rows of dim cells, one starting at every cell of Z.
        blocks = np.ndarray((n_cells - dim + 1, dim), z.dtype, z,
                            strides=(z.itemsize, z.itemsize))
        blocks[n_start[start:stop]] = values
    return z


def coefficients(batch, unrolled, layout):
    """The coefficient matrix ``Z`` of the whole batch (see coefficient_chunks)."""
    if batch.n_records == 0:
        return np.zeros((0, layout.n_columns))
    _, _, z = next(coefficient_chunks(batch, unrolled, layout, batch.n_records))
    return z
