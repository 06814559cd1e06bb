"""Sketches-only recovery for one chain per record: quadrics (generalized PCA).

When every record activates one root-to-leaf chain, the sketches lie on a
union of chain subspaces, each with a block of its own (its leaf): degree-2
polynomials vanish on the union, their gradients at a sketch span the normal
space of its subspace, and intersecting the subspaces gives the tree. Fast
and exact there; where the quadrics cannot split the sketches (several chains
per record, trees, too few sketches) it says so and the learner falls back
to the lattice of supports (``_network_sketches``).
"""

import numpy as np
from joblib import Parallel, delayed
from scipy.sparse.csgraph import connected_components
from sklearn.utils import Bunch

from ._network import _complement, _intersection, _orthonormal, _stack, _wiring

# A group whose peeling needs more subspaces than this is not a union of a
# few chain subspaces: the quadrics are spurious there; give up on it.
_MAX_SUBSPACES = 64


def quadrics_fit(S, max_depth, alpha, n_subsample, rng, n_jobs, give_up=False):
    """Blocks and wiring from the chain subspaces.

    With ``give_up``, stops at the first group the quadrics cannot split and
    returns only ``{"unsplit": [...]}`` (the caller turns to the lattice and
    would discard the rest: peeling and refining cost more than the test).
    """
    norms = np.linalg.norm(S, axis=1)
    nonzero = np.flatnonzero(norms > 0)
    if nonzero.size < 2:
        raise ValueError(f"need at least 2 non-zero sketches; got {nonzero.size}")
    found = _chain_subspaces(S[nonzero], alpha, n_subsample, rng, n_jobs, give_up)
    if found is None or isinstance(found, list):
        return {"unsplit": found or []}
    bases, residuals, n_iter, unsplit = found
    nodes = _subspace_tree(bases, alpha, max_depth)
    component_rows, block_info, edges = [], [], set()
    start = 0
    for name, parent, basis in nodes:
        component_rows.append(basis.T)
        block_info.append(Bunch(path=tuple(name.split("/")), slots=None,
                                columns=slice(start, start + basis.shape[1])))
        start += basis.shape[1]
        if parent is not None:
            edges.add((parent, name))
    # residuals are relative to each sketch's norm
    error = np.sqrt(np.sum((residuals * norms[nonzero]) ** 2)) / np.linalg.norm(S)
    return {"components_": _stack(component_rows, S.shape[1]), "blocks_": block_info,
            "ambiguous_": [], **_wiring([n for n, _, _ in nodes], edges),
            "n_iter_": n_iter, "error_": float(error), "unsplit": unsplit}


# Largest number of quadratic monomials (dim (dim + 1) / 2) the vanishing
# polynomials are fitted over: 2,145 is a 65-dimensional group.
_MAX_MONOMIALS = 2500


