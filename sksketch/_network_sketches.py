"""Network recovery from sketches alone: the lattice of path supports.

A sketch is ``x = sum_P G_P z_P`` over the paths ``P`` its record activates.
When the blocks are linearly independent (their widths add up to at most
``d``, as random blocks are), the sketches span ``r = sum_P width(P)``
dimensions and, in that span, every path has **dual vectors** ``u`` with
``u^T x = 0`` for every sketch whose record does not activate the path.
Such a ``u`` is a sparse vector of the sketches' column space: its zeros are
the records without the path. So the method looks for the vectors ``u`` with
the most exact zeros ``x_i^T u = 0`` (dual principal component pursuit: an
iteratively reweighted least-squares ``min ||X u||_1``), one after the other,
each outside the span of the ones found before, and then inside each one's
span for rarer ones:

- a zero set ``Z`` (records without a node) gives the node's dual space
  ``F = {u : x_i^T u = 0 for i in Z}``: its own duals and its descendants';
- nodes ordered by support inclusion form the tree of paths;
- a node's block is the part of ``span(node and its ancestors)`` orthogonal
  to its ancestors' span, where ``span(node and ancestors)`` is the
  orthogonal complement of the dual spaces of every other node. A child's
  block is only identifiable modulo its ancestors' (its coefficients can
  absorb theirs), hence that convention.

Paths that always fire together share one support and are learned as one
node; the learner reports what it cannot identify instead of guessing.
"""

import numpy as np

# A node needs this many more zeros than its parent, in the sketches one
# search looks at, on top of the search space's dimension (any vector of an
# m-dimensional space vanishes on m - 1 generic sketches).
_MARGIN = 10
# IRLS iterations of one search.
_MAX_ITER = 60
# Starts of one search, when the first finds no node.
_STARTS = 4
# Starts of the self-check's search for a direction that vanishes on many of
# a block's sketches (small searches: a block's own coefficients).
_CHECK_STARTS = 12


def lattice_fit(S, alpha, n_subsample, rng, max_depth=None):
    """Nodes of the support lattice of the sketches ``S`` (rows, non-zero).

    Returns a dict with ``basis`` (d x r, orthonormal span of the sketches),
    ``nodes`` (list of dicts: ``zeros`` bool (n,), ``dual`` r x f), the
    kept tree ``tree`` (list of ``(index, parent_index, block (d x w))``),
    ``active`` (n, n_tree) bool, ``error`` and ``problems`` (list of str).
    """
    n, d = S.shape
    basis = _span(S, alpha)
    r = basis.shape[1]
    X = S @ basis
    norms = np.linalg.norm(X, axis=1)
    X /= norms[:, None]
    problems = []
    if r == 0:
        return {"basis": basis, "tree": [], "active": np.zeros((n, 0), bool),
                "error": 1.0, "problems": ["the sketches are all zero"]}
    nodes = _explore(X, alpha, n_subsample, rng, problems)
    nodes = _complete_unions(X, nodes, alpha, rng)
    nodes = _refine(X, nodes, alpha, n_subsample, rng, problems)
    tree, active = _tree(X, norms, basis, nodes, alpha, max_depth, problems, rng,
                         n_subsample)
    error = _error(S, X, basis, tree, active)
    return {"basis": basis, "tree": tree, "active": active, "error": error,
            "problems": problems}


# -- finding the nodes ---------------------------------------------------------------


def _explore(X, alpha, n_subsample, rng, problems):
    """Every node: search the whole span, then inside each node found."""
    n, r = X.shape
    nodes = {}  # zero set (bytes) -> {"zeros", "dual"}
    root = {"zeros": np.zeros(n, dtype=bool), "dual": np.eye(r)}
    queue = [root]
    seen = set()
    while queue:
        parent = queue.pop(0)
        for child in _children(X, parent, alpha, n_subsample, rng, problems):
            key = np.packbits(child["zeros"]).tobytes()
            if key in seen:
                continue
            seen.add(key)
            nodes[key] = child
            if child["dual"].shape[1] > 1:
                queue.append(child)
    return list(nodes.values())


