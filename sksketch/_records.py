"""The module-activation record: data model and validation (docs: Records).

A record is the DAG of objects that a modular network emitted for one input.
It is parsed once, at the public boundary, into flat arrays (module codes,
attributes grouped per module, edges as index pairs) so that everything after
it -- batching, unrolling, sketching -- works on arrays, never on dicts.
"""

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np

from ._array_api import is_array, to_numpy
from ._dag import check_acyclic, default_slot_ordinals

_OBJECT_FIELDS = frozenset({"id", "module", "attributes", "weight", "slot", "inputs"})
_RECORD_FIELDS = frozenset({"objects", "outputs"})


class ActivationObject(NamedTuple):
    """One object of a record: what one module emitted.

    Attributes
    ----------
    id : int or str
        Identifier, unique within its record.
    module : str
        Name of the module that produced the object.
    attributes : ndarray of shape (attribute_dim,)
        The object's attribute vector.
    weight : float
        Non-negative confidence; it multiplies the object's contribution.
    slot : int, str or tuple
        Tells apart objects of one module under one parent (a position, an
        index). ``None`` when constructing means "its ordinal among the
        same-module objects of its first consumer" (or, for an object nothing
        consumes, among the same-module unconsumed objects).
    inputs : tuple
        Ids of the objects this one consumed (its children).
    """

    id: Any
    module: str
    attributes: Any
    weight: float = 1.0
    slot: Any = None
    inputs: tuple = ()


MAX_SLOT_DEPTH = 32


def canonical_slot(value, where, _depth=0):
    """Return ``value`` as a hashable, JSON-stable slot key.

    Slots are ints, strings, or non-empty sequences of them (spatial positions),
    nested at most ``MAX_SLOT_DEPTH`` (32) levels deep, so that a hostile slot
    raises a TypeError rather than a RecursionError. They feed the stable seed
    of a node subspace, so ``3``, ``np.int64(3)`` all map to the same key while
    ``"3"`` stays a different one. A 0-d array is not a sequence and, like a
    0-d array id, is refused.
    """
    if type(value) is int or type(value) is str:  # the common case, fast
        return value
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{where}: field 'slot' must be an int, a str or a "
                        f"sequence of them; got a bool {value!r}")
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, str):
        return value
    if _is_sequence(value) and len(value) > 0:
        if _depth >= MAX_SLOT_DEPTH:
            raise TypeError(f"{where}: field 'slot' nests sequences more than "
                            f"{MAX_SLOT_DEPTH} levels deep")
        return tuple(canonical_slot(item, where, _depth + 1) for item in value)
    raise TypeError(f"{where}: field 'slot' must be an int, a str or a non-empty "
                    f"sequence of them; got {_describe(value)}")


def _is_sequence(value):
    """A list-like with a length: a Sequence or an array of at least 1-D."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _describe(value):
    """``type value`` for an error message, short even for a huge value."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return f"a 0-d array {value!r}"
    if isinstance(value, int) and value.bit_length() > 64:
        # repr() of an int of over 4300 digits raises a ValueError.
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def slot_to_json(slot):
    """JSON form of a canonical slot key (tuples become lists)."""
    return list(map(slot_to_json, slot)) if isinstance(slot, tuple) else slot


def _check_id(value, where):
    if type(value) is int or type(value) is str:  # the common case, fast
        return value
    if isinstance(value, bool | np.bool_) or not isinstance(value, Integral | str):
        raise TypeError(f"{where}: field 'id' must be an int or a str; "
                        f"got {_describe(value)}")
    return int(value) if isinstance(value, Integral) else value


def _check_attributes(value, where):
    if isinstance(value, str | bytes | Mapping):
        raise TypeError(f"{where}: field 'attributes' must be a 1-D sequence of "
                        f"real numbers; got {type(value).__name__}")
    if not isinstance(value, np.ndarray | list | tuple) and is_array(value):
        value = to_numpy(value)  # a tensor: detached, copied to the host
    try:
        array = np.asarray(value)
    except ValueError as exc:  # numpy >= 1.24 refuses ragged nested lists
        raise ValueError(f"{where}: field 'attributes' is ragged: {exc}") from None
    if array.dtype.kind == "O" and array.ndim == 1 and all(
        isinstance(v, Real) and not isinstance(v, bool | np.bool_) for v in array
    ):
        # Ints beyond int64 make an object array; they are real numbers.
        try:
            array = array.astype(np.float64)
        except OverflowError:
            raise ValueError(f"{where}: field 'attributes' holds an int too large "
                             f"for a float") from None
    if array.dtype.kind not in "iuf":
        if array.dtype.kind == "O" and array.ndim > 1:
            raise ValueError(f"{where}: field 'attributes' is ragged")
        raise TypeError(f"{where}: field 'attributes' must hold real numbers; "
                        f"got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{where}: field 'attributes' must be 1-D; "
                         f"got shape {array.shape}")
    # Finiteness is checked per module, vectorized, once grouped.
    return array.astype(np.float64)


