"""Decoders: from sketches back to per-path counts and attributes (docs: Decoding).

A sketch is ``S = sum_P a_P c_P + sum_{P,s} H_{P,s} u_{P,s}`` (see
``_unroll``): ``c_P`` is the weighted count of the objects on module path
``P``, ``u_{P,s}`` the weighted attribute sum of those in slot ``s``. Both
decoders estimate, for a known set of paths and slots (the structure),

- ``c_P`` for every path,
- ``u_{P,s}`` for every (path, slot),
- ``U_P``, the attribute sum over all of a path's slots,

from sketches that may have lost coordinates (graceful erasure): only the
kept rows of the blocks enter.

``transpose``, the paper's decoder, reads each quantity with the transposed
chain: undo every wrapper with ``v + R^T v`` and every wiring with ``C^T``,
then read ``A^T`` or ``N^T``. As ``(I + R^T) = 2 W^T``, that is the row block
of the path scaled by ``2`` per wrapper: one matrix product for a batch.

``lstsq`` solves ``S = G z`` over the stacked blocks: a pseudo-inverse (one
product per batch) while the unknowns are at most half the kept rows, and
beyond that least squares on a superset of each sketch's support
(``_superset``) or a group orthogonal matching pursuit, batched over sketches.
"""

from typing import NamedTuple

import numpy as np

from ._array_api import (
    NUMPY,
    backend_of,
    concat_columns,
    host_array,
    take_columns,
    to_backend,
    to_numpy,
    zeros,
)
from ._paths import PathBlocks
from ._superset import _SupersetLeastSquares
from ._threads import blas_threads_for, one_blas_thread
from ._unroll import ColumnLayout

# A sketch that the learned blocks explain exactly still leaves a least-squares
# residual of rounding size: about eps * sqrt(d') * cond relative to ||S||
# (eps of the sketch's precision, d' kept coordinates, cond the condition
# number of the unit-norm blocks solved over). Measured ratios stay below 0.2
# (depth-3 and arbitrary-DAG records, float32 and float64, d' from 128 to
# 4096, random erasure); NOISE_FACTOR leaves a margin of 500 above that.
NOISE_FACTOR = 100.0


class Decoded(NamedTuple):
    """What a decoder returns for a batch of sketches.

    ``z``: item coefficients (n, n_unknowns); ``sums``: per-path attribute
    sums; ``residual``: ``||S - G z|| / ||S||`` per sketch over the kept
    coordinates (None for the transpose decoder, which does not fit ``S``);
    ``noise``: per sketch, the residual an exactly explained sketch can have
    (see ``NOISE_FACTOR``).
    """

    z: np.ndarray
    sums: np.ndarray
    residual: np.ndarray | None = None
    noise: np.ndarray | None = None


class Structure:
    """The paths and slots a decoder solves for, with their column layout.

    Parameters
    ----------
    items : iterable of (path, slot)
        Every (module path, slot) to decode; each path gets its presence.
    module_dims : mapping of str to int
    """

    def __init__(self, items, module_dims):
        items = list(items)
        self.paths = sorted({path for path, _ in items})
        self.module_dims = dict(module_dims)
        self.layout = ColumnLayout([(p, None) for p in self.paths] + items,
                                   self.module_dims)
        dims = [self.module_dims[p[-1]] for p in self.paths]
        self.sum_offsets = np.concatenate(([0], np.cumsum(dims, dtype=np.intp)))
        # For each path: its presence column and the columns of its slots.
        self.presence_columns = np.array(
            [self.layout.offsets[self.layout.index[(p, None)]] for p in self.paths],
            dtype=np.intp)
        self.slots_of = self.layout.slots_by_path()

    @property
    def n_unknowns(self):
        return self.layout.n_columns

    def path_sum_from_slots(self, z, backend=NUMPY):
        """``U_P = sum_s u_{P,s}`` for every path, from the item coefficients."""
        parts = []
        for i, path in enumerate(self.paths):
            total = zeros(backend, (z.shape[0], int(self.sum_offsets[i + 1]
                                                    - self.sum_offsets[i])),
                          z.dtype)
            for slot in self.slots_of[path]:
                total = total + take_columns(backend, z,
                                             self.layout.columns((path, slot)))
            parts.append(total)
        if not parts:
            return zeros(backend, (z.shape[0], 0), z.dtype)
        return concat_columns(backend, parts)


