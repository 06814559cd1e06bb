"""SketchAttributeRecoverer as a scikit-learn transformer over sketches."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sksketch import (
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
