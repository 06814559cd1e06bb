"""Exact least squares on a superset of each sketch's support (group-sparse decoding).

When the unknowns ``x`` outnumber the kept coordinates, ``s = G x`` has a
whole affine space of solutions ``x0 + N z``: ``x0 = G^+ s`` the
minimum-norm one, ``N`` an orthonormal basis of the null space of ``G``
(``f`` columns, ``f`` = unknowns - rank). A sketch's true ``x`` is the
solution that vanishes outside the few groups its record uses.

Any set ``R`` of columns that contains that support, with ``G_R`` of full
column rank, finds it: the solution vanishing outside ``R`` is unique, and
it is the sparse one. A solution on ``R`` that explains the sketch exactly
is the sparsest one even when ``R`` was chosen badly, as long as ``R`` and
the true support hold at most ``d'`` columns together (``d'`` the kept
coordinates): two different solutions would make those columns linearly
dependent, which random blocks are not. ``R`` is kept within ``d' / 2``
columns, so a residual below the noise certifies the answer for every
sketch whose support fits the budget; ``R`` need only be a guess that
covers the support:

1. rank the groups by the energy of the current estimate of ``x`` per
   column (first ``x0``) and take the strongest while they fit the budget;
2. find ``z`` minimizing ``||(x0 + N z)`` outside ``R||``: an ``f x f``
   system ``(I - N_R^T N_R) z = N_R^T x0_R`` per sketch, assembled by one
   product for all sketches from each group's ``N_g^T N_g``;
3. keep ``x0 + N z`` on ``R``; sketches whose residual is not yet below the
   target re-rank with the new estimate, a few rounds.

Each round costs a few products shared by all sketches plus one ``f x f``
solve per sketch, where a greedy pursuit takes one group per step and
updates a factor per sketch at every step. Sketches still unexplained after
the last round (support beyond the budget, or paths never learned) keep
their best fit, and the caller flags them. The decoder uses this method
where ``f`` is at most the budget, and the pursuit elsewhere.
"""

import numpy as np

from ._threads import one_blas_thread

# Rounds of ranking for the sketches not yet explained. On the records
# measured (4 network shapes, d = 128-512, erasure), the first ranking
# covers the support of about 2/3 of the sketches, the second all but a few
# per thousand; every sketch the group pursuit explained was explained by
# round 6, and rounds 7-12 explained none more.
_ROUNDS = 6
# The per-group products N_g^T N_g (upper triangles) must fit in this many
# bytes.
_MAX_BYTES = 2**26
# A chunk's f x f systems take at most this many bytes.
_CHUNK_BYTES = 2**24