def _check_weight(value, where):
    if type(value) is float and 0 <= value < np.inf:  # the common case, fast
        return value
    if isinstance(value, bool | np.bool_) or not isinstance(value, Real):
        raise TypeError(f"{where}: field 'weight' must be a real number; "
                        f"got {_describe(value)}")
    try:
        weight = float(value)
    except OverflowError:  # an int such as 10**400
        raise ValueError(f"{where}: field 'weight' must be finite and >= 0; got "
                         f"{_describe(value)}, too large for a float") from None
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"{where}: field 'weight' must be finite and >= 0; "
                         f"got {weight!r}")
    return weight


def check_module(module, where):
    """A module name: a non-empty str without ``"/"``.

    ``"/"`` joins the modules of a path in feature names (``"a/b:count"`` for
    the path ``("a", "b")``), so a module named ``"a/b"`` would give the same
    names as ``b`` under ``a``. Such names are refused rather than escaped:
    refusing keeps every feature name and DataFrame column readable and split
    on ``"/"`` into modules, with no escape convention to learn or undo.
    """
    if type(module) is not str:
        if not isinstance(module, str):
            raise TypeError(f"{where}: field 'module' must be a str; "
                            f"got {_describe(module)}")
        module = str(module)
    if not module:
        raise ValueError(f"{where}: field 'module' is empty")
    if "/" in module:
        raise ValueError(f"{where}: field 'module' must not contain '/', which "
                         f"joins the modules of a path in feature names; "
                         f"got {module!r}")
    return module


def _check_id_list(value, field, where):
    """Field 'inputs' or 'outputs': a list (or a 1-D array) of ids."""
    if isinstance(value, Mapping) or not _is_sequence(value):
        raise TypeError(f"{where}: field '{field}' must be a list of ids; "
                        f"got {_describe(value)}")
    return value


def _check_fields(data, allowed, required, what, where):
    """Refuse unknown and missing fields of a record or an object."""
    unknown = sorted(map(str, set(data) - allowed))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; {what} has "
                         f"{sorted(allowed)}")
    for field in required:
        if field not in data:
            raise ValueError(f"{where}: missing required field '{field}'")


def _as_fields(obj, where):
    if type(obj) is dict and obj.keys() <= _OBJECT_FIELDS and "attributes" in obj \
            and "module" in obj and "id" in obj:  # the common case, fast
        return obj
    if isinstance(obj, ActivationObject):
        return obj._asdict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"{where}: an object must be a mapping or an "
                        f"ActivationObject; got {type(obj).__name__}")
    _check_fields(obj, _OBJECT_FIELDS, ("id", "module", "attributes"), "an object",
                  where)
    return obj


