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
from scipy.sparse import csr_array

from ._dag import children_csr, expand, topological_levels
from ._threads import SMALL_PRODUCT_FLOPS, blas_threads_for, one_blas_thread

# Objects whose d-vectors the engine holds at once (records are taken in
# chunks of about this many objects; a larger record is taken whole).
_CHUNK_OBJECTS = 2**14


def _sketch_run(batch, matrices, dtype, members, slot_runs, inputs, sketches):
    """Sketches of ``members``, objects of one module whose inputs are done.

    ``slot_runs``: start offsets (into ``members``) of their runs of equal
    slots, members being sorted by slot. ``inputs``: the objects' inputs in
    CSR form, ``(indptr, indices, edge ids, weights)``.
    """
    code = int(batch._module_codes[members[0]])
    name = batch._module_names[code]
    block = batch._attributes[code]
    dim = block.shape[1]
    x = block[batch._rows[members]].astype(dtype, copy=False)
    subspace = matrices.matrix(name, "A", dim + 1, dtype=dtype)
    # A_M [x; 1] for the whole run, then N_{M,s} x per slot.
    value = x @ subspace[:, :dim].T
    value += subspace[:, dim]
    for lo, hi in zip(slot_runs, [*slot_runs[1:].tolist(), members.size]):
        slot_key = batch._slot_keys[int(batch._slot_codes[members[lo]])]
        node = matrices.matrix(name, "N", dim, slot=slot_key, dtype=dtype)
        value[lo:hi] += x[lo:hi] @ node.T
    indptr, indices, edge_ids, input_weight = inputs
    n_inputs = indptr[members + 1] - indptr[members]
    consumers = np.flatnonzero(n_inputs)
    if consumers.size:
        # sum_c w_c s(c) per consumer: gather the inputs, weigh, add by runs.
        if n_inputs.max() == 1:  # one input each (chains): no runs to add
            edge = indptr[members[consumers]]
            consumed = sketches[indices[edge]]
            consumed *= input_weight[edge, None]
        else:
            _, edge = expand(indptr, edge_ids, members[consumers])
            consumed = sketches[indices[edge]]
            consumed *= input_weight[edge, None]
            starts = np.concatenate(([0], np.cumsum(n_inputs[consumers])[:-1]))
            consumed = np.add.reduceat(consumed, starts, axis=0)
        value[consumers] += matrices.apply(name, "C", consumed, dtype=dtype)
    if matrices.wrapper != "none":
        value += matrices.apply(name, "R", value, dtype=dtype)
        value *= 0.5
    return value


def _sketch_chunk(batch, matrices, dtype):
    """Sketches of every record of ``batch``, all objects held at once."""
    d = matrices.sketch_dim
    n = batch.n_objects
    parent, child = batch._parent, batch._child
    weight = batch._weight.astype(dtype, copy=False)
    by_parent = np.argsort(parent, kind="stable")
    indptr, indices = children_csr(n, parent, child)
    inputs = (indptr, indices, np.arange(indices.size), weight[child[by_parent]])
    sketches = np.empty((n, d), dtype)
    # One ordering of all objects by (round, module, slot), computed once: a
    # run of equal (round, module) shares its matrices, a run of equal slot
    # its N; a deep record then costs a few array operations per round.
    levels, _ = topological_levels(n, child, parent)
    round_of = np.repeat(np.arange(len(levels)), [level.size for level in levels])
    objects = np.concatenate(levels) if levels else np.zeros(0, np.intp)
    module, slot = batch._module_codes[objects], batch._slot_codes[objects]
    order = np.lexsort((slot, module, round_of))
    objects, module, slot, round_of = (a[order] for a in (objects, module, slot,
                                                          round_of))
    new_module = np.concatenate(([True], (round_of[1:] != round_of[:-1])
                                 | (module[1:] != module[:-1])))
    slot_starts = np.flatnonzero(new_module | np.concatenate(
        ([True], slot[1:] != slot[:-1])))
    module_starts = np.flatnonzero(new_module)
    module_stops = np.append(module_starts[1:], n)
    first_slot = np.searchsorted(slot_starts, module_starts)
    last_slot = np.append(first_slot[1:], slot_starts.size)
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
                sketches[members] = _sketch_run(batch, matrices, dtype, members,
                                                slot_starts[a:b] - lo, inputs,
                                                sketches)
    roots = batch._roots
    gather = csr_array((weight[roots], (batch._record[roots], roots)),
                       shape=(batch.n_records, n))
    return gather @ sketches


def levelwise_sketch(batch, matrices, dtype):
    """Sketch a validated batch by the batched recursion, chunked by records.

    Returns an array of shape (n_records, d) in ``dtype``; trusts its input.
    """
    out = np.zeros((batch.n_records, matrices.sketch_dim), dtype)
    if not batch.n_objects:
        return out
    sizes = np.bincount(batch._record, minlength=batch.n_records)
    # Chunk boundaries: whole records, about _CHUNK_OBJECTS objects each.
    ends = np.searchsorted(np.cumsum(sizes), np.arange(
        _CHUNK_OBJECTS, sizes.sum() + _CHUNK_OBJECTS, _CHUNK_OBJECTS), "left") + 1
    bounds = np.unique(np.r_[0, np.minimum(ends, batch.n_records), batch.n_records])
    if bounds.size == 2:
        out[:] = _sketch_chunk(batch, matrices, dtype)
        return out
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out[lo:hi] = _sketch_chunk(batch.take(np.arange(lo, hi)), matrices, dtype)
    return out