def kept_coordinates(sketch_dim, n_columns, kept=None):
    """Indices of the kept coordinates: a prefix of ``n_columns`` by default."""
    if kept is None:
        if n_columns > sketch_dim:
            raise ValueError(f"sketches have {n_columns} coordinates, more than "
                             f"the sketcher's sketch_dim={sketch_dim}")
        return np.arange(n_columns)
    kept = host_array(kept)  # an index array may live on the device
    if kept.dtype == bool:
        if kept.shape != (sketch_dim,):
            raise ValueError(f"a boolean 'kept' mask must have shape "
                             f"({sketch_dim},); got {kept.shape}")
        kept = np.flatnonzero(kept)
    if kept.ndim != 1 or kept.dtype.kind not in "iu":
        raise TypeError("'kept' must be a boolean mask or an array of indices")
    if kept.size != n_columns:
        raise ValueError(f"'kept' names {kept.size} coordinates but the sketches "
                         f"have {n_columns}")
    if kept.size and (kept.min() < 0 or kept.max() >= sketch_dim
                      or np.unique(kept).size != kept.size):
        raise ValueError(f"'kept' must name distinct coordinates in "
                         f"[0, {sketch_dim})")
    return kept.astype(np.intp)


def erase(sketches, keep, *, random_state=None):
    """Erase coordinates of sketches, keeping a prefix or a random subset.

    Parameters
    ----------
    sketches : array-like of shape (n_sketches, sketch_dim)
    keep : int or float or array-like
        An int keeps the first ``keep`` coordinates; a float in (0, 1] keeps
        that fraction of them, at random; a boolean mask or an index array
        keeps those.
    random_state : int, RandomState instance or None, default=None
        Draws the random subset when ``keep`` is a float.

    Returns
    -------
    erased : ndarray of shape (n_sketches, n_kept)
        The kept coordinates, in increasing order.
    kept : ndarray of int of shape (n_kept,)
        Their indices: pass them as ``kept=`` to the decoders (a prefix needs
        nothing).

    Examples
    --------
    >>> import numpy as np
    >>> from sksketch import erase
    >>> S = np.arange(12.0).reshape(2, 6)
    >>> erased, kept = erase(S, 4)
    >>> erased.shape, kept.tolist()
    ((2, 4), [0, 1, 2, 3])
    """
    from sklearn.utils import check_random_state

    backend = backend_of(sketches)
    if backend.is_numpy:
        sketches = np.asarray(sketches)
    if sketches.ndim != 2:
        raise ValueError(f"sketches must be 2-D; got shape "
                         f"{tuple(sketches.shape)}")
    sketch_dim = sketches.shape[1]
    if not isinstance(keep, bool | int | float | np.generic | list | tuple):
        keep = host_array(keep)  # may live on a device
        if keep.ndim == 0:
            keep = keep[()]  # a 0-d array: its number
    if isinstance(keep, bool | np.bool_):
        raise TypeError("'keep' must be an int, a float or an array")
    if isinstance(keep, int | np.integer):
        if not 0 < keep <= sketch_dim:
            raise ValueError(f"'keep' must be in [1, {sketch_dim}]; got {keep}")
        kept = np.arange(keep)
    elif isinstance(keep, float | np.floating):
        if not 0 < keep <= 1:
            raise ValueError(f"a float 'keep' must be in (0, 1]; got {keep}")
        rng = check_random_state(random_state)
        n_kept = max(1, int(round(keep * sketch_dim)))
        kept = np.sort(rng.choice(sketch_dim, n_kept, replace=False))
    else:
        kept = np.asarray(keep)
        kept = kept_coordinates(sketch_dim, int(kept.sum() if kept.dtype == bool
                                                else kept.size), kept)
        kept = np.sort(kept)
    return take_columns(backend, sketches, kept), kept


class TransposeDecoder:
    """The paper's decoder: transposed chains, one product per batch."""

    def __init__(self, structure, blocks, wrapper):
        self.structure = structure
        rows = []
        layout = structure.layout
        # The chains warm() returns, not the cache: a small cache may have
        # evicted some, and fetching them again would redraw their matrices.
        chains = blocks.warm(layout.items)
        for path, key in layout.items:
            dim = structure.module_dims[path[-1]]
            scale = 2.0 ** len(path) if wrapper == "half_identity" else 1.0
            chain = chains[(path, key)]
            rows.append(scale * (chain[dim:dim + 1] if key is None else chain))
        for path in structure.paths:
            dim = structure.module_dims[path[-1]]
            scale = 2.0 ** len(path) if wrapper == "half_identity" else 1.0
            rows.append(scale * chains[(path, None)][:dim])
        self.readout = (np.concatenate(rows) if rows
                        else np.zeros((0, blocks.matrices.sketch_dim)))

    def decode(self, sketches, kept, eps=None, backend=NUMPY):
        """Read every unknown; ``eps`` is unused (no residual to judge)."""
        d = self.readout.shape[1]
        readout = to_backend(self.readout[:, kept].T, backend, sketches.dtype)
        # E[G_kept^T G_kept] = (d'/d) E[G^T G]: rescale what was kept.
        estimates = sketches @ readout * (d / max(kept.size, 1))
        n_items = self.structure.n_unknowns
        return Decoded(estimates[:, :n_items], estimates[:, n_items:])


