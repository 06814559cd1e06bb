"""Other array libraries through the Array API: every result equals NumPy's.

Parametrized over the namespaces installed here (array-api-strict, the
reference implementation that refuses anything outside the standard, and
PyTorch on the CPU); the same tests run CuPy and CUDA tensors on a GPU
machine (benchmarks/bench_gpu.py checks those).
"""

import numpy as np
import pytest

from sksketch import (
    RecordBatch,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    erase,
    make_activation_records,
)
from sksketch._array_api import backend_of, segment_sum, sum_rows_by, to_numpy
from sksketch._batch import as_batch


def _strict():
    return pytest.importorskip("array_api_strict")


def _torch():
    torch = pytest.importorskip("torch")
    import array_api_compat

    return array_api_compat.array_namespace(torch.zeros(1))


@pytest.fixture(params=["array_api_strict", "torch"])
def xp(request):
    return _strict() if request.param == "array_api_strict" else _torch()


def _on(xp, array):
    return xp.asarray(np.asarray(array))


def _device_batch(batch, xp):
    """``batch`` with its attributes moved to ``xp`` (through the constructor)."""
    records = batch.to_records()
    rebuilt = RecordBatch(
        module=[batch._module_names[c] for c in batch._module_codes],
        attributes={name: _on(xp, block) for name, block in
                    zip(batch._module_names, batch._attributes)},
        record=batch._record, n_records=batch.n_records, weight=batch._weight,
        slot=[batch._slot_keys[c] for c in batch._slot_codes],
        edges=np.stack((batch._parent, batch._child), axis=1),
        roots=batch._roots)
    assert len(rebuilt.to_records()) == len(records)
    return rebuilt


@pytest.fixture(scope="module")
def records():
    return make_activation_records(24, random_state=0)[0]


def _assert_namespace(array, xp):
    import array_api_compat

    assert array_api_compat.array_namespace(array).__name__ == xp.__name__


