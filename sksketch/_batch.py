"""Records in columnar form: the one input format of the sketching engine.

A :class:`RecordBatch` holds all objects of many records as flat arrays
(record index, module code, slot code, weight, row into the module's attribute
matrix), the attributes as one 2-D array per module, and the edges as index
pairs. Records are converted once; recorders can build a batch directly.
"""

from collections.abc import Mapping, Sequence
from numbers import Integral

import numpy as np

from ._array_api import (
    all_finite_rows,
    backend_for,
    backend_of,
    detached,
    host_array,
    is_array,
    take_rows,
    to_backend,
    to_numpy,
)
from ._dag import check_acyclic, default_slot_ordinals, expand
from ._records import (
    ActivationRecord,
    as_record,
    assemble,
    canonical_slot,
    check_module,
    merge_module_dims,
    parse_objects,
    record_fields,
)


class RecordBatch:
    """A batch of module-activation records as flat arrays.

    Build one from records with :meth:`from_records`, or directly from arrays
    (for recorders that never materialise per-object dicts). Objects are
    numbered ``0..n_objects-1`` across the batch.

    Parameters
    ----------
    module : sequence of str of length n_objects
        The module of each object: a non-empty str without ``"/"``, as in a
        record (``"/"`` joins the modules of a path in feature names).
    attributes : mapping of str to array-like of shape (n_module_objects, dim)
        For each module, the attribute rows of its objects, in object order.
        Arrays of CuPy, PyTorch or another Array API library stay in it, on
        their device (all modules in one library and device): the sketcher
        then computes there (see :meth:`to_namespace`).
    record : array-like of int of shape (n_objects,), default=None
        The record of each object; by default all objects form record 0.
    n_records : int >= 0, default=None
        Number of records (records may be empty); default ``max(record) + 1``.
    weight : array-like of shape (n_objects,), default=None
        Object weights (default 1).
    slot : sequence of length n_objects, default=None
        Object slots (int, str or tuple); default: the ordinal among the
        same-module inputs of the first consumer (see the user guide, Records).
        A 1-D integer ndarray is taken in one vectorized pass.
    edges : array-like of int of shape (n_edges, 2), default=None
        ``(parent, child)`` pairs: ``parent`` consumed ``child``.
    roots : array-like of int, default=None
        The root objects; default: the objects nothing consumes.
    object_ids : sequence of length n_objects, default=None
        Object ids, used in error messages and by :meth:`to_records`.
    dtype : {np.float32, np.float64}, default=np.float64
        Floating type of the attributes and weights.

    Attributes
    ----------
    n_records : int
    n_objects : int
    module_dims : dict of str to int
        Attribute dimension of each module in the batch, sorted by name.

    Examples
    --------
    Two records from flat arrays: record 0 is a ``cat`` consuming an
    ``edge``; record 1 a lone ``cat``.

    >>> import numpy as np
    >>> from sksketch import RecordBatch
    >>> batch = RecordBatch(
    ...     module=["cat", "edge", "cat"], record=[0, 0, 1],
    ...     attributes={"cat": [[1.0, 0.5], [0.2, 0.1]], "edge": [[0.3]]},
    ...     edges=[[0, 1]])
    >>> batch.n_records, batch.n_objects, batch.module_dims
    (2, 3, {'cat': 2, 'edge': 1})
    >>> [record.roots for record in batch.to_records()]
    [(0,), (2,)]
    """

    def __init__(self, *, module, attributes, record=None, n_records=None,
                 weight=None, slot=None, edges=None, roots=None, object_ids=None,
                 dtype=np.float64):
        dtype = _float_dtype(dtype, "RecordBatch")
        module = np.asarray(module)
        if module.ndim != 1 or (module.size and module.dtype.kind not in "UO"):
            raise TypeError("RecordBatch: 'module' must be a 1-D sequence of str")
        n_objects = module.size
        # Ids and records first: the messages below name objects by them.
        if object_ids is not None:
            object_ids = list(object_ids)
            if len(object_ids) != n_objects:
                raise ValueError(f"RecordBatch: 'object_ids' must have length "
                                 f"{n_objects}; got {len(object_ids)}")
        self._object_ids = object_ids

        record = (np.zeros(n_objects, np.intp) if record is None
                  else _index_array(record, "record", n_objects))
        if n_records is None:
            n_records = int(record.max()) + 1 if n_objects else 0
        elif isinstance(n_records, bool | np.bool_) or not isinstance(n_records,
                                                                      Integral):
            raise TypeError(f"RecordBatch: 'n_records' must be an int; got "
                            f"{type(n_records).__name__} {n_records!r}")
        elif n_records < 0:
            raise ValueError(f"RecordBatch: 'n_records' must be >= 0; "
                             f"got {n_records}")
        if n_objects and (record.min() < 0 or record.max() >= n_records):
            raise ValueError(f"RecordBatch: 'record' must lie in [0, {n_records})")
        self.n_records = int(n_records)
        self._record = record

        if module.dtype.kind == "O":  # astype(str) would make None 'None'
            for index, name in enumerate(module.tolist()):
                if not isinstance(name, str):
                    check_module(name, self._where(index))
        module_names, first, module_codes = np.unique(
            module.astype(str), return_index=True, return_inverse=True)
        module_names = tuple(check_module(name, self._where(index))
                             for name, index in zip(module_names.tolist(),
                                                    first.tolist()))

        if not isinstance(attributes, Mapping):
            raise TypeError("RecordBatch: 'attributes' must map module names "
                            "to 2-D arrays")
        unknown = sorted(set(attributes) - set(module_names))
        if unknown:
            raise ValueError(f"RecordBatch: 'attributes' has modules {unknown} "
                             f"that no object belongs to")
        rows = np.zeros(n_objects, dtype=np.intp)
        grouped = []
        for code, name in enumerate(module_names):
            members = np.flatnonzero(module_codes == code)
            rows[members] = np.arange(members.size)
            if name not in attributes:
                raise ValueError(f"RecordBatch: 'attributes' lacks module {name!r}")
            block = _attribute_block(attributes[name], name, dtype)
            if block.shape[0] != members.size:
                raise ValueError(f"RecordBatch: module {name!r} has {members.size} "
                                 f"objects but {block.shape[0]} attribute rows")
            bad = np.flatnonzero(~all_finite_rows(backend_of(block), block))
            if bad.size:
                raise ValueError(f"{self._where(members[bad[0]])}: field "
                                 f"'attributes' holds non-finite values")
            grouped.append(block)
        _one_library(module_names, grouped)
        self._rows = rows
        self._module_names = module_names
        self._module_codes = module_codes.astype(np.intp)
        self._attributes = tuple(grouped)

        if weight is None:
            weight = np.ones(n_objects, dtype)
        weight = np.asarray(weight)
        if weight.shape != (n_objects,) or weight.dtype.kind not in "iuf":
            raise TypeError(f"RecordBatch: 'weight' must be a real array of "
                            f"shape ({n_objects},)")
        bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
        if bad.size:
            raise ValueError(f"{self._where(bad[0])}: field 'weight' must be "
                             f"finite and >= 0; got {weight[bad[0]]!r}")
        self._weight = weight.astype(dtype)

        edges = (np.zeros((0, 2), np.intp) if edges is None
                 else _index_array(edges, "edges", None))
        if edges.size == 0:
            edges = edges.reshape(0, 2)
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise ValueError("RecordBatch: 'edges' must have shape (n_edges, 2)")
        parent, child = edges[:, 0].copy(), edges[:, 1].copy()
        if edges.size and (edges.min() < 0 or edges.max() >= n_objects):
            raise ValueError(f"RecordBatch: 'edges' must index objects in "
                             f"[0, {n_objects})")
        crossing = np.flatnonzero(record[parent] != record[child])
        if crossing.size:
            raise ValueError(f"{self._where(parent[crossing[0]])}: field 'inputs' "
                             f"names an object of another record")
        pairs = parent * max(n_objects, 1) + child
        if np.unique(pairs).size != pairs.size:
            raise ValueError("RecordBatch: 'edges' lists an edge twice")
        on_cycle = check_acyclic(n_objects, parent, child)
        if on_cycle >= 0:
            raise ValueError(f"{self._where(on_cycle)}: field 'inputs' closes a "
                             f"cycle; a record must be a DAG")
        self._parent, self._child = parent, child

        if roots is None:
            roots = np.flatnonzero(np.bincount(child, minlength=n_objects) == 0)
        roots = _index_array(roots, "roots", None)
        if roots.size and (roots.min() < 0 or roots.max() >= n_objects):
            raise ValueError(f"RecordBatch: 'roots' must index objects in "
                             f"[0, {n_objects})")
        self._roots = roots

        if slot is None:
            slot = default_slot_ordinals(n_objects, self._module_codes, parent,
                                         child, group=record)
            slot_keys, slot_codes = np.unique(slot, return_inverse=True)
            slot_keys = tuple(slot_keys.tolist())
        elif (isinstance(slot, np.ndarray) and slot.dtype.kind in "iu"
              and slot.ndim == 1):
            # Integer slots (a recorder's flat positions) are canonical
            # already: one vectorized pass instead of a check per object.
            if slot.size != n_objects:
                raise ValueError(f"RecordBatch: 'slot' must have length {n_objects}")
            slot_keys, slot_codes = np.unique(slot, return_inverse=True)
            slot_keys = tuple(slot_keys.tolist())
        else:
            if len(slot) != n_objects:
                raise ValueError(f"RecordBatch: 'slot' must have length {n_objects}")
            keys = [canonical_slot(s, self._where(i)) for i, s in enumerate(slot)]
            slot_keys = tuple(dict.fromkeys(keys))
            code_of = {key: code for code, key in enumerate(slot_keys)}
            slot_codes = np.fromiter((code_of[k] for k in keys), np.intp, n_objects)
        self._slot_keys = slot_keys
        self._slot_codes = slot_codes.astype(np.intp)

    @classmethod
    def _from_arrays(cls, **arrays):
        """Trusted constructor: the arrays are already valid and typed."""
        batch = cls.__new__(cls)
        for name, value in arrays.items():
            setattr(batch, name, value)
        return batch

    @classmethod
    def _from_layers(cls, layers, *, n_records, parent, child, dtype):
        """Trusted constructor for objects numbered layer by layer (recorders).

        Internal to sksketch. ``layers`` lists ``(name, record, slot, weight,
        attributes)`` per module, in object order: the objects of layer ``i``
        come after those of layers ``< i``, module names are distinct and
        valid, records lie in ``[0, n_records)``, slots are non-negative
        ints, weights >= 0, and every edge ``(parent, child)``
        joins objects of one record, a later layer consuming an earlier one
        (so the edges form a DAG), each pair once. Returns the batch the
        validating constructor gives for the same arrays, or that
        constructor's error when an attribute or weight is not finite.
        """
        dtype = np.dtype(dtype)
        names = [layer[0] for layer in layers]
        sizes = np.array([layer[1].size for layer in layers], np.intp)
        attributes = [np.ascontiguousarray(layer[4], dtype=dtype) for layer in layers]
        # A finite sum has finite terms (inf and NaN never cancel): one pass
        # without a mask; a sum that overflows is checked element-wise.
        if not all(np.isfinite(np.sum(a)) or np.isfinite(a).all()
                   for a in [*attributes, *(layer[3] for layer in layers)]):
            # Rare: the validating constructor names the object.
            module = np.repeat(np.asarray(names), sizes)
            return cls(module=module, n_records=n_records,
                       attributes=dict(zip(names, attributes)),
                       record=np.concatenate([layer[1] for layer in layers]),
                       weight=np.concatenate([layer[3] for layer in layers]),
                       slot=np.concatenate([layer[2] for layer in layers]),
                       edges=np.stack((parent, child), axis=1), dtype=dtype)
        # Module codes follow the sorted names, as the validating path's.
        order = sorted(range(len(names)), key=names.__getitem__)
        code_of_layer = np.empty(len(names), np.intp)
        code_of_layer[order] = np.arange(len(names))
        n_objects = int(sizes.sum())
        slot = np.concatenate([layer[2] for layer in layers]).astype(np.intp,
                                                                     copy=False)
        present = np.bincount(slot, minlength=1) > 0
        slot_keys = np.flatnonzero(present)
        slot_code_of = np.cumsum(present) - 1
        parent = np.asarray(parent, np.intp)
        child = np.asarray(child, np.intp)
        return cls._from_arrays(
            n_records=int(n_records),
            _object_ids=None,
            _record=np.concatenate([layer[1] for layer in layers]).astype(
                np.intp, copy=False),
            _module_names=tuple(names[i] for i in order),
            _module_codes=np.repeat(code_of_layer, sizes),
            _rows=np.concatenate([np.arange(size, dtype=np.intp) for size in sizes]
                                 or [np.zeros(0, np.intp)]),
            _attributes=tuple(attributes[i] for i in order),
            _weight=np.concatenate([layer[3] for layer in layers]).astype(dtype),
            _slot_keys=tuple(slot_keys.tolist()),
            _slot_codes=slot_code_of[slot],
            _parent=parent,
            _child=child,
            _roots=np.flatnonzero(np.bincount(child, minlength=n_objects) == 0),
        )

    @classmethod
    def from_parsed(cls, parsed, *, dtype=np.float64):
        """A batch of records whose objects :func:`parse_objects` checked.

        Internal to sksketch (``read_batch``, ``from_records``): checks the
        structure of all records at once (:func:`assemble`).
        """
        arrays = assemble(parsed)
        arrays["_attributes"] = tuple(a.astype(dtype, copy=False)
                                      for a in arrays["_attributes"])
        arrays["_weight"] = arrays["_weight"].astype(dtype, copy=False)
        return cls._from_arrays(**arrays)

    @classmethod
    def from_records(cls, records, *, dtype=np.float64):
        """Convert a sequence of records (ActivationRecord or JSON dicts).

        Raises a ValueError naming the record when one module has two
        attribute dimensions across records.
        """
        if isinstance(records, RecordBatch):
            return records.astype(dtype)
        dtype = _float_dtype(dtype, "RecordBatch.from_records")
        if all(type(r) is dict for r in records):
            # JSON dicts: check each object, then the structure of the whole
            # batch at once, without building a record object each.
            return cls.from_parsed([parse_objects(*record_fields(r, f"record {i}"),
                                                  f"record {i}")
                                    for i, r in enumerate(records)], dtype=dtype)
        records = [as_record(r, index=i) for i, r in enumerate(records)]
        dims = merge_module_dims(
            (f"record {index}", record.module_dims,
             lambda name, r=record: r.ids[r.modules.index(name)])
            for index, record in enumerate(records))
        module_names = tuple(sorted(dims))
        code_of = {name: code for code, name in enumerate(module_names)}
        n_per_record = np.fromiter((r.n_objects for r in records), np.intp,
                                   len(records))
        offsets = np.concatenate(([0], np.cumsum(n_per_record)))

        def cat(arrays, dtype=np.intp):
            arrays = list(arrays)
            return (np.concatenate(arrays).astype(dtype, copy=False) if arrays
                    else np.zeros(0, dtype))

        # Map each record's local module and slot tables into global codes.
        module_codes = cat(
            np.asarray([code_of[n] for n in r._module_names], np.intp)[
                r._module_codes] for r in records)
        slot_table = {}
        slot_codes = cat(
            np.asarray([slot_table.setdefault(k, len(slot_table))
                        for k in r._slot_keys], np.intp)[r._slot_codes]
            if r.n_objects else np.zeros(0, np.intp) for r in records)
        grouped = [[] for _ in module_names]
        counts = np.zeros(len(module_names), np.intp)
        rows = []
        for record in records:
            local_to_global = [code_of[n] for n in record._module_names]
            row_offset = counts[local_to_global]
            rows.append(record._rows + row_offset[record._module_codes]
                        if record.n_objects else np.zeros(0, np.intp))
            for local, code in enumerate(local_to_global):
                grouped[code].append(record._attributes[local])
                counts[code] += record._attributes[local].shape[0]
        attributes = tuple(np.concatenate(g).astype(dtype, copy=False)
                           for g in grouped)
        return cls._from_arrays(
            n_records=len(records),
            _record=np.repeat(np.arange(len(records)), n_per_record),
            _module_names=module_names,
            _module_codes=module_codes,
            _rows=cat(rows),
            _attributes=attributes,
            _weight=cat((r._weights for r in records), dtype),
            _slot_keys=tuple(slot_table),
            _slot_codes=slot_codes,
            _parent=cat(r._parent + o for r, o in zip(records, offsets)),
            _child=cat(r._child + o for r, o in zip(records, offsets)),
            _roots=cat(r._roots + o for r, o in zip(records, offsets)),
            _object_ids=[i for r in records for i in r._ids],
        )

    # -- properties ----------------------------------------------------------
    @property
    def n_objects(self):
        return self._module_codes.size

    @property
    def module_dims(self):
        return {name: block.shape[1]
                for name, block in zip(self._module_names, self._attributes)}

    @property
    def dtype(self):
        return self._weight.dtype

    @property
    def adjacency(self):
        """Sparse (n_objects, n_objects) 0/1 matrix: ``[i, j] = 1`` if i consumed j."""
        from scipy.sparse import csr_array

        return csr_array((np.ones(self._parent.size, np.int8),
                          (self._parent, self._child)),
                         shape=(self.n_objects, self.n_objects))

    def __len__(self):
        return self.n_records

    def __repr__(self):
        return (f"RecordBatch(n_records={self.n_records}, "
                f"n_objects={self.n_objects}, modules={self.module_dims})")

    def _where(self, obj):
        """'record r, object id' for an object index, for error messages."""
        record = int(self._record[obj]) if hasattr(self, "_record") else 0
        label = int(obj) if self._object_ids is None else self._object_ids[obj]
        return f"record {record}, object {label!r}"

    def astype(self, dtype):
        """The same batch with attributes and weights in ``dtype``."""
        dtype = _float_dtype(dtype, "RecordBatch.astype")
        if dtype == self.dtype:
            return self
        state = dict(vars(self))
        state["_attributes"] = tuple(to_backend(a, backend_of(a), dtype)
                                     for a in self._attributes)
        state["_weight"] = self._weight.astype(dtype)
        return RecordBatch._from_arrays(**state)

    def to_namespace(self, namespace, *, device=None):
        """The same batch with its attributes in another array library.

        The sketcher computes in the library and on the device of the
        attributes, and returns sketches there: move a batch to ``cupy`` (or
        ``torch`` with ``device="cuda"``) to sketch on a GPU. The records'
        structure stays in NumPy.

        Parameters
        ----------
        namespace : module
            ``numpy``, ``cupy``, ``torch`` or another Array API library.
        device : str or device, default=None
            The library's device (e.g. ``"cuda:0"`` for torch); default its
            default device.

        Returns
        -------
        batch : RecordBatch
        """
        backend = backend_for(namespace, device)
        state = dict(vars(self))
        state["_attributes"] = tuple(to_backend(block, backend)
                                     for block in self._attributes)
        return RecordBatch._from_arrays(**state)

    # -- indexing (so that model selection can split a batch) ----------------
    def _record_order(self):
        """Objects, edges and roots sorted by record, with CSR pointers."""
        by_object = np.argsort(self._record, kind="stable")
        by_edge = np.argsort(self._record[self._parent], kind="stable")
        by_root = np.argsort(self._record[self._roots], kind="stable")

        def pointers(records):
            ptr = np.zeros(self.n_records + 1, np.intp)
            np.cumsum(np.bincount(records, minlength=self.n_records), out=ptr[1:])
            return ptr

        return (by_object, pointers(self._record),
                by_edge, pointers(self._record[self._parent]),
                by_root, pointers(self._record[self._roots]))

    def take(self, indices):
        """A new batch of the records at ``indices`` (repeats allowed).

        ``indices`` holds integers (negative ones count from the end) or is a
        boolean mask of length ``n_records``; floats are refused with a
        TypeError, an index out of range or a mask of another length with an
        IndexError.
        """
        indices = host_array(indices)  # may live on the device
        if indices.dtype == bool:
            if indices.shape != (self.n_records,):
                raise IndexError(f"boolean index of shape {indices.shape} for "
                                 f"{self.n_records} records")
            indices = np.flatnonzero(indices)
        elif indices.size and indices.dtype.kind not in "iu":
            # Truncating 1.7 to 1 would silently pick another record.
            raise TypeError(f"RecordBatch.take: indices must be integers or "
                            f"booleans; got dtype {indices.dtype}")
        indices = indices.astype(np.intp).reshape(-1)
        indices = np.where(indices < 0, indices + self.n_records, indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_records):
            raise IndexError(f"record index out of range for {self.n_records} "
                             f"records")
        by_obj, obj_ptr, by_edge, edge_ptr, by_root, root_ptr = self._record_order()
        source, old = expand(obj_ptr, by_obj, indices)
        new_start = np.concatenate(([0], np.cumsum(
            obj_ptr[indices + 1] - obj_ptr[indices])))[:-1]
        # position of each old object within its record, in record order
        rank = np.empty(self.n_objects, np.intp)
        rank[by_obj] = np.arange(self.n_objects) - np.repeat(
            obj_ptr[:-1], np.diff(obj_ptr))

        def relocate(ptr, order, objects_of):
            src, old_items = expand(ptr, order, indices)
            return new_start[src] + rank[objects_of(old_items)]

        parent = relocate(edge_ptr, by_edge, lambda e: self._parent[e])
        child = relocate(edge_ptr, by_edge, lambda e: self._child[e])
        roots = relocate(root_ptr, by_root, lambda r: self._roots[r])
        # Attribute rows: keep each module's rows in the new object order.
        codes = self._module_codes[old]
        rows = np.zeros(old.size, np.intp)
        attributes = []
        for code, block in enumerate(self._attributes):
            members = np.flatnonzero(codes == code)
            rows[members] = np.arange(members.size)
            attributes.append(take_rows(backend_of(block), block,
                                        self._rows[old[members]]))
        return RecordBatch._from_arrays(
            n_records=indices.size,
            _record=source,
            _module_names=self._module_names,
            _module_codes=codes,
            _rows=rows,
            _attributes=tuple(attributes),
            _weight=self._weight[old],
            _slot_keys=self._slot_keys,
            _slot_codes=self._slot_codes[old],
            _parent=parent,
            _child=child,
            _roots=roots,
            _object_ids=(None if self._object_ids is None
                         else [self._object_ids[i] for i in old]),
        )

    def to_records(self):
        """The batch as a list of :class:`ActivationRecord`."""
        by_obj, obj_ptr, by_edge, edge_ptr, by_root, root_ptr = self._record_order()
        host = [to_numpy(block) for block in self._attributes]
        records = []
        for r in range(self.n_records):
            objects = by_obj[obj_ptr[r]:obj_ptr[r + 1]]
            ids = (objects.tolist() if self._object_ids is None
                   else [self._object_ids[i] for i in objects])
            id_of = dict(zip(objects.tolist(), ids))
            inputs = {i: [] for i in objects.tolist()}
            for e in by_edge[edge_ptr[r]:edge_ptr[r + 1]]:
                inputs[int(self._parent[e])].append(id_of[int(self._child[e])])
            records.append(ActivationRecord(
                [{"id": id_of[i],
                  "module": self._module_names[self._module_codes[i]],
                  "attributes": host[self._module_codes[i]][self._rows[i]],
                  "weight": float(self._weight[i]),
                  "slot": self._slot_keys[self._slot_codes[i]],
                  "inputs": inputs[i]} for i in objects.tolist()],
                outputs=[id_of[int(self._roots[k])]
                         for k in by_root[root_ptr[r]:root_ptr[r + 1]]]))
        return records

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.take([key]).to_records()[0]
        if isinstance(key, slice):
            return self.take(np.arange(self.n_records)[key])
        return self.take(key)