class LstsqDecoder:
    """Least squares over the stacked path blocks, factorized per kept set.

    While the unknowns (a presence per path, ``dim`` per (path, slot)) are
    at most ``max_active`` times the kept coordinates, one pseudo-inverse
    solves every sketch exactly. Beyond that, least squares on a superset of
    each sketch's support (where the null space of the blocks is at most
    the budget wide) or a group orthogonal matching pursuit looks for the
    few blocks each sketch uses, within a budget of ``max_active`` times the
    kept coordinates.

    Parameters
    ----------
    structure : Structure
    g_rows : ndarray of shape (n_unknowns, sketch_dim)
        The stacked blocks, transposed.
    max_active : float
    tol : float
        Sparse decoding stops once the residual is below ``tol * ||S||``.
    """

    def __init__(self, structure, g_rows, *, max_active=0.5, tol=1e-10):
        self.structure = structure
        self.g_rows = g_rows
        self.max_active = max_active
        self.tol = tol
        self._factors = {}

    def _factor(self, kept):
        key = kept.tobytes()
        factor = self._factors.get(key)
        if factor is None:
            limit = int(self.max_active * kept.size)
            if limit < 1 and self.structure.n_unknowns:
                # Not even one count fits in the budget: decoding would
                # return zeros that look like an answer.
                raise ValueError(
                    f"{kept.size} kept coordinate(s) are too few to decode: "
                    f"least squares solves for at most max_active * {kept.size} "
                    f"= {limit} unknowns; keep at least "
                    f"{int(np.ceil(1 / self.max_active))} coordinates")
            g, norms = _unit_columns(self.g_rows[:, kept].T)
            if self.structure.n_unknowns <= limit:
                factor = ("pinv", *_pseudo_inverse(g, norms))
            else:
                offsets = self.structure.layout.offsets
                pursuit = _GroupPursuit(g, norms, offsets, limit, self.tol)
                factor = ("omp", pursuit,
                          _superset(g, offsets, min(limit, kept.size // 2), pursuit))
            if len(self._factors) > 8:  # a few kept sets at a time
                self._factors.pop(next(iter(self._factors)))
            self._factors[key] = factor
        return factor

    def decode(self, sketches, kept, eps=None, backend=NUMPY):
        """Solve for the unknowns; judge residuals at precision ``eps``.

        ``eps`` is the machine epsilon of the sketches' precision (the lower
        of the sketcher's and the input's); None is float64's. The products
        run on ``backend``; sparse decoding runs on the host.
        """
        eps = np.finfo(np.float64).eps if eps is None else eps
        kind, *factor = self._factor(kept)
        if kind == "pinv":
            pinv, cond = factor
            # Two products of 2 n d' unknowns flops each: small ones on one
            # BLAS thread (400 sketches, d = 256, 90 unknowns, another
            # process on a core: 5.5 ms a product on two threads, 0.43 ms
            # on one).
            with blas_threads_for(2 * sketches.shape[0] * pinv.size):
                z = sketches @ to_backend(pinv.T, backend, sketches.dtype)
                residual = sketches - z @ to_backend(self.g_rows[:, kept], backend,
                                                     sketches.dtype)
            # tol is the pursuit's stopping rule: not used here.
            noise = np.full(sketches.shape[0], _noise_level(eps, kept.size, cond))
        else:
            # Below this condition number the noise level is tol: the
            # pursuit need not compute it exactly there. It stops at the
            # lowest noise level of the sketches' precision: below it, more
            # groups would only fit rounding (float32 sketches never reach
            # tol, and would otherwise fill the whole budget).
            floor = _noise_level(eps, kept.size, 1.0)
            z, residual, cond = _sparse_solve(*factor, to_numpy(sketches), floor,
                                              self.tol)
            z, residual = (to_backend(a, backend, sketches.dtype)
                           for a in (z, residual))
            noise = np.maximum(self.tol, _noise_level(eps, kept.size, cond))
        return Decoded(z, self.structure.path_sum_from_slots(z, backend),
                       _relative_norms(backend, residual, sketches), noise)


def _superset(g, offsets, budget, pursuit):
    """The support-superset solver of ``g``, or None where it does not apply
    (null space wider than the budget, its per-group products too big, or a
    group with linearly dependent kept columns)."""
    n_kept, n_columns = g.shape
    n_groups = offsets.size - 1
    # A group whose kept columns are dependent (fewer kept rows than
    # columns, say) leaves no unique solution over any set holding it: the
    # pursuit, which decodes over each group's span, takes those problems.
    if np.any(pursuit.span_widths < np.diff(offsets)):
        return None
    # The null space has at least n_columns - n_kept dimensions: skip the
    # SVD (n_columns^2 floats) where that alone rules the method out.
    if not _SupersetLeastSquares.fits(n_groups, max(n_columns - n_kept, 0), budget):
        return None
    u, sv, vt = np.linalg.svd(g, full_matrices=True)
    rank = _rank(sv, g)
    if not rank or not _SupersetLeastSquares.fits(n_groups, n_columns - rank, budget):
        return None
    return _SupersetLeastSquares(g, offsets, budget, u, sv, vt, rank)


def _sparse_solve(pursuit, superset, sketches, floor, tol):
    """Coefficients, residuals and condition numbers of group-sparse sketches.

    The support-superset least squares where it applies, else the pursuit.
    A sketch the superset explains is explained exactly (the unique
    solution within the budget), so its condition number does not matter
    and is reported as 1; for the others (support beyond the budget, or
    outside the learned structure), it is that of the columns solved over,
    which sets the noise level their residual is judged by:
    ``max(tol, floor * cond)``, ``floor`` the noise of condition 1.
    """
    stop = max(tol, floor)
    if superset is None:
        return pursuit.solve(sketches, tol / floor, stop=stop)
    x, residual, explained, columns = superset.solve(sketches, stop, polish=floor > tol)
    cond = np.ones(sketches.shape[0])
    rest = np.flatnonzero(~explained)
    if rest.size:
        # The bound decides the verdict where the residual exceeds the noise
        # level it gives; the exact value is needed only for the others.
        cond[rest] = superset.condition_bound(columns[rest])
        relative = (np.linalg.norm(residual[rest], axis=1)
                    / np.linalg.norm(sketches[rest], axis=1))
        unsure = rest[relative <= np.maximum(tol, floor * cond[rest])]
        if unsure.size:
            width = columns[unsure].sum(axis=1)
            order = np.argsort(~columns[unsure], axis=1, kind="stable")
            cond[unsure] = pursuit._condition(order[:, :max(int(width.max()), 1)],
                                              width)
    return x / pursuit.norms, residual, cond


def _noise_level(eps, n_kept, cond):
    """Largest relative residual of a sketch the blocks explain exactly."""
    return NOISE_FACTOR * eps * np.sqrt(n_kept) * cond


def _relative_norms(backend, residual, sketches):
    """``||r|| / ||S||`` per row, on the host; 0 for a zero sketch."""
    norms, residual_norms = (np.sqrt(to_numpy(backend.xp.sum(a * a, axis=1)))
                             for a in (sketches, residual))
    return np.divide(residual_norms, norms, out=np.zeros_like(norms),
                     where=norms > 0)


def _rank(s, g):
    """Numerical rank of ``g`` from its singular values ``s``, with the
    tolerance of ``numpy.linalg.matrix_rank``."""
    return int(np.sum(s > s[0] * max(g.shape) * np.finfo(g.dtype).eps)) if s.size else 0


def _pseudo_inverse(g, norms):
    """Pseudo-inverse of the unit-column ``g`` (undoing ``norms``) and its
    condition number, from one SVD (numpy.linalg.pinv's cutoff)."""
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    if not s.size or s[0] == 0:
        return np.zeros((g.shape[1], g.shape[0])), 1.0
    big = np.arange(s.size) < _rank(s, g)
    pinv = (vt[big].T / s[big]) @ u[:, big].T
    return pinv / norms[:, None], float(s[0] / s[big][-1])


def _span(g):
    """Orthonormal basis of the column span of ``g``: at most its rank columns.

    Singular values below the float64 rank tolerance of ``numpy.linalg.
    matrix_rank`` count as zero, so a group with fewer kept rows than
    columns, or with collinear columns, gets a basis of its true span.
    """
    if not g.size:
        return g[:, :0]
    u, s, _ = np.linalg.svd(g, full_matrices=False)
    return u[:, :_rank(s, g)]


def _unit_columns(g):
    """Scale columns to unit norm (better-conditioned normal equations)."""
    norms = np.linalg.norm(g, axis=0)
    norms[norms == 0] = 1.0
    return g / norms, norms


# Smallest squared distance (in units of the unit-norm columns) of a group's
# column to the span already chosen: a group closer to it than 1e-5 adds
# nothing the least squares could resolve, and is not taken.
_MIN_PIVOT = 1e-10

# The pursuit keeps, per sketch, the inverse Cholesky factor of its chosen
# columns (budget x budget at most), twice (see _FactorPool): a chunk of
# sketches holds at most this many bytes of them.
_FACTOR_BYTES = 2**26
# Fewer sketches a chunk would leave each step's NumPy calls too little work
# (wide budgets: the pool then exceeds _FACTOR_BYTES, in pages mostly never
# touched).
_MIN_CHUNK = 64


class _GroupPursuit:
    """Group orthogonal matching pursuit, batched over sketches (Batch-OMP).

    Each iteration picks, for every unfinished sketch at once, the group
    (one block: a path's presence, or one (path, slot) attribute block) whose
    span holds most of the residual, as orthogonal matching pursuit does.
    Nothing is re-solved: as in Batch-OMP (Rubinstein, Zibulevsky and Elad,
    2008), each sketch keeps the inverse Cholesky factor ``L^-1`` of the Gram
    matrix of its chosen columns, in the order chosen, and a group of ``k``
    columns appends ``k`` rows to it. The residual's correlations live in
    coefficient space (``G^T`` times the residual, read through each group's
    orthonormal basis) and move by one product per step, with a precomputed
    ``G^T B``. The steps are vectorized over sketches: one stacked product
    per step, not one solve per sketch.

    Reading each factor twice a step (``L^-1`` and ``L^-T`` products) from
    memory bounds the speed: about ``2 w^2`` floats read per step for a
    support of ``w`` columns. Taking several groups a step (a generalized
    OMP) was tried: fewer steps, but as many floats read, and no faster.
    """

    def __init__(self, g, norms, offsets, max_active, tol):
        self.g, self.norms, self.offsets = g, norms, offsets
        self.widths = np.diff(offsets)
        self.max_active, self.tol = max_active, tol
        self.gram = g.T @ g
        # Orthonormal basis of each group's span, padded with zero columns to
        # the group's width: the score of a group is the norm of the
        # residual's projection on its span, and the groups' columns in
        # ``basis`` stay at their offsets even when few kept rows (or
        # collinear columns) leave a group a narrower span.
        self.basis = np.zeros_like(g)
        self.span_widths = np.zeros(offsets.size - 1, dtype=np.intp)
        for group, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
            span = _span(g[:, lo:hi])
            self.basis[:, lo:lo + span.shape[1]] = span
            self.span_widths[group] = span.shape[1]
        # The projections of the columns on the bases: the residual's
        # projections move by (change of coefficients) @ cross.
        self.cross = g.T @ self.basis
        # reduceat sums a group from its offset to the next one; a group of
        # width 0 (a module without attributes) has no columns to sum (it
        # would read its neighbour's), and can never explain a residual.
        self.scored = np.flatnonzero(self.widths > 0)

    def solve(self, sketches, cond_limit=0.0, stop=None):
        """Coefficients, residuals and each sketch's support's condition number.

        The condition number is exact where it exceeds ``cond_limit``; below
        it, an upper bound that is also below it (``cond_limit`` is where the
        condition number starts to matter to the caller). A sketch is done
        once its residual is below ``stop * ||s||`` (default: ``tol``).
        """
        stop = self.tol if stop is None else stop
        n, n_columns = sketches.shape[0], self.g.shape[1]
        z = np.zeros((n, n_columns))
        cond = np.ones(n)
        budget = max(int(min(self.max_active, n_columns)), 1)
        chunk = int(np.clip(_FACTOR_BYTES // (16 * budget**2), _MIN_CHUNK, 1024))
        pool = _FactorPool(min(chunk, n), budget)
        # Each step is a few stacked products of small matrices: BLAS threads
        # only spin against each other there, and far worse when another
        # process holds a core. One thread, as in scikit-learn's KMeans.
        with one_blas_thread():
            for lo in range(0, n, chunk):
                part = slice(lo, lo + chunk)
                z[part], cond[part], columns, width = self._solve(
                    sketches[part], budget, pool, stop)
                # Per chunk: the Gram matrices of the supports take budget^2
                # floats a sketch.
                unsure = np.flatnonzero(cond[part] > cond_limit)
                if unsure.size:
                    cond[lo + unsure] = self._condition(columns[unsure],
                                                        width[unsure])
            residual = sketches - z @ self.g.T
        return z / self.norms, residual, cond

    def _solve(self, s, budget, pool, stop):
        """Pursue a chunk of sketches.

        Returns the coefficients of the unit columns, an upper bound of the
        condition number of each sketch's chosen columns, and those columns
        (padded) with their number.
        """
        n, n_columns = s.shape[0], self.g.shape[1]
        norm2 = np.einsum("ij,ij->i", s, s)
        target2 = stop**2 * norm2
        x = np.zeros((n, n_columns))
        columns_out = np.zeros((n, budget), dtype=np.intp)
        width_out = np.zeros(n, dtype=np.intp)
        inverse_trace = np.zeros(n)
        # The state of the sketches still pursued: ``index`` are their rows in
        # ``s``; dead rows (finished) stay until the state is compacted.
        index = np.flatnonzero(norm2 > target2)
        state = _PursuitState(s[index], self, budget, pool)
        while True:
            n_alive = np.count_nonzero(state.alive)
            if n_alive <= 0.7 * state.size:
                finished = ~state.alive
                rows = index[finished]
                x[rows] = state.x[finished]
                columns_out[rows] = state.columns[finished]
                width_out[rows] = state.width[finished]
                inverse_trace[rows] = state.inverse_trace[finished]
                index = index[state.alive][state.compact()]
            if not n_alive:
                break
            state.step(self, budget, target2[index], norm2[index])
        cond = np.sqrt(np.maximum(width_out, 1) * np.maximum(inverse_trace, 1.0))
        cond[width_out == 0] = 1.0
        return x, cond, columns_out, width_out

    def _condition(self, columns, width):
        """Condition number of each row's chosen columns (1 for none)."""
        cond = np.ones(width.size)
        rows = np.flatnonzero(width > 0)
        if rows.size:
            w_max = int(width[rows].max())
            columns = columns[rows, :w_max]
            valid = np.arange(w_max)[None, :] < width[rows, None]
            a = self.gram[columns[:, :, None], columns[:, None, :]]
            a = np.where(valid[:, :, None] & valid[:, None, :], a, 0.0)
            # The padding's identity adds eigenvalues 1, within the range of
            # a Gram matrix of unit columns: the extremes are the support's.
            a[:, np.arange(w_max), np.arange(w_max)] += ~valid
            eigenvalues = np.linalg.eigvalsh(a)
            cond[rows] = np.sqrt(eigenvalues[:, -1] / np.maximum(
                eigenvalues[:, 0], np.finfo(float).tiny))
        return cond


class _PursuitState:
    """What the pursuit keeps per sketch, for the sketches still pursued.

    ``factors``: for sketch ``i``, the inverse Cholesky factor ``L^-1`` of
    the Gram matrix of its chosen columns ``columns[i, :width[i]]`` (in the
    order chosen; see :class:`_Factors`);
    ``c[i] = L^-1 (G^T s)[columns]``, so that the coefficients are
    ``L^-T c`` and ``||c||^2`` is the part of ``||s||^2`` explained;
    ``proj``: the residual's projections on the groups' bases.
    """

    def __init__(self, s, pursuit, budget, pool):
        m, n_columns = s.shape[0], pursuit.g.shape[1]
        self.s = s
        self.gts = s @ pursuit.g
        self.proj = s @ pursuit.basis
        self.x = np.zeros((m, n_columns))
        self.factors = _Factors(pool, m)
        self.columns = np.zeros((m, budget), dtype=np.intp)
        self.c = np.zeros((m, budget))
        self.width = np.zeros(m, dtype=np.intp)
        self.explained2 = np.zeros(m)
        self.blocked = np.zeros((m, pursuit.widths.size), dtype=bool)
        self.blocked[:, pursuit.widths == 0] = True
        self.alive = np.ones(m, dtype=bool)
        self.inverse_trace = np.zeros(m)

    @property
    def size(self):
        return self.alive.size

    def compact(self):
        """Drop the finished sketches (their factors hold most of the memory).

        Returns the new order of the sketches kept.
        """
        kept = np.flatnonzero(self.alive)
        # Widest first: the factors' bins then hold sketches of similar
        # widths; the order changes little between steps.
        order = np.argsort(-self.width[kept], kind="stable")
        rows = kept[order]
        for name in ("s", "gts", "proj", "x", "columns", "c", "width",
                     "explained2", "blocked", "alive", "inverse_trace"):
            setattr(self, name, getattr(self, name)[rows])
        self.factors.compact(rows, self.width)
        return order

    def step(self, pursuit, budget, target2, norm2):
        """Add one group to every live sketch; finish those explained."""
        widths = pursuit.widths
        m, n_groups = self.size, widths.size
        scores = np.full((m, n_groups), -np.inf)
        scores[:, pursuit.scored] = np.add.reduceat(
            self.proj**2, pursuit.offsets[pursuit.scored], axis=1)
        scores[self.blocked] = -np.inf
        scores[self.width[:, None] + widths[None, :] > budget] = -np.inf
        best = np.argmax(scores, axis=1)
        grows = self.alive & np.isfinite(scores[np.arange(m), best])
        self.alive &= grows  # nothing fits, or nothing is left to add: done
        if not grows.any():
            return
        self.blocked[np.flatnonzero(grows), best[grows]] = True
        k = np.where(grows, widths[best], 0)
        k_max, w = int(k.max()), self.width
        w_max = int(w[grows].max())
        j = np.arange(k_max)
        new = j[None, :] < k[:, None]
        new_columns = np.where(new, pursuit.offsets[best][:, None] + j, 0)
        # Rows of dead sketches (and the padding) have new == False: a zero
        # a, so their updates below are all zero.
        a = pursuit.gram[self.columns[:, :w_max, None], new_columns[:, None, :]]
        a *= new[:, None, :]
        y = self.factors.product(a, w, w_max)  # L^-1 A_{S,new}
        both = new[:, :, None] & new[:, None, :]
        schur = np.where(both, pursuit.gram[new_columns[:, :, None],
                                            new_columns[:, None, :]], 0.0)
        schur -= y.transpose(0, 2, 1) @ y
        schur[:, j, j] += ~new
        lnn_inv, independent = _inverse_cholesky(schur, _MIN_PIVOT)
        # A group (nearly) inside the chosen span is not taken; it stays
        # blocked, and the sketch goes on with another group next step.
        new &= independent[:, None]
        both &= independent[:, None, None]
        k = np.where(independent, k, 0)
        lnn_inv *= independent[:, None, None]
        b = np.where(new, np.take_along_axis(self.gts, new_columns, axis=1), 0.0)
        c_new = np.einsum("nij,nj->ni", lnn_inv,
                          b - np.einsum("nwk,nw->nk", y, self.c[:, :w_max]))
        # A_S^-1 A_{S,new}
        a_inv_a = self.factors.product(y, w, w_max, transpose=True)
        t = np.einsum("nji,nj->ni", lnn_inv, c_new)
        # The new rows of L^-1: [-Lnn^-1 (A_S^-1 A_{S,new})^T, Lnn^-1].
        rows_new = -(lnn_inv @ a_inv_a.transpose(0, 2, 1))
        rows, at = np.nonzero(new)
        position = w[rows] + at
        self.factors.set_rows(rows, position, rows_new[rows, at])
        r2, at2, to2 = np.nonzero(both & (j[:, None] >= j[None, :]))
        self.factors.set_entries(r2, w[r2] + at2, w[r2] + to2,
                                 lnn_inv[r2, at2, to2])
        self.columns[rows, position] = new_columns[rows, at]
        self.c[rows, position] = c_new[rows, at]
        # The coefficients move by L'^-T [0; c_new]: -A_S^-1 A_{S,new} t on
        # the old columns, t on the new ones.
        changed = np.flatnonzero(k > 0)
        delta = np.zeros((changed.size, self.gts.shape[1]))
        v_old = -np.einsum("nwk,nk->nw", a_inv_a[changed], t[changed])
        old_rows, old_at = np.nonzero(np.arange(w_max)[None, :] < w[changed, None])
        delta[old_rows, self.columns[changed[old_rows], old_at]] = v_old[old_rows,
                                                                         old_at]
        new_rows, new_at = np.nonzero(new[changed])
        delta[new_rows, new_columns[changed[new_rows], new_at]] = t[changed[new_rows],
                                                                   new_at]
        self.proj[changed] -= delta @ pursuit.cross
        self.x[changed] += delta
        self.width += k
        self.explained2 += np.einsum("nk,nk->n", c_new, c_new)
        # trace(A^-1) = ||L^-1||_F^2 grows by the new rows' squared norms.
        self.inverse_trace += (np.einsum("nkw,nkw->n", rows_new, rows_new)
                               + np.einsum("nij,nij->n", lnn_inv, lnn_inv * both))
        self._finish_explained(pursuit, target2, norm2)

    def _finish_explained(self, pursuit, target2, norm2):
        """Stop the sketches whose residual is below the target.

        ``||r||^2 = ||s||^2 - ||c||^2`` resolves only about 1e-8 of ``||s||``:
        the residual is computed where that estimate is near the target.
        """
        left = norm2 - self.explained2
        near = np.flatnonzero(self.alive & (left <= np.maximum(4 * target2,
                                                                1e-12 * norm2)))
        if near.size:
            residual = self.s[near] - self.x[near] @ pursuit.g.T
            done = np.einsum("ij,ij->i", residual, residual) <= target2[near]
            self.alive[near[done]] = False

class _FactorPool:
    """Memory for the inverse Cholesky factors of a chunk of sketches.

    Two stacks of ``(rows, budget, budget)``: the live factors and the
    target of the next compaction, allocated once per solve and reused by
    every chunk. Fresh memory at every step (growing, compacting) cost more
    than the products themselves: first touches of pages.
    """

    def __init__(self, rows, budget):
        self.stacks = [np.zeros((rows, budget, budget)) for _ in range(2)]


class _Factors:
    """Inverse Cholesky factors of many sketches, in a :class:`_FactorPool`.

    Sketch ``i``'s factor ``L^-1`` is lower triangular. Its rows below
    ``width[i]`` hold whatever earlier sketches left there: the products
    mask them. Nothing is ever written right of a diagonal, so that part of
    every row is zero. The sketches still pursued are the first rows, sorted
    widest first at each compaction; the products read them in a few runs of
    consecutive sketches, each as deep as its widest sketch, so the memory
    read follows the widths.
    """

    def __init__(self, pool, m, n_bins=4):
        self.pool, self.m, self.n_bins = pool, m, n_bins

    @property
    def stack(self):
        """The live factors: the pool's first stack."""
        return self.pool.stacks[0]

    def _bins(self):
        bounds = np.unique(np.linspace(0, self.m, self.n_bins + 1).astype(np.intp))
        return zip(bounds[:-1], bounds[1:])

    def product(self, rhs, width, w_max, transpose=False):
        """``L^-1 @ rhs[i]`` (or ``L^-T @ rhs[i]``) for every sketch ``i``.

        ``rhs`` has ``w_max`` rows; only the first ``width[i]`` of row ``i``
        meet its factor, and the result is zero below them.
        """
        valid = (np.arange(w_max) < width[:, None])[:, :, None]
        if transpose:  # rows of L^-1 below the width are stale
            rhs = np.where(valid, rhs, 0.0)
        out = np.zeros_like(rhs)
        for lo, hi in self._bins():
            top = min(int(width[lo:hi].max(initial=0)), w_max)
            if top:
                block = self.stack[lo:hi, :top, :top]
                out[lo:hi, :top] = (block.transpose(0, 2, 1) if transpose
                                    else block) @ rhs[lo:hi, :top]
        # Below the width, L^-T @ rhs is zero: right of the diagonals.
        return out if transpose else np.where(valid, out, 0.0)

    def set_rows(self, rows, position, values):
        """Row ``position[n]`` of sketch ``rows[n]``'s factor: ``values[n]``
        left of the diagonal, zeros from it on (the diagonal block is set
        by :meth:`set_entries`)."""
        n_columns = min(int(position.max(initial=-1)) + 1, self.stack.shape[2])
        row = np.zeros((rows.size, n_columns))
        row[:, :min(values.shape[1], n_columns)] = values[:, :n_columns]
        row[np.arange(n_columns) >= position[:, None]] = 0.0
        self.stack[rows, position, :n_columns] = row

    def set_entries(self, rows, i, j, values):
        """Entry ``(i[n], j[n])`` of sketch ``rows[n]``'s factor."""
        self.stack[rows, i, j] = values

    def compact(self, rows, width):
        """Keep the factors of ``rows``, in that order, as the first rows
        (``width``: their widths)."""
        depth = int(width.max(initial=0))
        spare = self.pool.stacks[1]
        for to, row in enumerate(rows):  # no temporary: see _FactorPool
            spare[to, :depth, :depth] = self.stack[row, :depth, :depth]
        self.pool.stacks = [spare, self.stack]
        self.m = rows.size


def _inverse_cholesky(a, min_pivot):
    """``L^-1`` for a stack of small symmetric matrices ``a = L L^T``.

    Returns the inverse factors and which matrices have every pivot above
    ``min_pivot`` (the others get a factor computed with unit pivots in
    place of the small ones: to be discarded). Vectorized over the stack,
    one column at a time: the matrices are a group's width across.
    """
    n, k, _ = a.shape
    lower = np.zeros_like(a)
    ok = np.ones(n, dtype=bool)
    for j in range(k):
        pivot = a[:, j, j] - np.einsum("ni,ni->n", lower[:, j, :j], lower[:, j, :j])
        small = ~(pivot > min_pivot)
        ok &= ~small
        lower[:, j, j] = np.sqrt(np.where(small, 1.0, pivot))
        if j + 1 < k:
            lower[:, j + 1:, j] = (a[:, j + 1:, j] - np.einsum(
                "nij,nj->ni", lower[:, j + 1:, :j], lower[:, j, :j])) / lower[:, j, j,
                                                                               None]
    inverse = np.zeros_like(a)
    for j in range(k):
        inverse[:, j, :] = -np.einsum("ni,nij->nj", lower[:, j, :j], inverse[:, :j, :])
        inverse[:, j, j] += 1.0
        inverse[:, j, :] /= lower[:, j, j, None]
    return inverse, ok


def make_decoder(method, structure, sketcher, *, max_active=0.5, tol=1e-10):
    """Build the decoder of ``method`` over ``structure`` for a fitted sketcher."""
    blocks = PathBlocks(sketcher._matrices(), sketcher.modules_)
    if method == "transpose":
        return TransposeDecoder(structure, blocks, blocks.matrices.wrapper)
    return LstsqDecoder(structure, blocks.stack(structure.layout),
                        max_active=max_active, tol=tol)