@pytest.mark.parametrize("engine", ["unrolled", "levelwise", "auto"])
@pytest.mark.parametrize("matrix", ["gaussian", "sparse_sign"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sketches_equal_numpy(xp, records, engine, matrix, dtype):
    batch = as_batch(records)
    sketcher = RecursiveSketcher(48, engine=engine, matrix=matrix, dtype=dtype,
                                 random_state=3).fit(batch)
    expected = sketcher.transform(batch)
    got = sketcher.transform(_device_batch(batch, xp))
    _assert_namespace(got, xp)
    assert str(got.dtype).endswith(dtype)
    # Same draws, products in another library: rounding apart only.
    eps = np.finfo(dtype).eps
    scale = np.abs(expected).max()
    np.testing.assert_allclose(to_numpy(got), expected, rtol=0,
                               atol=200 * eps * scale)


def test_mixed_plan_and_deep_records(xp):
    """A batch using both engines (trees and a lattice) reassembles in order."""
    from sksketch._shapes import lattice

    trees = as_batch(make_activation_records(6, random_state=1)[0])
    lattice_batch = lattice(12, width=2, n_records=2)
    batch = as_batch(trees.to_records() + lattice_batch.to_records())
    sketcher = RecursiveSketcher(32, random_state=0).fit(batch)
    expected = sketcher.transform(batch)
    got = to_numpy(sketcher.transform(_device_batch(batch, xp)))
    np.testing.assert_allclose(got, expected, rtol=1e-12,
                               atol=1e-12 * np.abs(expected).max())


def test_to_namespace_round_trip(xp, records):
    batch = as_batch(records)
    moved = batch.to_namespace(xp)
    assert all(backend_of(block).xp is not np for block in moved._attributes)
    back = moved.to_namespace(np)
    for before, after in zip(batch._attributes, back._attributes):
        np.testing.assert_array_equal(before, after)
    assert back.to_records()[3] == batch.to_records()[3]
    with pytest.raises(ValueError, match="CPU"):
        batch.to_namespace(np, device="cuda")
    with pytest.raises(TypeError, match="array library"):
        batch.to_namespace("cupy")


def test_device_batch_validation(xp):
    good = {"m": _on(xp, [[1.0, 2.0]])}
    batch = RecordBatch(module=["m"], attributes=good)
    assert backend_of(*batch._attributes).xp is not np
    with pytest.raises(ValueError, match="record 0, object 0.*non-finite"):
        RecordBatch(module=["m"], attributes={"m": _on(xp, [[np.nan, 1.0]])})
    with pytest.raises(TypeError, match="module 'm' must be a 2-D array"):
        RecordBatch(module=["m"], attributes={"m": _on(xp, [1.0, 2.0])})
    with pytest.raises(ValueError, match="several array libraries"):
        RecordBatch(module=["m", "n"],
                    attributes={"m": _on(xp, [[1.0]]), "n": _other(xp)})
    taken = batch.take([0, 0])
    assert taken.n_records == 2 and backend_of(*taken._attributes).xp is not np


def _other(xp):
    """An array of another library than ``xp``."""
    if "strict" in xp.__name__:
        return _torch().asarray([[1.0]])
    return _strict().asarray([[1.0]])


@pytest.mark.parametrize("method", ["lstsq", "transpose"])
def test_decoders_equal_numpy(xp, records, method):
    sketcher = RecursiveSketcher(256, random_state=0)
    recoverer = SketchAttributeRecoverer(sketcher, method=method).fit(records)
    S = recoverer.sketcher_.transform(records)
    Sx = _on(xp, S)
    tol = dict(rtol=0, atol=1e-9)

    features = recoverer.transform(Sx)
    _assert_namespace(features, xp)
    np.testing.assert_allclose(to_numpy(features), recoverer.transform(S), **tol)

    path = [(recoverer.paths_[-1][i], 0) for i in range(len(recoverer.paths_[-1]))]
    path[-1] = (path[-1][0], recoverer.slots_[recoverer.paths_[-1]][0])
    np.testing.assert_allclose(to_numpy(recoverer.recover(Sx, path)),
                               recoverer.recover(S, path), **tol)

    module = recoverer.paths_[0][-1]
    stats, expected = recoverer.statistics(Sx, module), recoverer.statistics(S, module)
    for key in ("count", "sum", "mean"):
        _assert_namespace(stats[key], xp)
        np.testing.assert_allclose(to_numpy(stats[key]), expected[key], **tol)

    _assert_same_tree(recoverer.unroll(Sx[0, ...]), recoverer.unroll(S[0]))
    residual = recoverer.residual_norm(Sx)
    _assert_namespace(residual, xp)
    np.testing.assert_allclose(to_numpy(residual), recoverer.residual_norm(S),
                               rtol=0, atol=1e-12)


def _assert_same_tree(got, expected):
    assert got.keys() == expected.keys()
    for module, node in expected.items():
        assert got[module]["count"] == pytest.approx(node["count"], abs=1e-9)
        _assert_same_tree(got[module]["children"], node["children"])


def test_group_pursuit_on_host_returns_device_arrays(xp, records):
    """Too few kept coordinates for one solve: the pursuit path, same answer."""
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(256, random_state=0), max_active=0.2).fit(records)
    S = recoverer.sketcher_.transform(records)
    assert recoverer._decoder()._factor(np.arange(256))[0] == "omp"
    got = recoverer.transform(_on(xp, S))
    _assert_namespace(got, xp)
    np.testing.assert_allclose(to_numpy(got), recoverer.transform(S), rtol=0,
                               atol=1e-9)


def test_records_on_device_decode_on_device(xp, records):
    batch = _device_batch(as_batch(records), xp)
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(256, random_state=0))
    recoverer.fit(records)
    got = recoverer.transform(batch)
    _assert_namespace(got, xp)
    np.testing.assert_allclose(to_numpy(got), recoverer.transform(records),
                               rtol=0, atol=1e-9)


def test_erase_keeps_namespace(xp):
    S = np.arange(24.0).reshape(4, 6)
    for keep in (3, 0.5, np.array([True, False] * 3)):
        got, kept = erase(_on(xp, S), keep, random_state=0)
        expected, expected_kept = erase(S, keep, random_state=0)
        _assert_namespace(got, xp)
        np.testing.assert_array_equal(to_numpy(got), expected)
        np.testing.assert_array_equal(kept, expected_kept)


def test_sketch_validation_on_device(xp, records):
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(64, random_state=0)).fit(records)
    with pytest.raises(ValueError, match="NaN or infinity"):
        recoverer.transform(_on(xp, np.full((1, 64), np.nan)))
    with pytest.raises(ValueError, match="2-D"):
        recoverer.transform(_on(xp, np.ones(64)))


