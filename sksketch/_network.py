"""NetworkRecoveryDictionaryLearner: learn the path blocks and the wiring.

From many sketches of a sketcher whose random matrices are unknown, recover
the sketch function as seen from the top -- the path blocks -- and the
network's wiring (see the user guide, Network recovery). A sketch is block-linear,
``S = sum_P G_P z_P`` over the module paths a record activates:

- with the records (``fit(S, records)``), each candidate path's coefficients
  ``z_P`` are known, so the blocks follow by block-sparse regression;
- from sketches alone (``fit(S)``), records activating the same paths lie in
  one subspace: with one chain per record, clustering the sketches into
  subspaces and intersecting them gives the blocks and the tree of paths
  (``_network_quadrics``); with several paths per record, the sparse dual
  vectors of the sketches give each path's support and the lattice of
  supports gives the tree (``_network_sketches``).
"""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ._array_api import (
    as_dtype,
    backend_of,
    check_floating,
    detached,
    for_output,
    is_array,
    to_backend,
    to_numpy,
    zeros,
)
from ._batch import as_batch
from ._network_sketches import lattice_fit
from ._recover import _is_records, path_name
from ._threads import one_blas_thread
from ._verbose import Progress


class NetworkRecoveryDictionaryLearner(TransformerMixin, BaseEstimator):
    """Recover a sketcher's path blocks and the network's wiring from sketches.

    Parameters
    ----------
    layers : list of list of str, default=None
        The architecture's layers in the order the network computes them
        (inputs first), e.g. ``[["conv1"], ["conv2a", "conv2b"], ["fc"]]``.
        Only used with records: every sequence of modules from the last
        layer down, one layer at a time, whose modules fire in a record, is a
        candidate path. Its coefficients follow from the record if each
        object consumes every object of the modules it is wired to (a dense
        layer); the records' edges are not needed. With ``layers=None``, the
        records' own edges give the paths and their exact coefficients.
    max_depth : int, default=None
        Longest path (counted in modules) to look for.
    alpha : float, default=1e-6
        Relative noise level: residuals, singular values and principal-angle
        gaps below ``alpha`` times the data's scale count as zero.
    n_subsample : int, default=2000
        Sketches only: how many sketches the subspace clustering, and each
        search for a path's support, looks at; every sketch is then assigned
        (to its nearest subspace, or to the supports it lies in).
    random_state : int, RandomState instance or None, default=None
        Draws the subsample and the sketches each subspace is found from.
    n_jobs : int, default=None
        Sketches only: threads over the independent groups of subspaces of
        the one-chain method (``None``: one, ``-1``: all). The result does
        not depend on it.
    verbose : int, default=0
        Progress messages on stdout from ``fit`` (none with 0).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, sketch_dim)
        Learned block columns, as rows: the block of path ``i`` is
        ``components_[blocks_[i].columns]``.
    blocks_ : list of Bunch
        One per recovered path: ``path`` (module names with records; node
        labels such as ``("n0", "n0.1")`` from sketches alone), ``columns``
        (a slice of ``components_``) and ``slots`` (with records).
    wiring_ : ndarray of shape (n_nodes, n_nodes)
        0/1 adjacency: ``wiring_[i, j] = 1`` when node ``i`` consumes node
        ``j`` -- modules with records, recovered path nodes without.
    node_names_ : ndarray of str
        Names of the rows and columns of ``wiring_``.
    ambiguous_ : list of tuple
        With records: pairs of candidate paths the data cannot tell apart
        (their coefficients are collinear); neither is guessed.
    n_iter_ : int
        Regression steps (with records) or subspace refinements (without).
    error_ : float
        Relative residual ``||S - S_model|| / ||S||`` of the fitted model.
    n_features_in_ : int

    See Also
    --------
    score_network_recovery : Compare a learned model with a known sketcher.
    sklearn.decomposition.MiniBatchDictionaryLearning : A generic dictionary
        learner, which does not find the blocks.

    Examples
    --------
    >>> from sksketch import (NetworkRecoveryDictionaryLearner, RecursiveSketcher,
    ...                       make_activation_records)
    >>> records, _, network = make_activation_records(
    ...     600, n_modules=6, connectivity="dense", weights="random",
    ...     random_state=0, return_network=True)
    >>> S = RecursiveSketcher(256, random_state=0).fit_transform(records)
    >>> learner = NetworkRecoveryDictionaryLearner(
    ...     layers=network.layers[::-1]).fit(S, records)
    >>> sorted(learner.wiring_edges()) == sorted(
    ...     {(o.module, r.modules[r.ids.index(c)]) for r in records
    ...      for o in r.objects for c in o.inputs})
    True
    """

    _parameter_constraints: dict = {
        "layers": [list, tuple, None],
        "max_depth": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "n_subsample": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(self, *, layers=None, max_depth=None, alpha=1e-6, n_subsample=2000,
                 random_state=None, n_jobs=None, verbose=0):
        self.layers = layers
        self.max_depth = max_depth
        self.alpha = alpha
        self.n_subsample = n_subsample
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the blocks and the wiring.

        Parameters
        ----------
        X : array-like of shape (n_sketches, sketch_dim)
            Sketches.
        y : sequence of ActivationRecord or dict, or RecordBatch, default=None
            The records the sketches came from (setting 1). Anything else
            (None, labels) is ignored: the sketches alone are used.

        Returns
        -------
        self : NetworkRecoveryDictionaryLearner
        """
        if is_array(X):  # fitted on the host: sketches copied from a device
            X = to_numpy(detached(X))
        X = validate_data(self, X, dtype=[np.float64, np.float32],
                          ensure_min_samples=2)
        S = X.astype(np.float64)
        log = Progress(self, self.verbose)
        log(lambda: f"fitting on {S.shape[0]} sketches of dimension {S.shape[1]}, "
            f"{'with' if y is not None and _is_records(y) else 'without'} records")
        if y is not None and _is_records(y):
            batch = as_batch(y)
            if batch.n_records != S.shape[0]:
                raise ValueError(f"fit got {S.shape[0]} sketches but "
                                 f"{batch.n_records} records")
            # Block regression is many small products and least-squares
            # solves: BLAS threads only spin against each other there, and
            # when another process holds a core they slow it 30-60 fold.
            with one_blas_thread():
                fitted = _fit_with_records(S, batch, self.layers, self.max_depth,
                                           self.alpha)
        else:
            fitted = _fit_sketches_only(S, self.max_depth, self.alpha,
                                        self.n_subsample,
                                        check_random_state(self.random_state),
                                        self.n_jobs)
        unsplit = fitted.pop("unsplit", [])
        for name, value in fitted.items():
            setattr(self, name, value)
        log(lambda: f"recovered {len(self.blocks_)} path blocks, relative "
            f"residual {self.error_:.3g}")
        if unsplit:
            warnings.warn(
                "Sketches-only recovery could not identify every path: "
                + "; ".join(unsplit) + ". blocks_ and wiring_ are likely wrong "
                "there. More sketches or fewer paths per record may help; see the "
                "user guide (Network recovery) for what can be identified from "
                "sketches alone; fit(S, records) needs no such conditions.",
                UserWarning, stacklevel=3)
        if self.ambiguous_:
            pairs = "; ".join(f"{path_name(a)} / {path_name(b)}"
                              for a, b in self.ambiguous_)
            warnings.warn(f"The records cannot tell apart these candidate paths "
                          f"(collinear coefficients), so neither was chosen: "
                          f"{pairs}. See ambiguous_.", UserWarning,
                          stacklevel=3)  # fit is wrapped by _fit_context
        return self

    def transform(self, X):
        """Block coefficients of sketches: least squares on ``components_``.

        Parameters
        ----------
        X : array-like of shape (n_sketches, sketch_dim)

        Returns
        -------
        coefficients : ndarray of shape (n_sketches, n_components)
        """
        check_is_fitted(self)
        backend = backend_of(X)
        if backend.is_numpy:
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        else:  # CuPy, PyTorch, ...: validated and solved on their device
            X = check_floating(backend, X, "X")
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but "
                                 f"{type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
        if self.components_.shape[0] == 0:
            return for_output(self, zeros(backend, (X.shape[0], 0), X.dtype))
        # Least squares on the components: one product with their
        # pseudo-inverse (numpy.linalg.lstsq's cutoff).
        pinv = np.linalg.pinv(self.components_.T,
                              rcond=max(self.components_.shape)
                              * np.finfo(np.float64).eps)
        solution = as_dtype(backend, X, np.float64) @ to_backend(pinv.T, backend)
        return for_output(self, as_dtype(backend, solution, X.dtype))

    def get_feature_names_out(self, input_features=None):
        """``"{path}:{column}"`` for every learned block column."""
        check_is_fitted(self)
        names = []
        for block in self.blocks_:
            width = block.columns.stop - block.columns.start
            names += [f"{path_name(block.path)}:{i}" for i in range(width)]
        return np.asarray(names, dtype=object)

    def wiring_edges(self):
        """``(consumer, consumed)`` name pairs of the recovered wiring."""
        check_is_fitted(self)
        rows, columns = np.nonzero(self.wiring_)
        return [(str(self.node_names_[i]), str(self.node_names_[j]))
                for i, j in zip(rows, columns)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# -- setting 1: sketches and records --------------------------------------------


def _dense_candidates(batch, layers, max_depth):
    """Candidate paths of a layered network and their dense coefficients.

    Returns ``(paths, slots, design, offsets)``: the design has, per path, a
    presence column and ``dim`` columns per slot.
    """
    names = batch._module_names
    code_of = {name: i for i, name in enumerate(names)}
    known = {m for layer in layers for m in layer}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"modules {unknown} fire in the records but are in no "
                         f"layer of 'layers'")
    n = batch.n_records
    weight = batch._weight.astype(np.float64)
    # Total weight of each module's objects in each record.
    totals = np.zeros((n, len(names)))
    np.add.at(totals, (batch._record, batch._module_codes), weight)
    top_down = [list(layer) for layer in reversed(layers)]
    paths = [(m,) for m in top_down[0] if m in code_of]
    frontier = list(paths)
    for layer in top_down[1:]:
        if max_depth is not None and len(frontier[0] if frontier else ()) >= max_depth:
            break
        frontier = [p + (m,) for p in frontier for m in layer if m in code_of]
        paths += frontier
    columns, path_list, slot_list = [], [], []
    for path in paths:
        prefix = np.prod(totals[:, [code_of[m] for m in path[:-1]]], axis=1)
        presence = prefix * totals[:, code_of[path[-1]]]
        if not presence.any():
            continue  # never fires together: no candidate
        slot_columns, slots = _slot_sums(batch, code_of[path[-1]])
        path_list.append(path)
        slot_list.append(slots)
        columns.append(np.column_stack([presence] + [prefix[:, None] * block
                                                     for block in slot_columns]))
    return path_list, slot_list, columns


def _slot_sums(batch, code):
    """Per record and slot, the weighted attribute sum of one module's objects."""
    members = np.flatnonzero(batch._module_codes == code)
    slot_codes = batch._slot_codes[members]
    attributes = batch._attributes[code][batch._rows[members]].astype(np.float64)
    weighted = attributes * batch._weight[members, None]
    sums, slots = [], []
    for slot in np.unique(slot_codes):
        rows = slot_codes == slot
        block = np.zeros((batch.n_records, attributes.shape[1]))
        np.add.at(block, batch._record[members[rows]], weighted[rows])
        sums.append(block)
        slots.append(batch._slot_keys[slot])
    return sums, slots


def _exact_candidates(batch, max_depth):
    """The records' own paths (from their edges) and exact coefficients."""
    from ._unroll import ColumnLayout, coefficients, unroll

    unrolled = unroll(batch, max_depth=max_depth)
    layout = ColumnLayout.from_unrolled(batch, unrolled)
    z = coefficients(batch, unrolled, layout)
    slots_by_path = layout.slots_by_path()
    paths, slots = list(slots_by_path), list(slots_by_path.values())
    # A path's presence and slots are contiguous columns of the layout.
    columns = [z[:, layout.columns((p, None)).start:
                 layout.columns((p, s[-1]) if s else (p, None)).stop]
               for p, s in zip(paths, slots)]
    return paths, slots, columns


def _fit_with_records(S, batch, layers, max_depth, alpha):
    if layers is not None:
        paths, slots, columns = _dense_candidates(batch, layers, max_depth)
    else:
        paths, slots, columns = _exact_candidates(batch, max_depth)
    selected, blocks, ambiguous, n_iter, error = _block_regression(S, columns, alpha)
    component_rows, block_info, edges = [], [], set()
    start = 0
    for index in selected:
        rows = blocks[index]
        component_rows.append(rows)
        block_info.append(Bunch(path=paths[index], slots=slots[index],
                                columns=slice(start, start + rows.shape[0])))
        start += rows.shape[0]
        edges.update(zip(paths[index][:-1], paths[index][1:]))
    nodes = sorted({m for p in paths for m in p})
    return {"components_": _stack(component_rows, S.shape[1]),
            "blocks_": block_info,
            "ambiguous_": [(paths[a], paths[b]) for a, b in ambiguous],
            **_wiring(nodes, edges), "n_iter_": n_iter, "error_": error}


def _block_regression(S, columns, alpha):
    """Group orthogonal matching pursuit over candidate paths, multi-output.

    Each step adds the candidate whose coefficient columns explain most of
    the residual (its projection on their span), then refits least squares
    on all chosen candidates; it stops once the residual is below
    ``alpha * ||S||``. A candidate whose columns lie in the span of another
    (collinear coefficients) is reported, not chosen.
    """
    norm = np.linalg.norm(S)
    bases = [_orthonormal(c, alpha) for c in columns]
    # All candidates' bases side by side: each step scores every candidate
    # with one product instead of one small product per candidate.
    stacked = np.hstack(bases) if bases else np.zeros((S.shape[0], 0))
    starts = np.cumsum([0] + [b.shape[1] for b in bases])[:-1]
    # Candidates whose coefficient spans coincide cannot be told apart.
    ambiguous = set()
    for a in range(len(columns)):
        for b in range(a + 1, len(columns)):
            if bases[a].shape[1] == bases[b].shape[1] and bases[a].shape[1]:
                cosines = np.linalg.svd(bases[a].T @ bases[b], compute_uv=False)
                if cosines.min() > 1 - alpha:
                    ambiguous.add((a, b))
    excluded = {i for pair in ambiguous for i in pair}
    selected, residual, solution = [], S, None
    n_iter = 0
    while np.linalg.norm(residual) > alpha * norm:
        if not bases:
            break
        # ||B_i^T R||_F for every candidate i: row sums of squares, per block.
        energy = np.sum((stacked.T @ residual) ** 2, axis=1)
        scores = np.sqrt(np.add.reduceat(np.append(energy, 0.0), starts))
        for i in range(len(bases)):
            if i in selected or i in excluded or not bases[i].shape[1]:
                scores[i] = -np.inf  # a zero-width basis: reduceat read its neighbour
        if scores.max() <= alpha * norm:
            break
        selected.append(int(np.argmax(scores)))
        design = np.hstack([columns[i] for i in selected])
        solution = np.linalg.lstsq(design, S, rcond=None)[0]
        residual = S - design @ solution
        n_iter += 1
    selected, swaps = _prune(S, columns, selected, alpha * norm)
    ambiguous |= swaps
    blocks = {}
    if selected:
        design = np.hstack([columns[i] for i in selected])
        solution = np.linalg.lstsq(design, S, rcond=None)[0]
        residual = S - design @ solution
        offsets = np.cumsum([0] + [columns[i].shape[1] for i in selected])
        for i, lo, hi in zip(selected, offsets[:-1], offsets[1:]):
            blocks[i] = solution[lo:hi]
    # Keep the chosen candidates in path order, drop those fitted as zero.
    kept = sorted(i for i in selected if np.linalg.norm(blocks[i]) > alpha * norm)
    error = float(np.linalg.norm(residual) / norm) if norm else 0.0
    return kept, blocks, sorted(ambiguous), n_iter, error


def _prune(S, columns, selected, tolerance):
    """Drop chosen candidates that the others already explain.

    The greedy pass can choose a candidate that later choices make
    redundant; with it, the design is rank-deficient and least squares
    spreads blocks over both. A pruned candidate that could replace one that
    stays is a pair the data cannot tell apart: reported, the kept one
    dropped too.
    """
    def fits(candidates):
        if not candidates:
            return np.linalg.norm(S) <= tolerance
        design = np.hstack([columns[i] for i in candidates])
        solution = np.linalg.lstsq(design, S, rcond=None)[0]
        return np.linalg.norm(S - design @ solution) <= tolerance

    if not fits(selected):
        return selected, set()
    kept, pruned = list(selected), []
    for candidate in reversed(selected):  # the latest choices first
        rest = [i for i in kept if i != candidate]
        if fits(rest):
            kept, pruned = rest, pruned + [candidate]
    swaps = set()
    for candidate in pruned:
        for other in kept:
            if fits([i for i in kept if i != other] + [candidate]):
                swaps.add((min(candidate, other), max(candidate, other)))
    doubtful = {i for pair in swaps for i in pair}
    return [i for i in kept if i not in doubtful], swaps


# -- setting 2: sketches only -----------------------------------------------------


def _fit_sketches_only(S, max_depth, alpha, n_subsample, rng, n_jobs):
    """One chain per record: quadrics (fast); otherwise the support lattice."""
    from ._network_quadrics import quadrics_fit

    norms = np.linalg.norm(S, axis=1)
    nonzero = np.flatnonzero(norms > 0)
    if nonzero.size < 2:
        raise ValueError(f"need at least 2 non-zero sketches; got {nonzero.size}")
    seed = rng.randint(2**31 - 1)
    fitted = quadrics_fit(S, max_depth, alpha, n_subsample,
                          np.random.RandomState(seed), n_jobs, give_up=True)
    if "components_" in fitted:
        return fitted
    unsplit = [f"{n} sketches in {dim} dimensions: {reason}"
               for dim, n, reason in fitted["unsplit"]]
    try:
        fitted = lattice_fit(S[nonzero], alpha, n_subsample, rng, max_depth)
    except np.linalg.LinAlgError as error:  # the quadrics' whole answer
        fitted = quadrics_fit(S, max_depth, alpha, n_subsample,
                              np.random.RandomState(seed), n_jobs)
        fitted["unsplit"] = (unsplit or fitted["unsplit"]) + [
            f"the support lattice failed ({error})"]
        return fitted
    names = []
    component_rows, block_info, edges = [], [], set()
    start = 0
    for index, parent, block in fitted["tree"]:
        if parent is None:
            label = f"n{sum(1 for _, p, _ in fitted['tree'][:index] if p is None)}"
            name = label
        else:
            siblings = sum(1 for _, p, _ in fitted["tree"][:index] if p == parent)
            name = f"{names[parent]}/{names[parent].split('/')[-1]}.{siblings}"
        names.append(name)
        component_rows.append(block.T)
        block_info.append(Bunch(path=tuple(name.split("/")), slots=None,
                                columns=slice(start, start + block.shape[1])))
        start += block.shape[1]
        if parent is not None:
            edges.add((names[parent], name))
    return {"components_": _stack(component_rows, S.shape[1]), "blocks_": block_info,
            "ambiguous_": [], **_wiring(names, edges),
            "n_iter_": len(fitted["tree"]), "error_": fitted["error"],
            "unsplit": fitted["problems"]}


# -- linear algebra helpers ------------------------------------------------------


def _orthonormal(matrix, alpha):
    """Orthonormal basis of a column span, dropping directions below alpha."""
    if matrix.size == 0:
        return np.zeros((matrix.shape[0], 0))
    if matrix.shape[1] > 4 * matrix.shape[0]:
        # Many more columns than rows: the eigenvectors of M M^T are cheaper
        # than an SVD; squared singular values, so the threshold is squared.
        eigenvalues, vectors = np.linalg.eigh(matrix @ matrix.T)
        keep = eigenvalues > alpha**2 * eigenvalues[-1] if eigenvalues[-1] > 0 \
            else np.zeros(eigenvalues.size, dtype=bool)
        # Eigenvectors of the Gram matrix hold about half the digits; one
        # step of subspace iteration restores them (the gap is huge).
        vectors = vectors[:, keep][:, ::-1]
        return np.linalg.qr(matrix @ (matrix.T @ vectors))[0]
    try:
        u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    except np.linalg.LinAlgError:
        # LAPACK's divide and conquer (gesdd) can fail to converge on finite
        # input; the QR-iteration driver is slower but converges.
        from scipy.linalg import svd

        u, s, _ = svd(matrix, full_matrices=False, lapack_driver="gesvd")
    return u[:, s > alpha * s[0]] if s[0] > 0 else u[:, :0]


def _intersection(a, b, alpha):
    """Orthonormal basis of span(a) ∩ span(b), both orthonormal."""
    if not a.shape[1] or not b.shape[1]:
        return np.zeros((a.shape[0], 0))
    u, s, _ = np.linalg.svd(a.T @ b)
    return a @ u[:, :s.size][:, s > 1 - np.sqrt(alpha)]


def _complement(basis, parent, alpha):
    """Orthonormal basis of span(basis) with span(parent) projected out."""
    if parent.shape[1]:
        basis = basis - parent @ (parent.T @ basis)
    return _orthonormal(basis, np.sqrt(alpha))


def _stack(rows, n_features):
    return np.vstack(rows) if rows else np.zeros((0, n_features))


def _wiring(nodes, edges):
    index = {n: i for i, n in enumerate(nodes)}
    wiring = np.zeros((len(nodes), len(nodes)), dtype=np.int8)
    for parent, child in edges:
        wiring[index[parent], index[child]] = 1
    return {"wiring_": wiring, "node_names_": np.asarray(nodes, dtype=object)}


# -- scoring ----------------------------------------------------------------------


def _mean_cosine(a, b):
    """Mean cosine of the principal angles between two column spans."""
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    return float(np.linalg.svd(qa.T @ qb, compute_uv=False).mean())


def score_network_recovery(learner, sketcher, paths, edges=None):
    """Compare a learned model with the sketcher that made the sketches.

    Parameters
    ----------
    learner : fitted NetworkRecoveryDictionaryLearner
    sketcher : fitted RecursiveSketcher
        Knows the true blocks.
    paths : dict of tuple to list
        The true module paths and, for each, the slots its objects used.
    edges : iterable of (str, str), default=None
        The true wiring edges (consumer, consumed). With records, the learned
        module wiring is scored against them; from sketches alone the learned
        tree of path nodes is scored against the tree of ``paths``.

    Returns
    -------
    scores : dict
        ``block_cosine``: mean over true paths of the mean principal-angle
        cosine between the true block span and its learned block's (matched
        by name with records, by best span overlap without);
        ``precision``, ``recall``, ``f1``: of the wiring (or path-tree) edges;
        ``matched``: the learned block of every true path.
    """
    from scipy.optimize import linear_sum_assignment

    from ._paths import PathBlocks

    check_is_fitted(learner)
    blocks = PathBlocks(sketcher._matrices(), sketcher.modules_)
    true_paths = sorted(paths)
    truth = [np.vstack([blocks.rows(p, None)] + [blocks.rows(p, s) for s in paths[p]]).T
             for p in true_paths]
    learned = [learner.components_[b.columns].T for b in learner.blocks_]
    cosines = np.array([[_mean_cosine(t, lb) for lb in learned] for t in truth])
    named = all(b.slots is not None for b in learner.blocks_)
    if named:
        index = {b.path: i for i, b in enumerate(learner.blocks_)}
        match = {p: index.get(p) for p in true_paths}
    else:
        rows, cols = linear_sum_assignment(-cosines) if learned else ([], [])
        match = {p: None for p in true_paths}
        match.update({true_paths[r]: c for r, c in zip(rows, cols)})
    block_cosine = float(np.mean([cosines[i, match[p]] if match[p] is not None else 0.0
                                  for i, p in enumerate(true_paths)]))
    if named:
        true_edges = set(edges) if edges is not None else {
            e for p in true_paths for e in zip(p[:-1], p[1:])}
        found = set(learner.wiring_edges())
    else:
        node_of = {learner.blocks_[c].path: p for p, c in match.items()
                   if c is not None}
        true_edges = {(p[:-1], p) for p in true_paths if len(p) > 1}
        found = {(node_of.get(tuple(a.split("/"))), node_of.get(tuple(b.split("/"))))
                 for a, b in learner.wiring_edges()}
    hits = len(found & true_edges)
    precision = hits / len(found) if found else float(not true_edges)
    recall = hits / len(true_edges) if true_edges else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"block_cosine": block_cosine, "precision": precision, "recall": recall,
            "f1": f1, "matched": match}
