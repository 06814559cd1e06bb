"""The level-wise engine: the sketch recursion, batched a DAG level at a time.

The recursion ``s(theta) = W_M (A_M [x; 1] + N_{M,s} x + C_M sum_c w_c s(c))``
costs ``O(d^2)`` per object, whatever the record's shape. Objects are taken
in rounds, leaves first, each round holding the objects whose inputs are all
sketched; within a round, the objects of one module share ``A_M``, ``C_M``
and ``R_M``, so each of those is one matrix product over all of them, and
the inputs' weighted sums are one sparse product with the adjacency. This is
the plan for records whose unrolling explodes (lattices, long chains, dense
receptive fields), where the unrolled engine pays once per module path.
"""

from contextlib import nullcontext

import numpy as np

from ._array_api import (
    NUMPY,
    concat_rows,
    segment_sum,
    sum_rows_by,
    take_rows,
    to_backend,
    zeros,
)
from ._dag import children_csr, expand, topological_levels
from ._threads import SMALL_PRODUCT_FLOPS, blas_threads_for, one_blas_thread

# Objects whose d-vectors the engine holds at once (records are taken in
# chunks of about this many objects; a larger record is taken whole).
_CHUNK_OBJECTS = 2**14


def _sketch_run(batch, matrices, dtype, backend, members, slot_runs, inputs,
                sketches):
    """Sketches of ``members``, objects of one module in one round.

    ``slot_runs``: start offsets (into ``members``) of their runs of equal
    slots, members being sorted by slot. ``inputs``: the objects' inputs in
    CSR form, ``(indptr, indices, edge ids)``, where ``indices`` are rows of
    ``sketches`` (objects already sketched); ``weights`` the edges' weights on
    the backend. Round 0 holds the leaves and every later round only objects
    with inputs, so either all members consume objects or none does.
    """
    code = int(batch._module_codes[members[0]])
    name = batch._module_names[code]
    block = batch._attributes[code]
    dim = block.shape[1]
    x = to_backend(take_rows(backend, block, batch._rows[members]), backend,
                   dtype)
    subspace = matrices.matrix(name, "A", dim + 1, dtype=dtype, backend=backend)
    # A_M [x; 1] for the whole run, then N_{M,s} x per slot.
    value = x @ subspace[:, :dim].T
    value += subspace[:, dim]
    for lo, hi in zip(slot_runs, [*slot_runs[1:].tolist(), members.size]):
        slot_key = batch._slot_keys[int(batch._slot_codes[members[lo]])]
        node = matrices.matrix(name, "N", dim, slot=slot_key, dtype=dtype,
                               backend=backend)
        value[lo:hi, ...] += x[lo:hi, ...] @ node.T
    indptr, indices, edge_ids, input_weight = inputs
    n_inputs = indptr[members + 1] - indptr[members]
    if n_inputs[0]:
        # sum_c w_c s(c) per member: gather the inputs, weigh, add by runs.
        if n_inputs.max() == 1:  # one input each (chains): no runs to add
            edge = indptr[members]
        else:
            _, edge = expand(indptr, edge_ids, members)
        consumed = take_rows(backend, sketches, indices[edge])
        consumed *= take_rows(backend, input_weight, edge)[:, None]
        if n_inputs.max() > 1:
            starts = np.concatenate(([0], np.cumsum(n_inputs)[:-1]))
            consumed = segment_sum(backend, consumed, starts)
        value += matrices.apply(name, "C", consumed, dtype=dtype, backend=backend)
    if matrices.wrapper != "none":
        value += matrices.apply(name, "R", value, dtype=dtype, backend=backend)
        value *= 0.5
    return value


def _sketch_chunk(batch, matrices, dtype, backend):
    """Sketches of every record of ``batch``, all objects held at once."""
    d = matrices.sketch_dim
    n = batch.n_objects
    parent, child = batch._parent, batch._child
    # One ordering of all objects by (round, module, slot), computed once: a
    # run of equal (round, module) shares its matrices, a run of equal slot
    # its N; a deep record then costs a few array operations per round. The
    # sketches are held in that order, so each run writes one slice.
    levels, _ = topological_levels(n, child, parent)
    round_of = np.repeat(np.arange(len(levels)), [level.size for level in levels])
    objects = np.concatenate(levels) if levels else np.zeros(0, np.intp)
    module, slot = batch._module_codes[objects], batch._slot_codes[objects]
    order = np.lexsort((slot, module, round_of))
    objects, module, slot, round_of = (a[order] for a in (objects, module, slot,
                                                          round_of))
    position = np.empty(n, np.intp)
    position[objects] = np.arange(n)
    by_parent = np.argsort(parent, kind="stable")
    indptr, indices = children_csr(n, parent, child)
    weight = to_backend(batch._weight, backend, dtype)
    inputs = (indptr, position[indices], np.arange(indices.size),
              take_rows(backend, weight, child[by_parent]))
    new_module = np.concatenate(([True], (round_of[1:] != round_of[:-1])
                                 | (module[1:] != module[:-1])))
    slot_starts = np.flatnonzero(new_module | np.concatenate(
        ([True], slot[1:] != slot[:-1])))
    module_starts = np.flatnonzero(new_module)
    module_stops = np.append(module_starts[1:], n)
    first_slot = np.searchsorted(slot_starts, module_starts)
    last_slot = np.append(first_slot[1:], slot_starts.size)
    sketches = zeros(backend, (n, d), dtype)
    # BLAS threads per run, or once for all when every run is small (deep
    # narrow records: thousands of runs of a few objects).
    largest = int((module_stops - module_starts).max(initial=0))
    per_run = 2 * largest * d * d >= SMALL_PRODUCT_FLOPS
    with nullcontext() if per_run else one_blas_thread():
        for lo, hi, a, b in zip(module_starts.tolist(), module_stops.tolist(),
                                first_slot.tolist(), last_slot.tolist()):
            members = objects[lo:hi]
            with (blas_threads_for(2 * members.size * d * d) if per_run
                  else nullcontext()):
                sketches[lo:hi, ...] = _sketch_run(batch, matrices, dtype, backend,
                                              members, slot_starts[a:b] - lo,
                                              inputs, sketches)
    roots = batch._roots
    weighted = take_rows(backend, sketches, position[roots])
    weighted *= take_rows(backend, weight, roots)[:, None]
    return sum_rows_by(backend, weighted, batch._record[roots], batch.n_records)


def levelwise_sketch(batch, matrices, dtype, backend=NUMPY):
    """Sketch a validated batch by the batched recursion, chunked by records.

    Returns an array of shape (n_records, d) in ``dtype`` on ``backend``;
    trusts its input.
    """
    if not batch.n_objects:
        return zeros(backend, (batch.n_records, matrices.sketch_dim), dtype)
    sizes = np.bincount(batch._record, minlength=batch.n_records)
    # Chunk boundaries: whole records, about _CHUNK_OBJECTS objects each.
    ends = np.searchsorted(np.cumsum(sizes), np.arange(
        _CHUNK_OBJECTS, sizes.sum() + _CHUNK_OBJECTS, _CHUNK_OBJECTS), "left") + 1
    bounds = np.unique(np.r_[0, np.minimum(ends, batch.n_records), batch.n_records])
    if bounds.size == 2:
        return _sketch_chunk(batch, matrices, dtype, backend)
    return concat_rows(backend, [
        _sketch_chunk(batch.take(np.arange(lo, hi)), matrices, dtype, backend)
        for lo, hi in zip(bounds[:-1], bounds[1:])])