def _refine(X, nodes, alpha, n_subsample, rng, problems):
    """Search again inside every node that holds others and dimensions of its own.

    Such a node may be a union the search stumbled on (a missed path and
    an unrelated known node) rather than a path: a sparse search in its dual
    space, past the nodes known inside it, finds the missed path, whose
    support is smaller. Unions are then completed again.
    """
    n = X.shape[0]
    keys = {np.packbits(node["zeros"]).tobytes() for node in nodes}
    added = []
    for node in list(nodes):
        inside = [other["dual"] for other in nodes
                  if other is not node and np.all(other["zeros"] | ~node["zeros"])
                  and other["zeros"].sum() > node["zeros"].sum()]
        if not inside:
            continue
        inner = _orth(np.hstack(inside), alpha).shape[1]
        if node["dual"].shape[1] <= inner:
            continue
        for child in _children(X, node, alpha, n_subsample, rng, problems, inside):
            key = np.packbits(child["zeros"]).tobytes()
            if key not in keys and child["zeros"].sum() < n:
                keys.add(key)
                added.append(child)
    if not added:
        return nodes
    return _complete_unions(X, nodes + added, alpha, rng)


def _children(X, parent, alpha, n_subsample, rng, problems, known=()):
    """Nodes with more zeros than ``parent``, found inside its dual space.

    Each search looks for the sparsest ``X F a`` with ``a`` outside the
    span of the nodes already found here; stops when the sparsest vector
    left vanishes only where the parent's do.
    """
    F = parent["dual"]
    m = F.shape[1]
    rows = np.flatnonzero(~parent["zeros"])
    if rows.size > n_subsample:
        rows = np.sort(rng.choice(rows, n_subsample, replace=False))
    Y = X[rows] @ F
    if rows.size < m + _MARGIN:
        if m > 1:
            problems.append(f"too few sketches ({rows.size}) to split a node "
                            f"of {m} dimensions")
        return []
    found, span = [], np.zeros((m, 0))
    if known:
        span = _orth(F.T @ np.hstack(known), alpha)
    while span.shape[1] < m:
        # IRLS finds a local minimum: the best of a few starts
        best, most = None, -1
        for _ in range(_STARTS):
            a = _sparsest(Y, span, alpha, rng)
            if a is not None:
                count = np.count_nonzero(
                    np.abs(Y @ a) <= alpha * np.linalg.norm(Y, axis=1)
                    * np.linalg.norm(a))
                if count > most:
                    best, most = a, count
                if count >= min(m, rows.size // 2) + _MARGIN:
                    break
        a = best
        if a is None:
            break
        values = np.abs(X @ (F @ a))
        zeros = values <= _zero_tolerance(alpha)
        new = zeros & ~parent["zeros"]
        # enough new zeros among the rows searched, beyond chance
        if np.count_nonzero(new[rows]) < min(m, rows.size // 2) + _MARGIN:
            break
        # The dual space from the certain zeros only: a sketch whose part in
        # the node happens to be nearly orthogonal to one dual vector is no
        # zero of the whole dual space.
        certain = values <= alpha * _zero_tolerance(alpha)
        dual = _robust_null(X[_sample(certain, 20 * X.shape[1], rng)], alpha)
        zeros = np.linalg.norm(X @ dual, axis=1) <= _zero_tolerance(alpha)
        local = F.T @ dual
        if np.linalg.norm(F @ local - dual) > np.sqrt(alpha) * np.sqrt(dual.shape[1]):
            break  # numerical trouble: the node is not inside its parent
        if not np.all(np.isfinite(dual)):
            break
        found.append({"zeros": zeros, "dual": dual})
        span = _orth(np.hstack([span, local]), alpha)
    return found


# Rounds of union completion, and the most candidate unions one round tests.
_UNION_ROUNDS = 4
_MAX_UNIONS = 2000


def _complete_unions(X, nodes, alpha, rng):
    """Add the nodes whose support is a union of other nodes' supports.

    A path that most records under its parent activate is a dense vector,
    which the l1 search misses; but a record through a path continues into
    one of its children, so the path's support is the union of theirs. Every
    union of two nodes' supports (neither inside the other) is a candidate,
    smallest first: its dual space ``F`` (null space of the sketches outside
    the union) is closed, and it is a node if ``F`` holds dimensions beyond
    the nodes already inside the union. Testing all pairs, not only the
    children of one parent, matters: a union the search found by chance
    (a path and an unrelated leaf) hides the siblings' common parent.
    Unions of unions come from the next round.
    """
    n, r = X.shape
    keys = {np.packbits(node["zeros"]).tobytes() for node in nodes}
    for _ in range(_UNION_ROUNDS):
        zeros = np.array([node["zeros"] for node in nodes], dtype=bool)
        zeros = zeros.reshape(-1, n)
        # a inside b (support of a within support of b): zeros of b in a's
        within = _inside(zeros)
        candidates = {}
        for a in range(len(nodes)):
            for b in range(a + 1, len(nodes)):
                if within[a, b] or within[b, a]:
                    continue
                union_zeros = zeros[a] & zeros[b]
                if not union_zeros.any():
                    continue
                key = np.packbits(union_zeros).tobytes()
                if key not in keys and key not in candidates:
                    candidates[key] = union_zeros
        # smallest unions first, so that the nodes inside a union are known
        # when it is tested
        order = sorted(candidates.values(), key=lambda z: -int(z.sum()))
        added = False
        for union_zeros in order[:_MAX_UNIONS]:
            key = np.packbits(union_zeros).tobytes()
            if key in keys:
                continue
            keys.add(key)
            dual = _robust_null(X[_sample(union_zeros, 6 * r, rng)], alpha)
            if not dual.shape[1] or not np.all(np.isfinite(dual)):
                continue
            inner = [node["dual"] for node in nodes
                     if np.all(node["zeros"] | ~union_zeros)]
            inner_dim = _orth(np.hstack(inner), alpha).shape[1] if inner else 0
            if dual.shape[1] <= inner_dim:
                continue
            # the closure: every sketch the dual space vanishes on (one pass
            # over the sketches, for the accepted unions only)
            closed = np.linalg.norm(X @ dual, axis=1) <= _zero_tolerance(alpha)
            if np.any(union_zeros & ~closed):
                continue  # too few sketches in the sample to pin the dual down
            closed_key = np.packbits(closed).tobytes()
            if closed_key != key and closed_key in keys:
                continue
            keys.add(closed_key)
            nodes = nodes + [{"zeros": closed, "dual": dual}]
            added = True
        nodes, met = _complete_intersections(X, nodes, keys, alpha)
        if not added and not met:
            break
    return nodes


def _complete_intersections(X, nodes, keys, alpha):
    """Add the nodes whose dual space is the meet of two nodes' dual spaces.

    The dual spaces of the lattice are closed under intersection: nodes
    ``P + Q`` and ``P + R`` (unions a search stumbled on, around a path
    ``P`` it missed) meet in ``P``'s dual space. A meet is tested only when
    it holds dimensions that no node inside both already accounts for.
    """
    n = X.shape[0]
    zeros = np.array([node["zeros"] for node in nodes], dtype=bool).reshape(-1, n)
    contains = _inside(zeros)
    added = []
    for a in range(len(nodes)):
        for b in range(a + 1, len(nodes)):
            if contains[a, b] or contains[b, a]:
                continue
            meet = _meet(nodes[a]["dual"], nodes[b]["dual"], alpha)
            if not meet.shape[1]:
                continue
            # nodes inside both: their supports within both supports
            inner = [nodes[c]["dual"] for c in range(len(nodes))
                     if contains[c, a] and contains[c, b]]
            inner_dim = _orth(np.hstack(inner), alpha).shape[1] if inner else 0
            if meet.shape[1] <= inner_dim:
                continue
            closed = np.linalg.norm(X @ meet, axis=1) <= _zero_tolerance(alpha)
            key = np.packbits(closed).tobytes()
            if key in keys or closed.all():
                continue
            keys.add(key)
            added.append({"zeros": closed, "dual": meet})
    return nodes + added, bool(added)


def _inside(zeros):
    """``inside[a, b]``: node a's support within node b's (b's zeros in a's)."""
    # float products: BLAS, and exact (counts stay far below 2**53)
    outside = zeros.astype(np.float64) @ (~zeros).T.astype(np.float64)
    return outside.T == 0


def _meet(a, b, alpha):
    """Orthonormal basis of span(a) ∩ span(b), both orthonormal."""
    u, s, _ = _svd(a.T @ b)
    return a @ u[:, :s.size][:, s > 1 - np.sqrt(alpha)]


def _sparsest(Y, span, alpha, rng, power=1):
    """``argmin ||Y a||_1`` over ``a`` with unit component outside ``span``.

    Iteratively reweighted least squares; the component of ``a`` inside
    ``span`` is free (a Schur complement eliminates it). Returns the
    polished ``a`` (exactly null on its zero rows) or None.
    """
    # Whiten: the l1 norm is not invariant to the data's conditioning, and
    # directions of small variance (a deep path's weight products) would
    # win without any zeros. Zeros are invariant.
    values, vectors = np.linalg.eigh(Y.T @ Y)
    values = np.maximum(values, alpha**2 * max(values[-1], 1e-300))
    whiten = vectors / np.sqrt(values)
    a = _sparsest_white(Y @ whiten, np.linalg.solve(whiten, span), alpha, rng,
                        power)
    if a is None or not np.all(np.isfinite(a)):
        return None
    return whiten @ a


def _sparsest_white(Y, span, alpha, rng, power=1):
    m = Y.shape[1]
    span = _orth(span, alpha) if span.shape[1] else span
    g = span.shape[1]
    if g:
        complement = _null(span.T, alpha)
        frame = np.hstack([span, complement])
    else:
        frame = np.eye(m)
    Yf = Y @ frame
    row_norms = np.maximum(np.linalg.norm(Yf, axis=1), 1e-300)
    v = rng.standard_normal(m - g)
    a = np.concatenate([np.zeros(g), v / np.linalg.norm(v)])
    previous = None
    for iteration in range(_MAX_ITER):
        residual = np.abs(Yf @ a)
        floor = np.median(residual) * 10.0 ** (-1 - iteration / 2)
        weights = 1.0 / np.maximum(residual, max(floor, 1e-14)) ** power
        gram = Yf.T @ (Yf * weights[:, None])
        a = _constrained_eigvec(gram, g)
        # relative to the row and to a; converged zeros are at rounding level
        zeros = np.abs(Yf @ a) <= alpha * 1e-3 * row_norms * np.linalg.norm(a)
        if (previous is not None and np.array_equal(zeros, previous)
                and floor < alpha**2):
            break
        previous = zeros
    # Polish: the exact null vectors of the zero rows, outside span.
    zero_rows = Yf[previous]
    if not zero_rows.shape[0]:
        return None
    null = _null(zero_rows, alpha)
    outside = null[g:]
    if not null.shape[1] or np.linalg.norm(outside) <= np.sqrt(alpha):
        return None
    u, _, _ = _svd(outside)
    coefficients = np.linalg.lstsq(outside, u[:, 0], rcond=None)[0]
    a = null @ coefficients
    return frame @ (a / np.linalg.norm(a[g:]))


def _constrained_eigvec(gram, g):
    """Minimize ``a^T G a`` with ``||a[g:]|| = 1`` and ``a[:g]`` free."""
    if not g:
        return np.linalg.eigh(gram)[1][:, 0]
    inner, cross, outer = gram[:g, :g], gram[:g, g:], gram[g:, g:]
    ridge = 1e-12 * max(np.trace(inner), 1e-300) * np.eye(g)
    solve = np.linalg.solve(inner + ridge, cross)
    schur = outer - cross.T @ solve
    v = np.linalg.eigh(0.5 * (schur + schur.T))[1][:, 0]
    return np.concatenate([-solve @ v, v])


def _zero_tolerance(alpha):
    return alpha


# -- from nodes to the tree of blocks --------------------------------------------------


def _tree(X, norms, basis, nodes, alpha, max_depth, problems, rng, n_subsample):
    """Order nodes by support, keep those with dimensions of their own."""
    n, r = X.shape
    if not nodes:
        problems.append("no sketch lies in a proper part of the span: one "
                        "block for all")
    zeros = np.array([node["zeros"] for node in nodes], dtype=bool)
    zeros = zeros.reshape(len(nodes), n)
    counts = zeros.sum(axis=1)
    # a is an ancestor of b when a's zeros are a strict subset of b's
    inside = (zeros.astype(np.float64) @ (~zeros).T.astype(np.float64)) == 0
    ancestor = inside & (counts[:, None] < counts[None, :])
    duals = [node["dual"] for node in nodes]
    own = []
    for b in range(len(nodes)):
        below = [duals[c] for c in np.flatnonzero(ancestor[b])]
        below_dim = _orth(np.hstack(below), alpha).shape[1] if below else 0
        own.append(duals[b].shape[1] - below_dim)
    # Nodes whose dual is the sum of their descendants' are unions of
    # supports (e.g. a record through a module always continues to one of
    # its children), not paths of their own -- unless nothing else holds
    # their zeros.
    keep = [i for i in range(len(nodes)) if own[i] > 0]
    # The always-active part: what no node's dual reaches.
    all_duals = _orth(np.hstack(duals), alpha) if duals else np.zeros((r, 0))
    top_dim = r - all_duals.shape[1]
    index = {}
    entries = []  # (node index or -1 for the top, zeros)
    if top_dim > 0:
        entries.append((-1, np.zeros(n, dtype=bool)))
    entries += [(i, zeros[i]) for i in keep]
    # parents: among kept entries, the strict ancestor with the most zeros
    parents = []
    for e, (i, _) in enumerate(entries):
        best, best_count = None, -1
        for f, (j, w) in enumerate(entries):
            if f == e:
                continue
            is_ancestor = (j == -1 and i != -1) or (
                i != -1 and j != -1 and ancestor[j, i])
            if is_ancestor and w.sum() > best_count:
                best, best_count = f, w.sum()
        parents.append(best)
    depth = []
    for e in range(len(entries)):
        k, p = 0, parents[e]
        while p is not None:
            k, p = k + 1, parents[p]
        depth.append(k)
    # parents first
    order = sorted(range(len(entries)), key=lambda e: depth[e])
    position = {e: k for k, e in enumerate(order)}
    entries = [entries[e] for e in order]
    parents = [None if parents[e] is None else position[parents[e]] for e in order]
    depth = [depth[e] for e in order]
    # Span of a node and its ancestors: orthogonal to every other node's duals.
    spans = []
    for i, _ in entries:
        others = [duals[j] for j in range(len(nodes))
                  if i == -1 or not (j == i or ancestor[j, i])]
        others = _orth(np.hstack(others), alpha) if others else np.zeros((r, 0))
        spans.append(_null(others.T, alpha) if others.shape[1] else np.eye(r))
    tree, active_columns = [], []
    top_offset = 1 if top_dim > 0 else 0
    for e, (_, z) in enumerate(entries):
        if max_depth is not None and depth[e] - top_offset >= max_depth:
            continue
        parent_span = spans[parents[e]] if parents[e] is not None else np.zeros((r, 0))
        block = spans[e] - parent_span @ (parent_span.T @ spans[e])
        block = _orth(block, np.sqrt(alpha))
        if not block.shape[1]:
            continue
        index[e] = len(tree)
        tree.append((e, parents[e], basis @ block))
        active_columns.append(~z)
    if max_depth is None:
        _check_blocks(X, basis, tree, active_columns, alpha, rng, n_subsample,
                      problems)
    tree, active_columns = _merge_attribute_blocks(X, norms, tree, active_columns,
                                                   entries, duals, index, alpha,
                                                   problems)
    index = {e: k for k, (e, _, _) in enumerate(tree)}
    tree = [(index[e], index.get(p) if p is not None else None, block)
            for e, p, block in tree]
    assigned = sum(block.shape[1] for _, _, block in tree)
    if max_depth is None and assigned != r:
        problems.append(f"the blocks found hold {assigned} of the sketches' "
                        f"{r} dimensions")
    active = (np.column_stack(active_columns) if active_columns
              else np.zeros((n, 0), dtype=bool))
    return tree, active


def _check_blocks(X, basis, tree, active_columns, alpha, rng, n_subsample,
                  problems):
    """Report blocks that hold more than one path (the self-check).

    A block spanned by one path's columns carries, on the sketches that
    activate it, coefficients that are generic in its ``w`` dimensions: a
    direction of the block vanishes on at most ``w - 1`` of them. A block
    that merges paths ``P`` and ``Q`` (a support the search missed) carries
    on the sketches with ``P`` but not ``Q`` coefficients in a proper
    subspace, so some direction vanishes on all of them. The same sparse
    search, in each block's own coefficients, finds such a direction.
    Residuals cannot tell: merged blocks still span the sketches exactly.
    Likewise a block assigned to sketches that have no part in it (its
    support was not found: the top block of a path most records use) is
    reported. Sketches that use the same set of paths span exactly the
    paths' total width (their coefficients are generic), so each group of
    sketches with the same blocks must span the blocks' total width: a
    merged block breaks this on the groups that lack one of its paths.
    """
    if not tree:
        return
    blocks = [basis.T @ block for _, _, block in tree]
    widths = [block.shape[1] for block in blocks]
    design = np.hstack(blocks)
    if design.shape[1] > X.shape[1]:
        return  # the rank check already reports it
    coefficients = _least_squares(design, X.T).T
    starts = np.concatenate([[0], np.cumsum(widths)])
    merged, unused = 0, 0
    for k, width in enumerate(widths):
        C = coefficients[:, starts[k]:starts[k + 1]]
        # a sketch (unit norm) assigned to the block but without a part in it
        used = np.linalg.norm(C, axis=1) > np.sqrt(alpha)
        if np.count_nonzero(active_columns[k] & ~used) >= _MARGIN:
            unused += 1
        rows = _sample(active_columns[k] & used, n_subsample, rng)
        if width < 2 or rows.size < width + _MARGIN:
            continue
        C = C[rows]
        C = C / np.linalg.norm(C, axis=1, keepdims=True)
        for _ in range(_CHECK_STARTS):
            a = _sparsest(C, np.zeros((width, 0)), alpha, rng, power=2)
            if a is None:
                continue
            zeros = np.abs(C @ a) <= np.sqrt(alpha) * np.linalg.norm(a)
            if np.count_nonzero(zeros) >= width - 1 + _MARGIN:
                merged += 1
                break
    # Sketches with the same blocks span exactly the blocks' total width.
    patterns, inverse, sizes = np.unique(np.column_stack(active_columns),
                                         axis=0, return_inverse=True,
                                         return_counts=True)
    short = 0
    for p in np.flatnonzero(sizes):
        width = int(np.dot(patterns[p], widths))
        if not width or sizes[p] < width + _MARGIN:
            continue
        rows = _sample(inverse.ravel() == p, 4 * width + _MARGIN, rng)
        values = np.linalg.svd(X[rows], compute_uv=False)
        rank = int(np.count_nonzero(values > np.sqrt(alpha) * values[0]))
        if rank < width:
            short += 1
    if short:
        problems.append(
            f"in {short} group(s) of sketches with the same blocks, the sketches "
            f"span fewer dimensions than their blocks: a block holds a path "
            f"those sketches lack")
    if unused:
        problems.append(
            f"{unused} of the {len(tree)} blocks found are assigned to sketches "
            f"that have no part in them: a path's support was not found")
    if merged:
        problems.append(
            f"{merged} of the {len(tree)} blocks found hold more than one path "
            f"(a direction of the block vanishes on many of the sketches that "
            f"use it): paths that most records use were not separated")


def _merge_attribute_blocks(X, norms, tree, active_columns, entries, duals, index,
                            alpha, problems):
    """Fold leaf nodes without a presence direction into their parent.

    A path's block holds a presence column (the objects' weighted count,
    positive wherever the path fires) and, per slot, the attribute columns.
    When objects of a module sit at different slots in different records,
    each slot's attribute block has a support of its own and is found as a
    leaf below the path's presence. A leaf whose coefficients have no
    direction positive on every sketch it fires in has no presence: it is
    a slot of its parent, not a path.
    """
    from scipy.optimize import linprog

    has_child = {p for _, p, _ in tree if p is not None}
    merged_into, constant = {}, []
    for e, parent, _ in tree:
        i = entries[e][0]
        if e in has_child or parent is None or i < 0 or parent not in index:
            continue
        rows = np.flatnonzero(~entries[e][1])
        coefficients = X[rows] @ duals[i]
        coefficients /= np.linalg.norm(coefficients, axis=1, keepdims=True)
        width = coefficients.shape[1]
        # is there c with coefficients @ c >= 1 on every row?
        result = linprog(np.zeros(width), A_ub=-coefficients,
                         b_ub=-np.ones(rows.size), bounds=[(None, None)] * width,
                         method="highs")
        if result.status == 2:  # infeasible: no presence direction
            merged_into[e] = parent
        elif rows.size > 2 * width:
            # Unit weights: the presence is 1 wherever the path fires, so the
            # coefficients lie on an affine hyperplane, and the presences of
            # a path and its ancestors always add up with coefficient 1.
            raw = (X[rows] * norms[rows, None]) @ duals[i]
            fit = np.linalg.lstsq(raw, np.ones(rows.size), rcond=None)[0]
            if np.linalg.norm(raw @ fit - 1) <= np.sqrt(alpha) * np.sqrt(rows.size):
                constant.append(e)
    if constant:
        problems.append(
            f"{len(constant)} leaf path(s) have the same presence (weight 1) in "
            f"every sketch they fire in: with unit weights the presences of a "
            f"path and its ancestors always add up with coefficient 1, so the "
            f"interior paths' presence directions cannot be told apart")
    blocks = {e: block for e, _, block in tree}
    for e, parent in merged_into.items():
        blocks[parent] = np.hstack([blocks[parent], blocks[e]])
    kept = [(k, (e, p, _)) for k, (e, p, _) in enumerate(tree) if e not in merged_into]
    return ([(e, p, blocks[e]) for _, (e, p, _) in kept],
            [active_columns[k] for k, _ in kept])


def _error(S, X, basis, tree, active):
    """Residual of every sketch on the blocks of the nodes it activates."""
    if not tree:
        return 1.0
    blocks = [block for _, _, block in tree]
    widths = [b.shape[1] for b in blocks]
    design = np.hstack(blocks)
    coefficients = _least_squares(design, S.T)
    mask = np.repeat(active, widths, axis=1).T
    model = design @ (coefficients * mask)
    return float(np.linalg.norm(S.T - model) / np.linalg.norm(S))


# -- linear algebra -----------------------------------------------------------


def _span(S, alpha):
    """Orthonormal basis (d x r) of the rows' span."""
    gram = S.T @ S
    values, vectors = np.linalg.eigh(gram)
    keep = values > alpha**2 * values[-1] if values[-1] > 0 else values < 0
    vectors = vectors[:, keep][:, ::-1]
    # one step of subspace iteration restores the digits eigh lost
    return np.linalg.qr(gram @ vectors)[0] if vectors.shape[1] else vectors


def _null(A, alpha):
    """Orthonormal basis of ``{u : A u = 0}`` (rows of A count relative)."""
    m = A.shape[1]
    if not A.shape[0]:
        return np.eye(m)
    gram = A.T @ A
    values, vectors = np.linalg.eigh(gram)
    scale = max(values[-1], 1e-300)
    return vectors[:, values <= alpha**2 * scale * 100]


def _robust_null(A, alpha):
    """Null space of the rows of ``A`` but those alone in their direction.

    An l1 minimizer also vanishes, by coincidence, on up to ``m - 1`` of the
    sketches that do activate the node; each such row adds a direction no
    other row has (leverage near 1), while the node's true zeros share a
    subspace with thousands of others. Rows of leverage above 1/2 are
    dropped before taking the null space.
    """
    gram = A.T @ A
    values, vectors = np.linalg.eigh(gram)
    scale = max(values[-1], 1e-300)
    keep = values > alpha**2 * scale * 100
    projected = A @ vectors[:, keep]
    leverage = np.sum(projected**2 / values[keep], axis=1)
    typical = keep.sum() / max(A.shape[0], 1)
    if A.shape[0] > 4 * keep.sum():
        A = A[leverage <= max(0.5, 4 * typical)]
    return _null(A, alpha)


def _least_squares(design, targets):
    """Least-squares coefficients of many targets (columns) on a design.

    A design of full column rank (the blocks found, when independent) is
    solved through its QR factors: for 50,000 sketches that is about ten
    times faster than ``lstsq``'s SVD solver, to rounding. A rank-deficient
    or ill-conditioned design goes to ``lstsq`` (minimum-norm solution).
    """
    from scipy.linalg import solve_triangular

    q, r = np.linalg.qr(design)
    diagonal = np.abs(np.diag(r))
    if diagonal.size and diagonal.min() > 1e-8 * diagonal.max():
        return solve_triangular(r, q.T @ targets)
    return np.linalg.lstsq(design, targets, rcond=None)[0]


def _svd(A):
    """Thin SVD; LAPACK's QR-iteration driver where gesdd does not converge."""
    try:
        return np.linalg.svd(A, full_matrices=False)
    except np.linalg.LinAlgError:
        from scipy.linalg import svd

        return svd(A, full_matrices=False, lapack_driver="gesvd")


def _orth(A, alpha):
    if not A.shape[1]:
        return A
    u, s, _ = _svd(A)
    return u[:, s > np.sqrt(alpha) * s[0]] if s[0] > 0 else u[:, :0]


def _sample(mask, size, rng):
    rows = np.flatnonzero(mask)
    if rows.size > size:
        rows = np.sort(rng.choice(rows, size, replace=False))
    return rows