class _SupersetLeastSquares:
    """Decode by least squares on a support superset (see the module docstring).

    Parameters
    ----------
    g : ndarray of shape (n_kept, n_columns)
        The blocks' kept rows, unit-norm columns.
    offsets : ndarray of int
        Group boundaries in the columns.
    budget : int
        Most columns one sketch may use.
    u, sv, vt : ndarrays
        The SVD of ``g`` (full ``vt``).
    rank : int
        Its numerical rank.
    """

    def __init__(self, g, offsets, budget, u, sv, vt, rank):
        self.g, self.offsets, self.budget = g, offsets, budget
        widths = np.diff(offsets)
        self.widths = widths
        # Groups that can be chosen: those with columns (the caller checks
        # that every group's kept columns are linearly independent).
        self.usable = widths > 0
        self.group_of = np.repeat(np.arange(widths.size), widths)
        self.pinv_t = (u[:, :rank] / sv[:rank]) @ vt[:rank]  # (G^+)^T
        self.cond = float(sv[0] / sv[rank - 1])
        null = vt[rank:].T  # n_columns x f
        self.null = np.ascontiguousarray(null)
        f = null.shape[1]
        upper = np.triu_indices(f)
        self.group_gram = np.zeros((widths.size, upper[0].size))
        for group, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
            self.group_gram[group] = (null[lo:hi].T @ null[lo:hi])[upper]
        # Entry (i, j) of a full f x f matrix from its upper triangle.
        position = np.zeros((f, f), dtype=np.intp)
        position[upper] = np.arange(upper[0].size)
        position[upper[1], upper[0]] = position[upper]
        self.full_from_upper = position.ravel()
        self.identity_upper = np.eye(f)[upper]
        self.chunk = int(np.clip(_CHUNK_BYTES // (8 * max(f, 1) ** 2), 64, 4096))

    @staticmethod
    def fits(n_groups, f, budget):
        """Whether the method applies: ``f`` at most the budget, and the
        per-group products within the memory bound."""
        return f <= budget and n_groups * f * (f + 1) // 2 * 8 <= _MAX_BYTES

    def solve(self, sketches, stop, polish=False):
        """Coefficients of the unit columns, residuals, which sketches are
        explained (residual at most ``stop * ||s||``) and each one's columns
        solved over (a boolean mask; none where no column set was unique).
        ``polish``: solve the explained sketches again over the groups above
        the noise (where rounding is above the tolerance, as in float32)."""
        sketches = np.asarray(sketches, dtype=np.float64)
        n = sketches.shape[0]
        x = np.zeros((n, self.g.shape[1]))
        residual = np.empty_like(sketches)
        explained = np.zeros(n, dtype=bool)
        columns = np.zeros(x.shape, dtype=bool)
        for lo in range(0, n, self.chunk):
            part = slice(lo, lo + self.chunk)
            # One BLAS thread: the f x f solves are one small LAPACK call
            # each, and with BLAS threads left on, a process holding the
            # other core made the whole call 4-5 times slower (measured:
            # 3,300 vs 14,000-16,000 sketches/s at d = 256, 297 unknowns).
            with one_blas_thread():
                x[part], residual[part], explained[part], columns[part] = self._solve(
                    sketches[part], stop, polish)
        return x, residual, explained, columns

    def _solve(self, s, stop, polish):
        norm2 = np.einsum("ij,ij->i", s, s)
        target2 = stop**2 * norm2
        x0 = s @ self.pinv_t
        out = {"x": np.zeros_like(x0), "residual": s.copy(), "r2": norm2.copy(),
               "columns": np.zeros(x0.shape, dtype=bool),
               "explained": norm2 <= target2}
        pending = np.flatnonzero(~out["explained"])
        estimate = x0[pending]
        for _ in range(_ROUNDS):
            if not pending.size:
                break
            estimate, done = self._attempt(pending, self._select(estimate), s, x0,
                                           target2, out)
            pending, estimate = pending[~done], estimate[~done]
        if polish:
            # At a precision whose rounding is above tol, the columns of R
            # outside the support hold rounding that the support's columns
            # alone would not: solve again without the groups below the
            # target, and keep that where it still explains the sketch.
            rows = np.flatnonzero(out["explained"] & (norm2 > 0))
            if rows.size:
                energy = self._energy(out["x"][rows]) * self.widths
                groups = energy > target2[rows, None]
                self._attempt(rows, groups, s, x0, target2, out, polish=True)
        return out["x"], out["residual"], out["explained"], out["columns"]

    def _attempt(self, rows, groups, s, x0, target2, out, polish=False):
        """Solve ``rows`` over ``groups``; keep each answer where it improves
        on the best so far (its residual; polishing: where it explains the
        sketch). Returns the full estimates and which rows it explains."""
        columns = groups[:, self.group_of]
        estimate, unique = self._least_squares(groups, columns, x0[rows])
        kept = np.where(columns, estimate, 0.0)
        r = s[rows] - kept @ self.g.T
        r2 = np.einsum("ij,ij->i", r, r)
        done = unique & (r2 <= target2[rows])
        better = done if polish else unique & (r2 < out["r2"][rows])
        for name, value in (("x", kept), ("residual", r), ("r2", r2),
                            ("columns", columns)):
            out[name][rows[better]] = value[better]
        out["explained"][rows[done]] = True
        return estimate, done

    def _energy(self, estimate):
        """Mean squared value per column of each group (-inf: not usable)."""
        energy = np.full((estimate.shape[0], self.widths.size), -np.inf)
        usable = np.flatnonzero(self.usable)
        energy[:, usable] = np.add.reduceat(
            estimate * estimate, self.offsets[usable], axis=1) / self.widths[usable]
        return energy

    def _select(self, estimate):
        """The strongest usable groups of each row of ``estimate``, within
        the budget (a boolean mask over groups)."""
        energy = self._energy(estimate)
        order = np.argsort(-energy, axis=1, kind="stable")
        width = np.where(np.isfinite(np.take_along_axis(energy, order, axis=1)),
                         self.widths[order], self.budget + 1)
        chosen = np.zeros(energy.shape, dtype=bool)
        np.put_along_axis(chosen, order, np.cumsum(width, axis=1) <= self.budget,
                          axis=1)
        return chosen

    def condition_bound(self, columns):
        """Upper bound of the condition number of ``G`` over each row's
        ``columns`` ``R``: ``cond(G) / sqrt(lambda_min(I - N_R^T N_R))``,
        as ``||G y||^2 >= sigma_min(G)^2 (||y||^2 - ||N_R^T y||^2)`` for
        ``y`` on ``R`` (inf where that matrix is singular)."""
        if not self.null.shape[1]:
            return np.full(columns.shape[0], self.cond)
        with one_blas_thread():
            smallest = np.linalg.eigvalsh(self._system(self._groups(columns)))[:, 0]
        with np.errstate(divide="ignore"):
            return self.cond / np.sqrt(np.maximum(smallest, 0.0))

    def _groups(self, columns):
        """The groups holding any of ``columns`` (a mask over groups)."""
        groups = np.zeros((columns.shape[0], self.widths.size), dtype=bool)
        usable = np.flatnonzero(self.usable)
        groups[:, usable] = np.add.reduceat(columns, self.offsets[usable], axis=1) > 0
        return groups

    def _system(self, groups):
        """``I - N_R^T N_R`` for each row's groups ``R``."""
        f = self.null.shape[1]
        upper = self.identity_upper - groups.astype(np.float64) @ self.group_gram
        return np.take(upper, self.full_from_upper, axis=1).reshape(-1, f, f)

    def _least_squares(self, groups, columns, x0):
        """``x0 + N z`` closest to vanishing outside ``columns`` (``groups``:
        the same as a mask over groups), per row, and whether it is unique."""
        n, f = x0.shape[0], self.null.shape[1]
        if not f:
            return x0, np.ones(n, dtype=bool)
        a = self._system(groups)
        b = np.where(columns, x0, 0.0) @ self.null
        unique = np.ones(n, dtype=bool)
        try:
            z = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            # G_R is rank-deficient for some rows (degenerate blocks): no
            # unique solution on R there, so nothing to certify.
            z = np.zeros_like(b)
            for i in range(n):
                try:
                    z[i] = np.linalg.solve(a[i], b[i])
                except np.linalg.LinAlgError:
                    unique[i] = False
        return x0 + z @ self.null.T, unique
