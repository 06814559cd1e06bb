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
    # Child j of node i sits at starts[i] + j: j counts from where i's run begins.
    position = np.arange(source.size)
    position += np.repeat(starts - np.cumsum(counts) + counts, counts)
    return source, indices[position]


def topological_levels(n_objects, before, after):
    """Objects in rounds: each object comes after every ``before`` pointing to it.

    Edges are ``before[k] -> after[k]``. Round 0 holds the objects no edge
    points to; round ``r`` those whose predecessors all lie in earlier rounds
    (Kahn's algorithm, a round at a time). Each round touches only the
    successors of the previous one, so a chain of ``D`` objects costs
    ``O(D)``, not ``O(D * n_objects)``. Objects on or below a cycle are in no
    round.

    Returns
    -------
    levels : list of ndarray of int
        The rounds, each sorted.
    waiting : ndarray of int of shape (n_objects,)
        Predecessors left unpeeled: non-zero exactly for objects in no round.
    """
    indptr, indices = children_csr(n_objects, before, after)
    waiting = np.bincount(after, minlength=n_objects)
    frontier = np.flatnonzero(waiting == 0)
    levels = []
    while frontier.size:
        levels.append(frontier)
        if frontier.size == 1:  # narrow rounds (chains): no sort needed
            node = int(frontier[0])
            successors = np.unique(indices[indptr[node]:indptr[node + 1]])
            waiting[successors] -= 1
        else:
            _, successors = expand(indptr, indices, frontier)
            successors, released = np.unique(successors, return_counts=True)
            waiting[successors] -= released
        frontier = successors[waiting[successors] == 0]
    return levels, waiting


def check_acyclic(n_objects, parent, child):
    """Return an object on a cycle, or -1 when the edges form a DAG.

    Peels the objects nothing unpeeled consumes (:func:`topological_levels`);
    whatever is left holds a cycle.
    """
    levels, waiting = topological_levels(n_objects, parent, child)
    if sum(level.size for level in levels) == n_objects:
        return -1
    # Every object left has a parent left: walk up parents until one repeats.
    left = waiting > 0
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
    """Default slot of every object (see the user guide, Records).

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