class ActivationRecord:
    """A module-activation record: the DAG of objects emitted for one input.

    Parameters
    ----------
    objects : sequence of mapping or ActivationObject
        Each object has ``id``, ``module`` (a non-empty str without ``"/"``,
        which joins modules in path names such as ``"a/b"``; such names are
        refused, not escaped, so that feature names stay readable) and
        ``attributes``, and optionally
        ``weight`` (default 1), ``slot`` (default: its ordinal among the
        same-module objects of its first consumer) and ``inputs`` (ids of the
        objects it consumed; default none).
    outputs : sequence of ids, default=None
        The record's roots. By default, the objects that nothing consumes.

    Attributes
    ----------
    ids : tuple
        Object ids, in the order given.
    modules : tuple of str
        Module of each object.
    attributes : tuple of ndarray
        Attribute vector of each object (float64, read-only).
    weights : ndarray of shape (n_objects,)
        Weight of each object.
    slots : tuple
        Slot of each object, defaults resolved.
    inputs : tuple of tuple
        Ids of each object's inputs.
    roots : tuple
        Ids of the roots.

    Raises
    ------
    TypeError, ValueError
        On a malformed record; the message names the object and the field.

    Examples
    --------
    >>> from sksketch import ActivationRecord
    >>> record = ActivationRecord([
    ...     {"id": 0, "module": "edge", "attributes": [0.1, 0.3]},
    ...     {"id": 1, "module": "cat", "attributes": [1.0, 0.2, 0.5], "inputs": [0]},
    ...     {"id": 2, "module": "output", "attributes": [0.7], "inputs": [1]},
    ... ])
    >>> record.roots, record.n_objects
    ((2,), 3)
    """

    __slots__ = ("_ids", "_module_names", "_module_codes", "_rows", "_attributes",
                 "_weights", "_slot_keys", "_slot_codes", "_parent", "_child",
                 "_roots")

    def __init__(self, objects, *, outputs=None):
        self._parse(objects, outputs, "record")

    @classmethod
    def from_dict(cls, data, *, index=None):
        """Build a record from its JSON form ``{"objects": [...], "outputs": [...]}``.

        ``index`` (the record's position in a file or list) only enters error
        messages.
        """
        where = "record" if index is None else f"record {index}"
        if isinstance(data, ActivationRecord):
            return data
        objects, outputs = record_fields(data, where)
        record = cls.__new__(cls)
        record._parse(objects, outputs, where)
        return record

    def _parse(self, objects, outputs, where):
        arrays = assemble([parse_objects(objects, outputs, where)])
        self._ids = tuple(arrays["_object_ids"])
        for name in ("_module_names", "_module_codes", "_rows", "_attributes",
                     "_slot_keys", "_slot_codes", "_parent", "_child", "_roots"):
            setattr(self, name, arrays[name])
        self._weights = arrays["_weight"]
        for array in (self._module_codes, self._rows, self._weights,
                      self._slot_codes, self._parent, self._child, self._roots,
                      *self._attributes):
            array.setflags(write=False)

    # -- read access -------------------------------------------------------
    @property
    def n_objects(self):
        """Number of objects in the record."""
        return len(self._ids)

    def __len__(self):
        return len(self._ids)

    @property
    def ids(self):
        return self._ids

    @property
    def modules(self):
        return tuple(self._module_names[c] for c in self._module_codes)

    @property
    def module_dims(self):
        """Mapping of each module present to its attribute dimension."""
        return {name: block.shape[1]
                for name, block in zip(self._module_names, self._attributes)}

    @property
    def attributes(self):
        return tuple(self._attributes[c][r]
                     for c, r in zip(self._module_codes, self._rows))

    @property
    def weights(self):
        return self._weights

    @property
    def slots(self):
        return tuple(self._slot_keys[c] for c in self._slot_codes)

    @property
    def inputs(self):
        children = [[] for _ in self._ids]
        for p, c in zip(self._parent, self._child):
            children[p].append(self._ids[c])
        return tuple(map(tuple, children))

    @property
    def roots(self):
        return tuple(self._ids[i] for i in self._roots)

    @property
    def objects(self):
        """The objects, as :class:`ActivationObject` tuples with slots resolved."""
        return [ActivationObject(*fields) for fields in zip(
            self._ids, self.modules, self.attributes, self._weights.tolist(),
            self.slots, self.inputs)]

    def to_dict(self):
        """The JSON form; slots are written out explicitly."""
        objects = [
            {"id": obj.id, "module": obj.module,
             "attributes": obj.attributes.tolist(), "weight": obj.weight,
             "slot": slot_to_json(obj.slot), "inputs": list(obj.inputs)}
            for obj in self.objects
        ]
        data = {"objects": objects}
        consumed = np.bincount(self._child, minlength=self.n_objects) > 0
        implicit_roots = np.flatnonzero(~consumed)
        if not np.array_equal(implicit_roots, self._roots):
            data["outputs"] = list(self.roots)
        return data

    def __eq__(self, other):
        if not isinstance(other, ActivationRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None

    def __repr__(self):
        counts = np.bincount(self._module_codes, minlength=len(self._module_names))
        modules = ", ".join(f"{name}: {count}"
                            for name, count in zip(self._module_names, counts))
        return (f"ActivationRecord(n_objects={self.n_objects}, "
                f"roots={len(self._roots)}, modules={{{modules}}})")

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)


def record_fields(data, where):
    """``(objects, outputs)`` of a record's JSON form, checked."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: expected a mapping with key 'objects'; "
                        f"got {type(data).__name__}")
    _check_fields(data, _RECORD_FIELDS, ("objects",), "a record", where)
    return data["objects"], data.get("outputs")


class _Parsed(NamedTuple):
    """One record's objects after the per-object checks, before the arrays."""

    where: str
    ids: list
    modules: list
    attributes: list
    weights: list
    slots: list  # None where the default applies
    parent: list  # local indices, in list order
    child: list
    roots: list | None  # local indices of explicit outputs, or None
    module_dims: dict


