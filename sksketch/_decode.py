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
product per batch) while the unknowns are at most half the kept rows, and a
group orthogonal matching pursuit, batched over sketches, beyond that.
"""

from typing import NamedTuple

import numpy as np

from ._array_api import (
    NUMPY,
    backend_of,
    concat_columns,
    take_columns,
    to_backend,
    to_numpy,
    zeros,
)
from ._paths import PathBlocks
from ._threads import one_blas_thread
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
    kept = np.asarray(kept)
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
    solves every sketch exactly. Beyond that, a group orthogonal matching
    pursuit looks for the few blocks each sketch uses, within a budget of
    ``max_active`` times the kept coordinates.

    Parameters
    ----------
    structure : Structure
    g_rows : ndarray of shape (n_unknowns, sketch_dim)
        The stacked blocks, transposed.
    max_active : float
    tol : float
        Matching pursuit stops once the residual is below ``tol * ||S||``.
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
                factor = ("omp", _GroupPursuit(g, norms, self.structure.layout.offsets,
                                               limit, self.tol))
            if len(self._factors) > 8:  # a few kept sets at a time
                self._factors.pop(next(iter(self._factors)))
            self._factors[key] = factor
        return factor

    def decode(self, sketches, kept, eps=None, backend=NUMPY):
        """Solve for the unknowns; judge residuals at precision ``eps``.

        ``eps`` is the machine epsilon of the sketches' precision (the lower
        of the sketcher's and the input's); None is float64's. The products
        run on ``backend``; the group pursuit runs on the host.
        """
        eps = np.finfo(np.float64).eps if eps is None else eps
        kind, *factor = self._factor(kept)
        if kind == "pinv":
            pinv, cond = factor
            z = sketches @ to_backend(pinv.T, backend, sketches.dtype)
            residual = sketches - z @ to_backend(self.g_rows[:, kept], backend,
                                                 sketches.dtype)
            # tol is the pursuit's stopping rule: not used here.
            noise = np.full(sketches.shape[0], _noise_level(eps, kept.size, cond))
        else:
            z, residual, cond = factor[0].solve(to_numpy(sketches))
            z, residual = (to_backend(a, backend, sketches.dtype)
                           for a in (z, residual))
            noise = np.maximum(self.tol, _noise_level(eps, kept.size, cond))
        return Decoded(z, self.structure.path_sum_from_slots(z, backend),
                       _relative_norms(backend, residual, sketches), noise)


def _noise_level(eps, n_kept, cond):
    """Largest relative residual of a sketch the blocks explain exactly."""
    return NOISE_FACTOR * eps * np.sqrt(n_kept) * cond


def _relative_norms(backend, residual, sketches):
    """``||r|| / ||S||`` per row, on the host; 0 for a zero sketch."""
    norms, residual_norms = (np.sqrt(to_numpy(backend.xp.sum(a * a, axis=1)))
                             for a in (sketches, residual))
    return np.divide(residual_norms, norms, out=np.zeros_like(norms),
                     where=norms > 0)


def _pseudo_inverse(g, norms):
    """Pseudo-inverse of the unit-column ``g`` (undoing ``norms``) and its
    condition number, from one SVD (numpy.linalg.pinv's cutoff)."""
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    if not s.size or s[0] == 0:
        return np.zeros((g.shape[1], g.shape[0])), 1.0
    big = s > max(g.shape) * np.finfo(g.dtype).eps * s[0]
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
    rank = int(np.sum(s > s[0] * max(g.shape) * np.finfo(g.dtype).eps))
    return u[:, :rank]


def _unit_columns(g):
    """Scale columns to unit norm (better-conditioned normal equations)."""
    norms = np.linalg.norm(g, axis=0)
    norms[norms == 0] = 1.0
    return g / norms, norms


class _GroupPursuit:
    """Group orthogonal matching pursuit, batched over sketches.

    Each iteration picks, for every unfinished sketch at once, the group
    (one block: a path's presence, or one (path, slot) attribute block) whose
    span holds most of the residual, then solves least squares on each
    sketch's groups as one stacked solve of padded normal equations.
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
        for lo, hi in zip(offsets[:-1], offsets[1:]):
            span = _span(g[:, lo:hi])
            self.basis[:, lo:lo + span.shape[1]] = span
        # reduceat sums a group from its offset to the next one; a group of
        # width 0 (a module without attributes) has no columns to sum (it
        # would read its neighbour's), and can never explain a residual.
        self.scored = np.flatnonzero(self.widths > 0)

    def solve(self, sketches, chunk=256):
        """Coefficients, residuals and each sketch's support's condition number."""
        z = np.zeros((sketches.shape[0], self.g.shape[1]))
        residual = np.empty_like(sketches)
        cond = np.ones(sketches.shape[0])
        # Each step solves a stack of small systems (one LAPACK call each):
        # BLAS threads only spin against each other there, and far worse when
        # another process holds a core. One thread, as in scikit-learn's KMeans.
        with one_blas_thread():
            for lo in range(0, sketches.shape[0], chunk):
                part = slice(lo, lo + chunk)
                z[part], residual[part], cond[part] = self._solve(sketches[part])
        return z / self.norms, residual, cond

    def _solve(self, s):
        n, n_groups = s.shape[0], self.widths.size
        support = np.zeros((n, n_groups), dtype=bool)
        width = np.zeros(n, dtype=np.intp)
        z = np.zeros((n, self.g.shape[1]))
        gts = s @ self.g
        residual = s.copy()
        target = self.tol * np.linalg.norm(s, axis=1)
        todo = np.flatnonzero(np.linalg.norm(residual, axis=1) > target)
        while todo.size:
            scores = np.full((todo.size, n_groups), -np.inf)
            scores[:, self.scored] = np.add.reduceat(
                (residual[todo] @ self.basis) ** 2, self.offsets[self.scored], axis=1)
            scores[support[todo]] = -np.inf
            scores[width[todo, None] + self.widths[None, :] > self.max_active] = -np.inf
            best = np.argmax(scores, axis=1)
            can_grow = np.isfinite(scores[np.arange(todo.size), best])
            todo, best = todo[can_grow], best[can_grow]
            if not todo.size:
                break
            support[todo, best] = True
            width[todo] += self.widths[best]
            z[todo] = self._least_squares(support[todo], gts[todo])
            residual[todo] = s[todo] - z[todo] @ self.g.T
            still = np.linalg.norm(residual[todo], axis=1) > target[todo]
            todo = todo[still]
        return z, residual, self._condition(support)

    def _condition(self, support):
        """Condition number of each row's chosen columns (1 for none)."""
        cond = np.ones(support.shape[0])
        rows = np.flatnonzero(support.any(axis=1))
        if rows.size:
            # The padding's identity adds eigenvalues 1, within the range of a
            # Gram matrix of unit columns: the extremes are the support's.
            eigenvalues = np.linalg.eigvalsh(self._normal_matrices(support[rows])[0])
            cond[rows] = np.sqrt(eigenvalues[:, -1] / np.maximum(
                eigenvalues[:, 0], np.finfo(float).tiny))
        return cond

    def _least_squares(self, support, gts):
        """Solve each row's normal equations on its own columns, stacked."""
        a, columns, mask, row_of, position = self._normal_matrices(support)
        b = np.where(mask, np.take_along_axis(gts, columns, axis=1), 0.0)
        x = np.linalg.solve(a, b[..., None])[..., 0]
        z = np.zeros((support.shape[0], self.g.shape[1]))
        z[row_of, columns[row_of, position]] = x[row_of, position]
        return z

    def _normal_matrices(self, support):
        """Each row's Gram matrix of its columns, padded with the identity."""
        rows, groups = np.nonzero(support)
        widths = self.widths[groups]
        per_row = np.bincount(rows, weights=widths,
                              minlength=support.shape[0]).astype(np.intp)
        w_max = int(per_row.max())
        # Column index of every (row, position); padding points at column 0.
        starts = np.repeat(self.offsets[groups], widths)
        within = np.arange(widths.sum()) - np.repeat(np.cumsum(widths) - widths, widths)
        row_of = np.repeat(rows, widths)
        position = np.arange(row_of.size) - np.repeat(np.cumsum(per_row) - per_row,
                                                      per_row)
        columns = np.zeros((support.shape[0], w_max), dtype=np.intp)
        mask = np.zeros((support.shape[0], w_max), dtype=bool)
        columns[row_of, position] = starts + within
        mask[row_of, position] = True
        a = self.gram[columns[:, :, None], columns[:, None, :]]
        both = mask[:, :, None] & mask[:, None, :]
        a = np.where(both, a, 0.0)
        a[:, np.arange(w_max), np.arange(w_max)] += ~mask  # identity on padding
        return a, columns, mask, row_of, position


def make_decoder(method, structure, sketcher, *, max_active=0.5, tol=1e-10):
    """Build the decoder of ``method`` over ``structure`` for a fitted sketcher."""
    blocks = PathBlocks(sketcher._matrices(), sketcher.modules_)
    if method == "transpose":
        return TransposeDecoder(structure, blocks, blocks.matrices.wrapper)
    return LstsqDecoder(structure, blocks.stack(structure.layout),
                        max_active=max_active, tol=tol)