@pytest.mark.parametrize("lengths", [[1], [3, 1, 4, 1, 5], [7, 2, 2], [16]])
def test_segment_sum_matches_reduceat(xp, lengths):
    """The pairwise (gather-only) sum equals NumPy's add.reduceat."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((sum(lengths), 3))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    backend = backend_of(_on(xp, values))
    got = to_numpy(segment_sum(backend, _on(xp, values), starts))
    np.testing.assert_allclose(got, np.add.reduceat(values, starts, axis=0),
                               rtol=1e-14, atol=1e-14)
    group = np.repeat(np.arange(len(lengths)) * 2, lengths)  # odd groups empty
    sums = to_numpy(sum_rows_by(backend, _on(xp, values), group, 2 * len(lengths)))
    np.testing.assert_allclose(sums[::2], got, rtol=1e-14, atol=1e-14)
    assert not sums[1::2].any()


def test_network_transform_equals_numpy(xp):
    from sksketch import NetworkRecoveryDictionaryLearner

    records, _, network = make_activation_records(
        200, n_modules=6, connectivity="dense", weights="random",
        random_state=0, return_network=True)
    S = RecursiveSketcher(128, random_state=0).fit_transform(records)
    learner = NetworkRecoveryDictionaryLearner(
        layers=network.layers[::-1]).fit(S, records)
    expected = learner.transform(S)
    got = learner.transform(_on(xp, S))
    _assert_namespace(got, xp)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=0,
                               atol=1e-9 * np.abs(expected).max())
    with pytest.raises(ValueError, match="expecting 128 features"):
        learner.transform(_on(xp, S[:, :5]))


# -- a hostile user's inputs ---------------------------------------------------

def _rebuilt(batch, blocks):
    """``batch`` through the constructor, with attribute ``blocks`` per module."""
    return RecordBatch(
        module=[batch._module_names[c] for c in batch._module_codes],
        attributes=dict(zip(batch._module_names, blocks)),
        record=batch._record, n_records=batch.n_records,
        slot=[batch._slot_keys[c] for c in batch._slot_codes],
        edges=np.stack((batch._parent, batch._child), axis=1), roots=batch._roots)


def test_mixed_numpy_and_device_attributes_refused(xp, records):
    """A batch mixing NumPy and another library's blocks is refused up front."""
    batch = as_batch(records)
    blocks = [_on(xp, block) if code == 0 else block
              for code, block in enumerate(batch._attributes)]
    with pytest.raises(ValueError, match=r"one array library.*to_namespace"):
        _rebuilt(batch, blocks)


def test_device_arrays_are_not_records(xp):
    """Sketches of a library other than NumPy passed as records: a clear TypeError."""
    with pytest.raises(TypeError, match="got an array of shape"):
        as_batch(_on(xp, np.ones((3, 8))))


# Rounded to half precision, sketches leave a residual above float64 noise.
@pytest.mark.filterwarnings("ignore::sksketch.OutOfStructureWarning")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_sketches_decode_in_float64_like_numpy(records, dtype):
    """NumPy decodes float16 sketches in float64 (check_array); so does torch."""
    torch = pytest.importorskip("torch")
    sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    recoverer = SketchAttributeRecoverer(sketcher).fit(records)
    S = sketcher.transform(records)
    half = torch.from_numpy(S).to(getattr(torch, dtype))
    expected = recoverer.transform(half.double().numpy().astype(np.float16)
                                   if dtype == "float16"
                                   else half.double().numpy())
    got = recoverer.transform(half)
    assert got.dtype == torch.float64 and expected.dtype == np.float64
    np.testing.assert_array_equal(got.numpy(), expected)


def test_tensors_requiring_grad_and_bfloat16_in_records(records):
    """Record dicts holding tensors (autograd on, or bfloat16) sketch as NumPy."""
    torch = pytest.importorskip("torch")
    sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    for dtype in (torch.float64, torch.bfloat16):
        dicts = []
        for record in records:
            data = record.to_dict()
            for obj in data["objects"]:
                obj["attributes"] = torch.tensor(
                    np.asarray(obj["attributes"]), requires_grad=True).to(dtype)
            dicts.append(data)
        host = [dict(data, objects=[dict(obj, attributes=obj["attributes"].detach()
                                         .double().numpy())
                                    for obj in data["objects"]]) for data in dicts]
        np.testing.assert_array_equal(sketcher.transform(dicts),
                                      sketcher.transform(host))


def test_repository_takes_tensors_requiring_grad(records, tmp_path):
    torch = pytest.importorskip("torch")
    from sksketch import SketchRepository

    sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    S = sketcher.transform(records)
    repository = SketchRepository(tmp_path / "repo", sketcher=sketcher)
    repository.add(torch.from_numpy(S).requires_grad_(True))
    ids, _ = repository.query(torch.from_numpy(S[:2]).requires_grad_(True), k=1)
    assert np.asarray(ids).ravel().tolist() == [0, 1]
    repository.close()