def parse_objects(objects, outputs, where):
    """Check every object of one record; return its fields as lists.

    Raises TypeError/ValueError naming ``where``, the object and the field.
    Structure across objects (cycles, default slots, finiteness) is checked
    by :func:`assemble`, once for a whole batch.
    """
    if isinstance(objects, str | bytes | Mapping) or not isinstance(objects, Sequence):
        raise TypeError(f"{where}: field 'objects' must be a list of objects; "
                        f"got {type(objects).__name__}")
    ids, modules, attributes, weights, slots, inputs = [], [], [], [], [], []
    position = {}
    module_dims = {}
    for ordinal, obj in enumerate(objects):
        obj_where = f"{where}, object #{ordinal}"
        fields = _as_fields(obj, obj_where)
        obj_id = _check_id(fields["id"], obj_where)
        obj_where = f"{where}, object {obj_id!r}"
        if obj_id in position:
            raise ValueError(f"{obj_where}: field 'id' duplicates object "
                             f"#{position[obj_id]}")
        position[obj_id] = ordinal
        module = fields["module"]
        if type(module) is not str or module not in module_dims:
            module = check_module(module, obj_where)  # once per name and record
        x = _check_attributes(fields["attributes"], obj_where)
        known_dim = module_dims.setdefault(module, x.shape[0])
        if known_dim != x.shape[0]:
            raise ValueError(
                f"{obj_where}: field 'attributes' has dimension {x.shape[0]}, "
                f"but module {module!r} has dimension {known_dim} in this record")
        slot = fields.get("slot")
        raw_inputs = fields.get("inputs", ())
        if raw_inputs is None:
            raw_inputs = ()
        elif type(raw_inputs) is not list:  # the common case, fast
            _check_id_list(raw_inputs, "inputs", obj_where)
        ids.append(obj_id)
        modules.append(module)
        attributes.append(x)
        weights.append(_check_weight(fields.get("weight", 1.0), obj_where))
        slots.append(None if slot is None else canonical_slot(slot, obj_where))
        inputs.append(raw_inputs)

    parent, child = [], []
    for index, raw_inputs in enumerate(inputs):
        if not len(raw_inputs):
            continue
        obj_where = f"{where}, object {ids[index]!r}"
        seen = set()
        for input_id in raw_inputs:
            input_id = _check_id(input_id, f"{obj_where}, field 'inputs'")
            if input_id not in position:
                raise ValueError(f"{obj_where}: field 'inputs' names id "
                                 f"{input_id!r}, which is not an object of "
                                 f"this record")
            if input_id in seen:
                raise ValueError(f"{obj_where}: field 'inputs' lists id "
                                 f"{input_id!r} twice")
            seen.add(input_id)
            parent.append(index)
            child.append(position[input_id])

    roots = None
    if outputs is not None:
        _check_id_list(outputs, "outputs", where)
        roots = []
        for output in outputs:
            output = _check_id(output, f"{where}, field 'outputs'")
            if output not in position:
                raise ValueError(f"{where}: field 'outputs' names id {output!r}, "
                                 f"which is not an object of this record")
            roots.append(position[output])
        if len(set(roots)) != len(roots):
            raise ValueError(f"{where}: field 'outputs' lists an id twice")
    return _Parsed(where, ids, modules, attributes, weights, slots, parent, child,
                   roots, module_dims)


def merge_module_dims(records):
    """Each module's attribute dimension, the same in every record.

    ``records`` yields ``(where, {module: dim}, first_object)``, with
    ``first_object(module)`` the id to name in an error.
    """
    dims, seen_in = {}, {}
    for index, (where, module_dims, first_object) in enumerate(records):
        for name, dim in module_dims.items():
            known = dims.setdefault(name, dim)
            seen_in.setdefault(name, index)
            if known != dim:
                raise ValueError(
                    f"{where}, object {first_object(name)!r}: module {name!r} has "
                    f"attribute dimension {dim}, but {known} in record "
                    f"{seen_in[name]}")
    return dims