def _chain_subspaces(S, alpha, n_subsample, rng, n_jobs=None, give_up=False):
    """The subspaces the sketches lie in: one per set of co-activated paths.

    1. Groups of independent subspaces (paths with no block in common, e.g.
       different output modules) separate exactly by the shape-interaction
       matrix ``U U^T`` of the sketches, which is zero across them.
    2. Within a group the subspaces share prefix blocks, so sparse
       self-expression mixes them. But each has blocks of its own, and then
       degree-2 polynomials vanish on their union: at a point, the gradients
       of those quadrics span the normal space of the point's own subspace
       (generalized PCA). One point per subspace suffices: every sketch with
       no residual on its subspace belongs to it.
    3. All sketches go to their nearest subspace, refitted until stable.

    Returns ``(bases, residuals, n_iter, unsplit)``: orthonormal bases of
    shape (d, dim), each sketch's relative distance to its subspace, and
    ``(dim, n_sketches, reason)`` for every group of more than one dimension
    that no quadric could split (learned as one subspace). With ``give_up``,
    returns ``unsplit`` alone as soon as a group's quadrics fail (before any
    peeling), and None when none fails but the peeling of a group does.
    """
    n = S.shape[0]
    sample = np.sort(rng.choice(n, size=min(n, n_subsample), replace=False))
    span = _orthonormal(S[sample].T, alpha)
    coordinates = S @ span
    # Group spans from the subsample; then every sketch joins its group, so
    # that each group has enough points for its quadrics.
    group_spans = [_orthonormal(coordinates[sample[g]].T, alpha)
                   for g in _independent_groups(coordinates[sample], alpha)]
    membership = _nearest_subspace(coordinates, group_spans)
    # Groups are independent: threads (BLAS releases the GIL), each with its
    # own seed so that the result does not depend on n_jobs.
    seeds = rng.randint(2**31 - 1, size=len(group_spans))
    locals_ = [coordinates[membership == g] @ group_span
               for g, group_span in enumerate(group_spans)]
    parallel = Parallel(n_jobs=n_jobs, prefer="threads")
    if give_up:
        # One group after the other, widest first (where several paths per
        # record fill the span), stopping at the first the quadrics fail on:
        # the peeling of the others would be discarded.
        quadrics = [None] * len(locals_)
        for g in sorted(range(len(locals_)), key=lambda g: -locals_[g].shape[1]):
            quadrics[g] = _group_quadrics(locals_[g], alpha, seeds[g])
            if quadrics[g][1] is not None:
                return [(locals_[g].shape[1], locals_[g].shape[0], quadrics[g][1])]
    else:
        quadrics = parallel(delayed(_group_quadrics)(local, alpha, seed)
                            for local, seed in zip(locals_, seeds))
    found = parallel(delayed(_group_subspaces)(local, alpha, *fitted)
                     for local, fitted in zip(locals_, quadrics))
    if give_up and any(reason is not None for _, reason in found):
        return None
    bases = [span @ group_span @ basis
             for group_span, (local_bases, _) in zip(group_spans, found)
             for basis in local_bases]
    unsplit = [(group_span.shape[1], int(np.sum(membership == g)), reason)
               for g, (group_span, (_, reason)) in enumerate(zip(group_spans, found))
               if reason is not None]
    # K-subspaces refinement on every sketch.
    labels, n_iter = None, 0
    while n_iter < 10:
        n_iter += 1
        residuals = np.column_stack([_residuals(S, b) for b in bases])
        new = np.argmin(residuals, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        used = np.unique(new)  # drop subspaces no sketch is nearest to
        labels = np.searchsorted(used, new)
        bases = [_orthonormal(S[labels == c].T, alpha) for c in range(used.size)]
    # Exact distances for the final labels: ||x||^2 - ||B^T x||^2 above
    # cancels to sqrt(machine epsilon) for points on their subspace.
    distances = np.zeros(n)
    for c, basis in enumerate(bases):
        members = S[labels == c]
        distances[labels == c] = np.linalg.norm(
            members - (members @ basis) @ basis.T, axis=1)
    return bases, distances / np.linalg.norm(S, axis=1), n_iter, unsplit


def _group_quadrics(local, alpha, seed):
    """One group's vanishing quadrics: ``(quadrics, reason, rng)``, the
    group's random state carried on to its peeling."""
    rng = np.random.RandomState(seed)
    return (*_vanishing_quadrics(local, alpha, rng), rng)


def _group_subspaces(local, alpha, quadrics, reason, rng):
    """Peel one group's subspaces: a random sketch's, then its inliers' out.

    Returns ``(bases, reason)``: ``reason`` says why no quadric vanishes on
    a group of more than one dimension (then it is one subspace), else None.
    """
    bases = []
    unassigned = np.arange(local.shape[0])
    while unassigned.size:
        if len(bases) >= _MAX_SUBSPACES:
            return bases, (f"the quadrics do not split it (more than "
                           f"{_MAX_SUBSPACES} subspaces)")
        seed_point = local[unassigned[rng.randint(unassigned.size)]]
        basis = _subspace_at(seed_point, quadrics, alpha)
        inside = _residuals(local[unassigned], basis) <= np.sqrt(alpha)
        inside |= np.all(local[unassigned] == seed_point, axis=1)
        unassigned = unassigned[~inside]
        bases.append(basis)
    return bases, reason


def _independent_groups(points, alpha):
    """Connected components of the shape-interaction matrix ``U U^T``."""
    u = _orthonormal(points, alpha)  # left singular vectors: one row per point
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), np.finfo(float).tiny)
    interaction = np.abs(u @ u.T) > np.sqrt(alpha)  # cosines: 0 across groups
    n_groups, labels = connected_components(interaction, directed=False)
    return [np.flatnonzero(labels == g) for g in range(n_groups)]


