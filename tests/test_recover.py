"""SketchAttributeRecoverer as a scikit-learn transformer over sketches."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sksketch import (
    ActivationRecord,
    OutOfStructureWarning,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    make_activation_records,
)


@pytest.fixture(scope="module")
def fitted():
    records, labels = make_activation_records(80, n_classes=3, class_sep=2.0,
                                              random_state=0)
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(256, random_state=0))
    recoverer.fit(records)
    return recoverer, records, labels, recoverer.sketcher_.transform(records)


def test_fit_clones_an_unfitted_sketcher_and_keeps_a_fitted_one(fitted):
    _, records, _, _ = fitted
    unfitted = RecursiveSketcher(64, random_state=0)
    recoverer = SketchAttributeRecoverer(unfitted).fit(records)
    assert recoverer.sketcher_ is not unfitted and not hasattr(unfitted, "seed_")
    sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    assert SketchAttributeRecoverer(sketcher).fit(records).sketcher_ is sketcher
    default = SketchAttributeRecoverer().fit(records)
    assert default.n_features_in_ == RecursiveSketcher().sketch_dim


def test_feature_names(fitted):
    recoverer, _, _, sketches = fitted
    names = recoverer.get_feature_names_out()
    assert names[0] == "L0M0:count" and names[1] == "L0M0:mean0"
    assert "L0M0/L1M0:count" in names or "L0M0/L1M1:count" in names
    assert recoverer.transform(sketches).shape == (len(sketches), names.size)
    expected = sum(1 + recoverer.sketcher_.modules_[p[-1]] for p in recoverer.paths_)
    assert names.size == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_preserves_dtype(fitted, dtype):
    recoverer, _, _, sketches = fitted
    out = recoverer.transform(sketches.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, recoverer.transform(sketches),
                               atol=1e-3 if dtype == np.float32 else 0)


def test_set_output_pandas(fitted):
    pd = pytest.importorskip("pandas")
    recoverer, _, _, sketches = fitted
    frame = clone(recoverer).fit(fitted[1]).set_output(transform="pandas").transform(
        sketches)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(recoverer.get_feature_names_out())


def test_pickle_and_clone(fitted):
    recoverer, records, _, sketches = fitted
    expected = recoverer.transform(sketches)
    restored = pickle.loads(pickle.dumps(recoverer))
    np.testing.assert_array_equal(restored.transform(sketches), expected)
    np.testing.assert_array_equal(clone(recoverer).fit(records).transform(sketches),
                                  expected)
    assert len(pickle.dumps(recoverer)) < 20_000  # no matrices, no factors


def test_pipeline_on_records(fitted):
    _, records, labels, _ = fitted
    # The recoverer wraps the sketcher: fit and transform both take records.
    model = make_pipeline(SketchAttributeRecoverer(RecursiveSketcher(256,
                                                                     random_state=0)),
                          LogisticRegression(max_iter=2000))
    model.fit(records, labels)
    assert model.score(records, labels) >= 0.9


def test_transform_accepts_records(fitted):
    recoverer, records, _, sketches = fitted
    np.testing.assert_array_equal(recoverer.transform(records),
                                  recoverer.transform(sketches))


def test_errors(fitted):
    recoverer, _, _, sketches = fitted
    with pytest.raises(NotFittedError):
        SketchAttributeRecoverer().transform(sketches)
    with pytest.raises(ValueError, match="more than the sketcher's sketch_dim=256"):
        recoverer.transform(np.zeros((2, 300)))
    with pytest.raises(ValueError, match="'kept' names 3 coordinates"):
        recoverer.transform(sketches[:, :4], kept=[0, 1, 2])
    with pytest.raises(ValueError, match="module path 'nope' was not seen in fit"):
        recoverer.recover(sketches, [("nope", 0)])
    with pytest.raises(ValueError, match="slot 99 of 'L0M0' was not seen"):
        recoverer.recover(sketches, [("L0M0", 99)])
    with pytest.raises(TypeError, match="sequence of .module, slot. pairs"):
        recoverer.recover(sketches, "L0M0")
    with pytest.raises(ValueError, match="module 'nope' ends no learned path"):
        recoverer.statistics(sketches, "nope")
    with pytest.raises(ValueError, match="one sketch"):
        recoverer.unroll(sketches)
    with pytest.raises(ValueError, match="contains NaN"):
        recoverer.transform(np.full((1, 256), np.nan))
    with pytest.raises(ValueError, match="method"):
        SketchAttributeRecoverer(method="magic").fit(fitted[1])


def test_fitted_sketcher_must_know_the_modules(fitted):
    _, records, _, _ = fitted
    sketcher = RecursiveSketcher(32, random_state=0).fit(records[:1])
    missing = next(r for r in records if not set(r.modules) <= set(sketcher.modules_))
    with pytest.raises(ValueError, match="was not seen in fit"):
        SketchAttributeRecoverer(sketcher).fit([missing])


def test_max_depth_limits_the_paths(fitted):
    _, records, _, _ = fitted
    shallow = SketchAttributeRecoverer(RecursiveSketcher(256, random_state=0),
                                       max_depth=1).fit(records)
    assert all(len(p) == 1 for p in shallow.paths_)


def test_records_whose_paths_explode_are_refused_with_the_arithmetic():
    from sksketch import _shapes as shapes

    # 2^20 module paths: refused after a capped count, not enumerated.
    batch = shapes.lattice(20, n_records=2)
    with pytest.raises(ValueError, match=r"record 0: .* more than 8,192 .*"
                                         r"sketch_dim=128.*max_depth"):
        SketchAttributeRecoverer(RecursiveSketcher(128, random_state=0)).fit(batch)
    # The top levels still decode: 2 modules per layer, 2 + 4 + 8 paths.
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(128, random_state=0),
                                         max_depth=3).fit(batch)
    assert len(recoverer.paths_) == 14


def _leaf_record(slot):
    return ActivationRecord([
        {"id": 0, "module": "root", "attributes": [0.5, -1.0], "inputs": [1]},
        {"id": 1, "module": "leaf", "attributes": [1.0, 2.0, 3.0], "slot": slot}])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_slot_not_seen_in_fit_is_flagged(dtype):
    # Fit on a leaf in slot 0; the same DAG with the leaf in slot 5 puts
    # H_{leaf,5} u in the sketch, a direction no learned block has: its
    # residual is of order 1, while a sketch of the learned slot leaves only
    # rounding (100 eps sqrt(d) cond: 4e-13 in float64, 2e-4 in float32).
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(64, dtype=dtype, random_state=0)).fit([_leaf_record(0)])
    seen, unseen = recoverer.sketcher_.transform([_leaf_record(0), _leaf_record(5)])
    eps = np.finfo(dtype).eps
    residual = recoverer.residual_norm(np.vstack([seen, unseen]))
    assert residual.shape == (2,)
    assert residual[0] <= eps * np.sqrt(64) and residual[1] > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recoverer.transform(seen[None])  # explained: silent
        recoverer.transform(seen[None].astype(np.float64))  # float32 numbers
    with pytest.warns(OutOfStructureWarning,
                      match=r"1 of 2 sketches are not explained.*residual_norm"):
        recoverer.transform(np.vstack([seen, unseen]))
    for method, args in (("recover", ([("root", 0), ("leaf", 0)],)),
                         ("statistics", ("leaf",))):
        with pytest.warns(OutOfStructureWarning):
            getattr(recoverer, method)(unseen[None], *args)
    with pytest.warns(OutOfStructureWarning):
        recoverer.unroll(unseen)


def test_residual_norm_in_the_pursuit_regime_and_for_transpose():
    # More unknowns than d/2: the pursuit's residual judges the sketch.
    records, _ = make_activation_records(60, n_modules=9, depth=3, fan_in=3,
                                         n_roots=1, n_children=1, branching="one",
                                         weights="random", random_state=0)
    sketcher = RecursiveSketcher(128, random_state=0).fit(records)
    recoverer = SketchAttributeRecoverer(sketcher).fit(records[:30])
    assert recoverer._structure.n_unknowns > 64
    sketches = sketcher.transform(records)
    residual = recoverer.residual_norm(sketches)
    seen = {p for p in recoverer.paths_}
    explained = np.array([set(_paths_of(r)) <= seen for r in records])
    assert explained[:30].all() and not explained.all()
    assert np.all(residual[explained] <= recoverer.tol)
    assert np.all(residual[~explained] > 0.01)
    with pytest.warns(OutOfStructureWarning,
                      match=f"{(~explained).sum()} of 60 sketches"):
        recoverer.transform(sketches)
    # The transpose decoder has no residual to judge; residual_norm still
    # answers with least squares.
    transpose = SketchAttributeRecoverer(sketcher, method="transpose").fit(
        records[:30])
    np.testing.assert_array_equal(transpose.residual_norm(sketches), residual)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transpose.transform(sketches)


def _paths_of(record):
    """Module paths from the roots of a tree record."""
    children = {o.id: o.inputs for o in record.objects}
    module = dict(zip(record.ids, record.modules))
    stack = [((module[i],), i) for i in record.roots]
    while stack:
        path, i = stack.pop()
        yield path
        stack += [(path + (module[c],), c) for c in children[i]]


def test_residual_norm_of_a_zero_sketch_is_zero(fitted):
    recoverer, _, _, sketches = fitted
    assert recoverer.residual_norm(np.zeros((1, 256)))[0] == 0
    with pytest.raises(NotFittedError):
        SketchAttributeRecoverer().residual_norm(sketches)