@pytest.mark.parametrize("engine", ["unrolled", "levelwise"])
def test_attributes_requiring_grad_sketch_detached(records, engine):
    """Autograd stops at sksketch on every engine (the unrolled one computes on
    the host): sketches never carry a graph, so no gradient is partial."""
    torch = pytest.importorskip("torch")
    batch = as_batch(records)
    blocks = [torch.from_numpy(block.copy()).requires_grad_(True)
              for block in batch._attributes]
    sketcher = RecursiveSketcher(64, engine=engine, random_state=0).fit(batch)
    got = sketcher.transform(_rebuilt(batch, blocks))
    assert not got.requires_grad
    np.testing.assert_allclose(got.numpy(), sketcher.transform(batch),
                               rtol=1e-12, atol=1e-12)


def test_index_arrays_on_a_device(records):
    """``keep``, ``kept`` and record indices may live on a device (here the
    strict library's second device, which refuses implicit NumPy copies)."""
    xs = _strict()
    device = xs.Device("device1")
    sketcher = RecursiveSketcher(256, random_state=0).fit(records)
    recoverer = SketchAttributeRecoverer(sketcher).fit(records)
    S = sketcher.transform(records)
    erased, kept = erase(S, 0.6, random_state=0)
    got, got_kept = erase(xs.asarray(S, device=device),
                          xs.asarray(kept, device=device))
    np.testing.assert_array_equal(got_kept, kept)
    np.testing.assert_array_equal(to_numpy(got), erased)
    features = recoverer.transform(xs.asarray(erased, device=device),
                                   kept=xs.asarray(kept, device=device))
    np.testing.assert_allclose(to_numpy(features),
                               recoverer.transform(erased, kept=kept),
                               rtol=1e-12, atol=1e-12)
    batch = as_batch(records).to_namespace(xs, device=device)
    taken = batch[xs.asarray([2, 0], device=device)]
    np.testing.assert_allclose(to_numpy(sketcher.transform(taken)), S[[2, 0]],
                               rtol=1e-12, atol=1e-12)


def test_set_output_pandas_copies_device_results_to_the_host():
    """A DataFrame is host memory: transform copies results from a device
    (which refuses sklearn's implicit conversion) before wrapping them."""
    pytest.importorskip("pandas")
    from sksketch import NetworkRecoveryDictionaryLearner

    xs = _strict()
    device = xs.Device("device1")
    records, _, network = make_activation_records(
        200, n_modules=6, connectivity="dense", weights="random",
        random_state=0, return_network=True)
    sketcher = RecursiveSketcher(128, random_state=0).fit(records)
    recoverer = SketchAttributeRecoverer(sketcher).fit(records)
    S = sketcher.transform(records)
    S_device = xs.asarray(S, device=device)
    learner = NetworkRecoveryDictionaryLearner(
        layers=network.layers[::-1]).fit(S_device, records)  # fit on the host
    expected = {"sketcher": S, "recoverer": recoverer.transform(S),
                "learner": learner.transform(S)}
    batch = as_batch(records).to_namespace(xs, device=device)
    for name, estimator, X in (("sketcher", sketcher, batch),
                               ("recoverer", recoverer, S_device),
                               ("learner", learner, S_device)):
        frame = estimator.set_output(transform="pandas").transform(X)
        assert list(frame.columns) == list(estimator.get_feature_names_out())
        np.testing.assert_allclose(frame.to_numpy(), expected[name], rtol=0,
                                   atol=1e-9 * np.abs(expected[name]).max())


@pytest.mark.parametrize("dtype", ["int64", "float16", "complex128", bool, "torch"])
def test_batch_dtype_must_be_float32_or_float64(records, dtype):
    """astype/constructor dtypes that would truncate or drop parts are refused."""
    if dtype == "torch":
        dtype = pytest.importorskip("torch").float32  # NumPy's dtypes only
    batch = as_batch(records)
    with pytest.raises(TypeError, match="'dtype' must be float32 or float64"):
        batch.astype(dtype)
    with pytest.raises(TypeError, match="'dtype' must be float32 or float64"):
        RecordBatch(module=["a"], attributes={"a": np.ones((1, 2))}, dtype=dtype)


def test_erase_takes_a_zero_dimensional_keep(xp):
    S = np.arange(24.0).reshape(3, 8)
    for keep, expected in ((np.array(3), 3), (_on(xp, 3), 3),
                           (_on(xp, np.float64(0.5)), 4)):
        got, kept = erase(_on(xp, S), keep, random_state=0)
        assert kept.size == expected and got.shape == (3, expected)
    with pytest.raises(TypeError, match="'keep' must be an int"):
        erase(S, np.array(True))
