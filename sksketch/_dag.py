"""Vectorized graph helpers over objects stored as edge lists.

Objects are numbered ``0..n_objects-1`` (within one record, or across a whole
batch) and edges are ``(parent, child)`` index pairs, parent consuming child.
Each helper is one pass of NumPy work per DAG level, never one per object, so
that records and batches share them.
"""

import numpy as np


def children_csr(n_objects, parent, child):
    """CSR form of the edges: children of ``i`` are ``indices[indptr[i]:indptr[i+1]]``.

    A stable sort keeps each parent's children in the order they were listed.
    """
    order = np.argsort(parent, kind="stable")
    indptr = np.zeros(n_objects + 1, dtype=np.intp)
    np.cumsum(np.bincount(parent, minlength=n_objects), out=indptr[1:])
    return indptr, child[order]


def expand(indptr, indices, nodes):
    """Children of every node in ``nodes``, with the position of their parent.

    Returns ``(source, children)``: ``children[j]`` is a child of
    ``nodes[source[j]]``.
    """
    starts = indptr[nodes]
    counts = indptr[nodes + 1] - starts
    source = np.repeat(np.arange(nodes.size), counts)
    offsets = np.arange(source.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return source, indices[np.repeat(starts, counts) + offsets]


def check_acyclic(n_objects, parent, child):
    """Return an object on a cycle, or -1 when the edges form a DAG.

    Kahn's algorithm a level at a time: peel the objects nothing unpeeled
    consumes; whatever is left holds a cycle.
    """
    in_degree = np.bincount(child, minlength=n_objects)
    indptr, indices = children_csr(n_objects, parent, child)
    frontier = np.flatnonzero(in_degree == 0)
    n_peeled = frontier.size
    while frontier.size:
        _, kids = expand(indptr, indices, frontier)
        released = np.bincount(kids, minlength=n_objects)
        in_degree -= released
        frontier = np.flatnonzero((released > 0) & (in_degree == 0))
        n_peeled += frontier.size
    if n_peeled == n_objects:
        return -1
    # Every object left has a parent left: walk up parents until one repeats.
    left = in_degree > 0
    node = int(np.flatnonzero(left)[0])
    seen = set()
    while node not in seen:
        seen.add(node)
        parents = parent[(child == node) & left[parent]]
        node = int(parents[0])
    return node


def rank_within_groups(keys):
    """Rank of each element among the earlier elements with an equal key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    boundaries = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    sizes = np.diff(np.concatenate((starts, [keys.size])))
    ranks = np.empty(keys.size, dtype=np.intp)
    ranks[order] = np.arange(keys.size) - np.repeat(starts, sizes)
    return ranks


def default_slot_ordinals(n_objects, module, parent, child, group=None):
    """Default slot of every object (SPEC section 1).

    An object's default slot is its ordinal among the same-module inputs of
    its first consumer (lowest object index, then list order). An object that
    nothing consumes gets its ordinal among the same-module unconsumed objects
    of its group (``group``: the record index in a batch, default one group).
    """
    ordinals = np.zeros(n_objects, dtype=np.intp)
    n_modules = int(module.max()) + 1 if n_objects else 1
    if parent.size:
        order = np.argsort(parent, kind="stable")
        first_parent, kid = parent[order], child[order]
        edge_rank = rank_within_groups(first_parent * n_modules + module[kid])
        consumed, first_edge = np.unique(kid, return_index=True)
        ordinals[consumed] = edge_rank[first_edge]
    unconsumed = np.ones(n_objects, dtype=bool)
    unconsumed[child] = False
    free = np.flatnonzero(unconsumed)
    group_key = 0 if group is None else group[free] * n_modules
    ordinals[free] = rank_within_groups(group_key + module[free])
    return ordinals