def _attribute_block(value, name, dtype):
    """One module's attribute rows: a NumPy array, or another library's.

    Arrays of an Array API library (CuPy, PyTorch, ...) stay in it, on their
    device, cast to ``dtype``; the sketcher then computes there.
    """
    if is_array(value):
        backend = backend_of(value)
        kind = str(value.dtype)
        if value.ndim != 2 or not any(k in kind for k in ("int", "float")):
            raise TypeError(f"RecordBatch: attributes of module {name!r} "
                            f"must be a 2-D array of real numbers")
        return to_backend(detached(value), backend, dtype)
    block = np.asarray(value)
    if block.dtype.kind not in "iuf" or block.ndim != 2:
        raise TypeError(f"RecordBatch: attributes of module {name!r} "
                        f"must be a 2-D array of real numbers")
    return np.ascontiguousarray(block, dtype=dtype)


def _float_dtype(dtype, where):
    """``dtype`` as NumPy's float32 or float64; anything else refused.

    Casting attributes to an integer, complex or boolean type would change
    them silently (truncation, dropped imaginary parts).
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved not in (np.float32, np.float64):
        raise TypeError(f"{where}: 'dtype' must be float32 or float64 (NumPy's "
                        f"dtype or its name, whatever the attributes' array "
                        f"library); got {dtype!r}")
    return resolved


def _one_library(module_names, blocks):
    """Refuse attribute blocks from several array libraries or devices."""
    try:
        backend = backend_of(*blocks)
    except ValueError as error:
        raise ValueError(f"RecordBatch: the attributes of all modules must come "
                         f"from one array library and device; {error}") from None
    if not backend.is_numpy:
        host = [name for name, block in zip(module_names, blocks)
                if not is_array(block)]
        if host:
            raise ValueError(
                f"RecordBatch: the attributes of all modules must come from one "
                f"array library and device; modules {host} hold NumPy arrays, "
                f"the others {backend.xp.__name__} arrays. Build the batch "
                f"from NumPy arrays and move it with to_namespace")


def _index_array(value, name, length):
    array = np.asarray(value)
    if array.size == 0:
        return array.astype(np.intp)
    if array.dtype.kind not in "iu":
        raise TypeError(f"RecordBatch: '{name}' must hold integers; "
                        f"got dtype {array.dtype}")
    if length is not None and array.shape != (length,):
        raise ValueError(f"RecordBatch: '{name}' must have shape ({length},)")
    return array.astype(np.intp)


def as_batch(records, *, dtype=np.float64):
    """Coerce what a user passed as ``X`` into a :class:`RecordBatch`.

    Accepts a RecordBatch, or a sequence (or iterable) of ActivationRecord and
    JSON dicts; refuses arrays and single records with a TypeError that says
    what was expected.
    """
    if isinstance(records, RecordBatch):
        return records.astype(dtype)
    if isinstance(records, ActivationRecord | Mapping):
        raise TypeError("expected a sequence of records; got a single record "
                        "(wrap it in a list)")
    if is_array(records) or (isinstance(records, np.ndarray)
                             and records.dtype != object):
        raise TypeError(f"expected a sequence of activation records (dicts or "
                        f"ActivationRecord), or a RecordBatch; got an array of "
                        f"shape {tuple(records.shape)} and dtype {records.dtype}")
    if hasattr(records, "iloc") or isinstance(records, str | bytes):
        raise TypeError(f"expected a sequence of activation records; got "
                        f"{type(records).__name__}")
    if not isinstance(records, Sequence | np.ndarray):
        try:
            records = list(records)
        except TypeError:
            raise TypeError(f"expected a sequence of activation records; got "
                            f"{type(records).__name__}") from None
    return RecordBatch.from_records(records, dtype=dtype)