def assemble(parsed):
    """Columnar arrays of parsed records, their structure checked at once.

    Checks that a module keeps its dimension across records, that no record
    has a cycle and that attributes are finite, with one vectorized pass over
    the whole batch; resolves default slots and roots. Returns the fields of
    a :class:`RecordBatch`.
    """
    dims = merge_module_dims(
        (r.where, r.module_dims, lambda name, r=r: r.ids[r.modules.index(name)])
        for r in parsed)
    module_names = tuple(sorted(dims))
    code_of = {name: code for code, name in enumerate(module_names)}
    sizes = np.fromiter((len(r.ids) for r in parsed), np.intp, len(parsed))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    n_objects = int(offsets[-1])
    record = np.repeat(np.arange(len(parsed)), sizes)
    ids = [i for r in parsed for i in r.ids]
    module_codes = np.fromiter((code_of[m] for r in parsed for m in r.modules),
                               np.intp, n_objects)
    parent = np.fromiter((p + o for r, o in zip(parsed, offsets.tolist())
                          for p in r.parent), np.intp)
    child = np.fromiter((c + o for r, o in zip(parsed, offsets.tolist())
                         for c in r.child), np.intp)
    on_cycle = check_acyclic(n_objects, parent, child)
    if on_cycle >= 0:
        raise ValueError(f"{parsed[record[on_cycle]].where}, object "
                         f"{ids[on_cycle]!r}: field 'inputs' closes a cycle; "
                         f"a record must be a DAG")

    # Roots: the explicit outputs, else the objects nothing consumes.
    implicit = np.bincount(child, minlength=n_objects) == 0
    explicit = np.fromiter((r.roots is not None for r in parsed), bool, len(parsed))
    implicit &= ~explicit[record]
    roots = np.concatenate([np.flatnonzero(implicit)] + [
        np.asarray(r.roots, np.intp) + o
        for r, o in zip(parsed, offsets.tolist()) if r.roots is not None])
    roots = roots[np.argsort(record[roots], kind="stable")] if roots.size else \
        roots.astype(np.intp)

    ordinals = default_slot_ordinals(n_objects, module_codes, parent, child,
                                     group=record).tolist()
    slots = [s if s is not None else o for s, o in
             zip((s for r in parsed for s in r.slots), ordinals)]
    slot_keys = tuple(dict.fromkeys(slots))
    slot_code_of = {key: code for code, key in enumerate(slot_keys)}
    slot_codes = np.fromiter((slot_code_of[s] for s in slots), np.intp, n_objects)

    attributes = [x for r in parsed for x in r.attributes]
    rows = np.zeros(n_objects, dtype=np.intp)
    grouped = []
    for code, name in enumerate(module_names):
        members = np.flatnonzero(module_codes == code)
        rows[members] = np.arange(members.size)
        block = np.asarray([attributes[i] for i in members], dtype=np.float64)
        block = block.reshape(members.size, dims[name])
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad.size:
            first = members[bad[0]]
            raise ValueError(f"{parsed[record[first]].where}, object "
                             f"{ids[first]!r}: field 'attributes' holds "
                             f"non-finite values (NaN or inf)")
        grouped.append(block)
    return {"n_records": len(parsed), "_record": record,
            "_module_names": module_names, "_module_codes": module_codes,
            "_rows": rows, "_attributes": tuple(grouped),
            "_weight": np.fromiter((w for r in parsed for w in r.weights),
                                   np.float64, n_objects),
            "_slot_keys": slot_keys, "_slot_codes": slot_codes,
            "_parent": parent, "_child": child, "_roots": roots,
            "_object_ids": ids}


def as_record(data, index=None):
    """Coerce one record (an ActivationRecord or its JSON dict) into a record."""
    if isinstance(data, ActivationRecord):
        return data
    return ActivationRecord.from_dict(data, index=index)


def merge_records(records):
    """Merge records into one whose roots are all of theirs.

    Object ids are renumbered ``0..n-1`` (ids may collide across records) and
    slots are kept as resolved in each record, so by linearity the merged
    record's sketch is the sum of the records' sketches.

    Parameters
    ----------
    records : sequence of ActivationRecord or dict

    Returns
    -------
    merged : ActivationRecord

    Examples
    --------
    >>> from sksketch import make_activation_records, merge_records
    >>> records, _ = make_activation_records(2, random_state=0)
    >>> merged = merge_records(records)
    >>> merged.n_objects == records[0].n_objects + records[1].n_objects
    True
    >>> len(merged.roots) == len(records[0].roots) + len(records[1].roots)
    True
    """
    objects, outputs = [], []
    offset = 0
    for index, data in enumerate(records):
        record = as_record(data, index=index)
        new_id = {old: offset + k for k, old in enumerate(record.ids)}
        objects += [obj._replace(id=new_id[obj.id],
                                 inputs=tuple(new_id[i] for i in obj.inputs))
                    for obj in record.objects]
        outputs += [new_id[root] for root in record.roots]
        offset += record.n_objects
    return ActivationRecord(objects, outputs=outputs)