def _vanishing_quadrics(points, alpha, rng):
    """Symmetric matrices ``Q`` with ``x^T Q x = 0`` on every point.

    The quadrics that vanish on the points vanish on their subspaces only
    once the points fill the subspaces' quadratic images: when there are more
    points than the rank of their Veronese embedding. Otherwise none is
    returned. Returns ``(quadrics, reason)``: why none was found for points
    of two or more dimensions, else None.
    """
    dim = points.shape[1]
    n_monomials = dim * (dim + 1) // 2
    if dim < 2:
        return [], None
    if n_monomials > _MAX_MONOMIALS:
        return [], (f"too wide for quadrics over its {n_monomials} monomials "
                    f"(at most {_MAX_MONOMIALS})")
    take = min(points.shape[0], 4 * n_monomials)
    sample = points[rng.choice(points.shape[0], take, replace=False)]
    sample = sample / np.linalg.norm(sample, axis=1, keepdims=True)
    upper = np.triu_indices(dim)
    veronese = sample[:, upper[0]] * sample[:, upper[1]]
    eigenvalues, eigenvectors = np.linalg.eigh(veronese.T @ veronese)
    vanishing = eigenvalues <= alpha**2 * eigenvalues[-1]
    rank = n_monomials - int(vanishing.sum())
    if take < rank + max(10, rank // 10):  # every point independent: spurious
        return [], (f"too few sketches for its quadrics ({take} for "
                    f"{n_monomials} quadratic monomials)")
    if not vanishing.any():
        return [], ("the sketches fill its span: no union of smaller subspaces "
                    "(records activating several chains, or paths that always "
                    "fire together)")
    null = eigenvectors[:, vanishing]
    quadrics = np.zeros((null.shape[1], dim, dim))
    quadrics[:, upper[0], upper[1]] = null.T
    return 0.5 * (quadrics + quadrics.transpose(0, 2, 1)), None


def _subspace_at(point, quadrics, alpha):
    """Basis of the subspace through ``point``: the complement of its normals."""
    dim = point.size
    if len(quadrics) == 0:
        return np.eye(dim)
    normals = _orthonormal((quadrics @ point).T, np.sqrt(alpha))
    if not normals.shape[1]:
        return np.eye(dim)
    u, s, _ = np.linalg.svd(normals, full_matrices=True)
    return u[:, normals.shape[1]:]


def _residuals(points, basis):
    """Relative distance of each point to a subspace (orthonormal basis)."""
    squared = np.einsum("ij,ij->i", points, points)
    projected = points @ basis
    inside = np.einsum("ij,ij->i", projected, projected)
    return np.sqrt(np.maximum(squared - inside, 0) / np.maximum(squared, 1e-300))


def _nearest_subspace(S, bases):
    return np.argmin(np.column_stack([_residuals(S, b) for b in bases]), axis=1)


def _subspace_tree(bases, alpha, max_depth):
    """Intersect cluster subspaces into a tree of path blocks.

    Clusters that share more than their parent's intersection belong to one
    child; a node's block is its clusters' intersection minus the parent's.
    Returns ``[(name, parent_name, basis)]`` with names like ``"n0/n0.1"``.
    """
    nodes = []
    d = bases[0].shape[0] if bases else 0

    def recurse(members, parent_basis, parent_name, depth):
        if max_depth is not None and depth >= max_depth:
            return
        q = parent_basis.shape[1]
        n = len(members)
        shared = np.zeros((n, n), dtype=bool)
        for a in range(n):
            for b in range(a + 1, n):
                common = _intersection(bases[members[a]], bases[members[b]], alpha)
                dim = common.shape[1]
                shared[a, b] = shared[b, a] = dim > q
        _, groups = connected_components(shared, directed=False)
        for g in np.unique(groups):
            group = [members[i] for i in np.flatnonzero(groups == g)]
            basis = bases[group[0]]
            for other in group[1:]:
                basis = _intersection(basis, bases[other], alpha)
            block = _complement(basis, parent_basis, alpha)
            if not block.shape[1]:
                continue
            index = len([n for n in nodes if n[1] == parent_name])
            label = (f"n{index}" if parent_name is None
                     else f"{parent_name.split('/')[-1]}.{index}")
            name = label if parent_name is None else f"{parent_name}/{label}"
            nodes.append((name, parent_name, block))
            # only while the shared span grows (rounding can make a block
            # of a group that shares nothing more: no end otherwise)
            if len(group) > 1 and basis.shape[1] > q:
                recurse(group, basis, name, depth + 1)

    recurse(list(range(len(bases))), np.zeros((d, 0)), None, 0)
    return nodes
