"""Least squares on a support superset: exact where the group pursuit is, certified."""

import numpy as np
import pytest

from sksketch import (
    OutOfStructureWarning,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    _decode,
    make_activation_records,
)
from sksketch._batch import as_batch
from sksketch._unroll import coefficients, unroll


def _problem(n_modules=9, fan_in=3, n_roots=(1, 2), sketch_dim=256, erase=False,
             dtype="float64", n=200, seed=0):
    records, _ = make_activation_records(
        n, n_modules=n_modules, depth=3, fan_in=fan_in, n_roots=n_roots,
        shared_fraction=0.3, weights="random", random_state=seed)
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(sketch_dim, random_state=1, dtype=dtype)).fit(records)
    sketches = recoverer.sketcher_.transform(records)
    kept = (np.sort(np.random.default_rng(0).choice(sketch_dim, 3 * sketch_dim // 4,
                                                    replace=False))
            if erase else np.arange(sketch_dim))
    kind, pursuit, superset = recoverer._decoder()._factor(kept)
    assert kind == "omp" and superset is not None
    batch = as_batch(records)
    truth = coefficients(batch, unroll(batch, max_depth=recoverer.max_depth),
                         recoverer._structure.layout)
    return sketches[:, kept].astype(np.float64), pursuit, superset, truth


@pytest.mark.parametrize("params", [
    {},  # 297 unknowns, d = 256: null space of 41 dimensions
    {"n_modules": 12, "n_roots": (1, 3), "erase": True, "seed": 268},  # 192 kept
    {"n_modules": 10, "fan_in": 2, "n_roots": (2, 3), "sketch_dim": 128},
])
def test_explains_every_sketch_the_pursuit_explains_with_the_true_answer(params):
    s, pursuit, superset, truth = _problem(**params)
    tol = 1e-10
    x, residual, explained, _ = superset.solve(s, tol)
    z_omp, residual_omp, _ = pursuit.solve(s, 1e6, stop=tol)
    norms = np.linalg.norm(s, axis=1)
    by_pursuit = np.linalg.norm(residual_omp, axis=1) <= tol * norms
    assert by_pursuit.sum() >= 50
    assert np.all(explained[by_pursuit])
    # What the superset explains is the truth, never another solution: its
    # certificate holds for any guess R within the budget.
    scale = np.abs(truth).max(axis=1, keepdims=True)
    np.testing.assert_allclose((x / pursuit.norms)[explained] / scale[explained],
                               truth[explained] / scale[explained], atol=1e-9)
    # The residual returned is the sketch's residual.
    np.testing.assert_allclose(residual, s - x @ superset.g.T, atol=1e-12)


def test_sketches_beyond_the_budget_are_not_certified():
    # Sums of 8 sketches use far more columns than d / 2: no set within the
    # budget explains them, and none is reported as explained.
    s, pursuit, superset, _ = _problem()
    sums = s[:80].reshape(10, 8, -1).sum(axis=1)
    _, residual, explained, columns = superset.solve(sums, 1e-10)
    assert not explained.any()
    assert np.all(columns.sum(axis=1) <= superset.budget)
    assert np.all(np.linalg.norm(residual, axis=1)
                  > 1e-6 * np.linalg.norm(sums, axis=1))


def test_condition_bound_holds():
    s, pursuit, superset, _ = _problem()
    _, _, _, columns = superset.solve(s[:40], 1e-10)
    bound = superset.condition_bound(columns)
    order = np.argsort(~columns, axis=1, kind="stable")
    width = columns.sum(axis=1)
    exact = pursuit._condition(order[:, :width.max()], width)
    assert np.all(exact <= bound * (1 + 1e-9))
    assert np.all(np.isfinite(bound))


def test_float32_answers_are_solved_over_the_support_only():
    # Rounding of float32 sketches is above tol: the answer is solved again
    # without the groups below the noise, so columns outside the support hold
    # exact zeros, as the pursuit's do.
    s, pursuit, superset, truth = _problem(dtype="float32")
    floor = _decode._noise_level(np.finfo(np.float32).eps, s.shape[1], 1.0)
    x, _, explained, columns = superset.solve(s, floor, polish=True)
    assert explained.mean() > 0.9
    outside = (truth == 0) & explained[:, None]
    assert np.count_nonzero(x[outside]) <= 0.01 * outside.sum()
    assert np.all(columns[explained] | (truth[explained] == 0))


def test_decoder_flags_what_it_cannot_certify():
    records, _ = make_activation_records(
        80, n_modules=9, depth=3, fan_in=3, n_roots=(1, 2), shared_fraction=0.3,
        weights="random", random_state=0)
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(256, random_state=1)).fit(records)
    sums = recoverer.sketcher_.transform(records).reshape(10, 8, -1).sum(axis=1)
    with pytest.warns(OutOfStructureWarning, match="10 of 10 sketches"):
        recoverer.transform(sums)


@pytest.mark.parametrize("dependent", [False, True])
def test_groups_with_dependent_columns_leave_decoding_to_the_pursuit(dependent):
    # A group whose kept columns are dependent has no unique solution over
    # any set holding it. 10 kept rows, 12 columns: a null space of 2.
    rng = np.random.default_rng(0)
    g = rng.standard_normal((10, 12))
    if dependent:
        g[:, 3] = g[:, 2]  # group 1 (columns 2-5) has rank 3
    g /= np.linalg.norm(g, axis=0)
    offsets = np.array([0, 2, 6, 9, 12])
    pursuit = _decode._GroupPursuit(g, np.ones(12), offsets, 5, 1e-10)
    superset = _decode._superset(g, offsets, 5, pursuit)
    assert (superset is None) == dependent
