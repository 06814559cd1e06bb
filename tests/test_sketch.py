import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from sklearn.base import clone

from sksketch import (
    ActivationRecord,
    RecordBatch,
    RecursiveSketcher,
    make_activation_records,
    merge_records,
)
from sksketch._reference import reference_sketch

from .conftest import random_dag_record


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("wrapper", ["half_identity", "none"])
@pytest.mark.parametrize("matrix", ["gaussian", "rademacher", "sparse_sign"])
@pytest.mark.parametrize("engine", ["auto", "unrolled", "levelwise"])
def test_engine_matches_reference_recursion(seed, wrapper, matrix, engine):
    # Random DAGs: shared children, several roots, zero weights, a module
    # consuming its own module, mixed slot kinds.
    rng = np.random.default_rng(seed)
    fit_records = [random_dag_record(rng) for _ in range(20)]
    sketcher = RecursiveSketcher(64, wrapper=wrapper, matrix=matrix, engine=engine,
                                 random_state=seed).fit(fit_records)
    # Records with slots never seen in fit: blocks are built on demand.
    new_records = [random_dag_record(rng, slot_pool=["new", (7, 7), 99])
                   for _ in range(10)]
    records = fit_records + new_records
    sketches = sketcher.transform(records)
    expected = np.array([reference_sketch(r, sketcher) for r in records])
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(sketches, expected, rtol=0, atol=1e-10 * scale)


def test_engine_matches_reference_on_synthetic_network():
    records, _ = make_activation_records(30, depth=4, n_modules=8,
                                         shared_fraction=0.5, weights="random",
                                         random_state=0)
    sketcher = RecursiveSketcher(128, random_state=0).fit(records)
    expected = np.array([reference_sketch(r, sketcher) for r in records])
    np.testing.assert_allclose(sketcher.transform(records), expected, rtol=0,
                               atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("engine", ["unrolled", "levelwise"])
def test_float32_agrees_with_float64(dag_records, engine):
    s64 = RecursiveSketcher(64, random_state=0).fit_transform(dag_records)
    s32 = RecursiveSketcher(64, dtype="float32", engine=engine,
                            random_state=0).fit_transform(dag_records)
    assert s32.dtype == np.float32 and s64.dtype == np.float64
    # float32 rounding of the blocks and coefficients: ~1e-7 relative per term
    np.testing.assert_allclose(s32, s64, rtol=0, atol=1e-5 * np.abs(s64).max())


@pytest.mark.parametrize("engine", ["unrolled", "levelwise"])
def test_linearity_union_is_sum(dag_records, engine):
    sketcher = RecursiveSketcher(64, engine=engine, random_state=3).fit(dag_records)
    sketches = sketcher.transform(dag_records)
    for a, b in [(0, 1), (2, 7), (5, 5)]:
        union = merge_records([dag_records[a], dag_records[b]])
        merged = sketcher.transform([union])[0]
        np.testing.assert_allclose(merged, sketches[a] + sketches[b], rtol=0,
                                   atol=1e-12 * np.abs(sketches).max())


@pytest.mark.parametrize("factor", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("engine", ["unrolled", "levelwise"])
def test_scaling_root_weights_scales_sketch(dag_records, factor, engine):
    sketcher = RecursiveSketcher(64, engine=engine, random_state=4).fit(dag_records)
    sketches = sketcher.transform(dag_records)
    scaled_records = []
    for record in dag_records:
        roots = set(record.roots)
        scaled_records.append(ActivationRecord(
            [obj._replace(weight=obj.weight * factor) if obj.id in roots else obj
             for obj in record.objects], outputs=record.roots))
    scaled = sketcher.transform(scaled_records)
    np.testing.assert_allclose(scaled, factor * sketches, rtol=0,
                               atol=1e-12 * np.abs(sketches).max())


def test_empty_records_and_empty_batch(dag_records):
    sketcher = RecursiveSketcher(32, random_state=0).fit(dag_records)
    sketches = sketcher.transform([{"objects": []}, dag_records[0]])
    assert sketches.shape == (2, 32)
    assert not sketches[0].any() and sketches[1].any()
    assert sketcher.transform([]).shape == (0, 32)


def test_record_batch_input_matches_records(dag_records):
    sketcher = RecursiveSketcher(32, random_state=0).fit(dag_records)
    batch = RecordBatch.from_records(dag_records)
    np.testing.assert_array_equal(sketcher.transform(batch),
                                  sketcher.transform(dag_records))


def test_chunked_engine_matches_single_product(dag_records, monkeypatch):
    import sksketch._sketch as sketch_module

    sketcher = RecursiveSketcher(32, random_state=0).fit(dag_records)
    whole = sketcher.transform(dag_records)
    monkeypatch.setattr(sketch_module, "_CHUNK_ELEMENTS", 1)  # one record a chunk
    np.testing.assert_allclose(sketcher.transform(dag_records), whole, rtol=0,
                               atol=1e-12 * np.abs(whole).max())


def test_tiny_cache_gives_same_sketches(dag_records):
    big = RecursiveSketcher(64, random_state=0).fit(dag_records)
    # Room for one module's wiring and wrapper matrices, nothing else.
    pair_mib = 2 * 64 * 64 * 8 / 2**20
    tiny = RecursiveSketcher(64, cache_size=pair_mib, random_state=0).fit(
        dag_records)
    expected = big.transform(dag_records)
    np.testing.assert_array_equal(tiny.transform(dag_records), expected)
    assert tiny._matrices()._cache.n_bytes <= max(pair_mib * 2**20, 64 * 64 * 8)


def test_fit_learns_modules_and_graph():
    record = {"objects": [
        {"id": 0, "module": "edge", "attributes": [0.1, 0.3]},
        {"id": 1, "module": "cat", "attributes": [1.0, 0.2, 0.5], "inputs": [0]},
        {"id": 2, "module": "output", "attributes": [0.7], "inputs": [1]}]}
    sketcher = RecursiveSketcher(16, random_state=0).fit([record])
    assert sketcher.modules_ == {"cat": 3, "edge": 2, "output": 1}
    assert sketcher.module_graph_ == {"cat": ("edge",), "output": ("cat",)}
    assert isinstance(sketcher.seed_, int)


def test_partial_fit_adds_modules_without_changing_sketches(dag_records):
    without_dog = [r for r in dag_records if "dog" not in r.modules]
    with_dog = [r for r in dag_records if "dog" in r.modules]
    assert without_dog and with_dog
    sketcher = RecursiveSketcher(64, random_state=0).partial_fit(without_dog)
    before = sketcher.transform(without_dog)
    with pytest.raises(ValueError, match="module 'dog' was not seen in fit"):
        sketcher.transform(with_dog)
    sketcher.partial_fit(with_dog)
    assert "dog" in sketcher.modules_
    np.testing.assert_array_equal(sketcher.transform(without_dog), before)
    full = RecursiveSketcher(64, random_state=0).fit(dag_records)
    np.testing.assert_array_equal(sketcher.transform(with_dog),
                                  full.transform(with_dog))


def test_refit_resets_modules(dag_records):
    sketcher = RecursiveSketcher(16, random_state=0).fit(dag_records)
    only = [{"objects": [{"id": 0, "module": "solo", "attributes": [1.0]}]}]
    sketcher.fit(only)
    assert sketcher.modules_ == {"solo": 1}


def test_transform_rejects_changed_dimension(dag_records):
    sketcher = RecursiveSketcher(16, random_state=0).fit(dag_records)
    bad = {"objects": [{"id": "x", "module": "cat", "attributes": [1.0, 2.0]}]}
    without_cat = next(r for r in dag_records if "cat" not in r.modules)
    with pytest.raises(ValueError, match=r"record 1, object 'x': field 'attributes' "
                                         r"has dimension 2, but module 'cat' has "
                                         r"dimension 4 in fit"):
        sketcher.transform([without_cat, bad])


def test_fit_rejects_dimension_changing_across_records():
    records = [{"objects": [{"id": 0, "module": "cat", "attributes": [1.0]}]},
               {"objects": [{"id": 5, "module": "cat", "attributes": [1.0, 2.0]}]}]
    with pytest.raises(ValueError, match=r"record 1, object 5: module 'cat' has "
                                         r"attribute dimension 2, but 1 in record 0"):
        RecursiveSketcher(8).fit(records)


@pytest.mark.parametrize("X, match", [
    (np.zeros((3, 4)), "got an array of shape"),
    ({"objects": []}, "single record"),
    ("records.jsonl", "expected a sequence of activation records"),
    (42, "expected a sequence of activation records"),
])
def test_non_record_input_is_a_type_error(X, match):
    with pytest.raises(TypeError, match=match):
        RecursiveSketcher(8).fit(X)


@pytest.mark.parametrize("params, match", [
    ({"sketch_dim": 0}, "sketch_dim"),
    ({"wrapper": "full"}, "wrapper"),
    ({"matrix": "cauchy"}, "matrix"),
    ({"dtype": "int32"}, "dtype"),
    ({"dtype": np.int64}, "dtype"),
    ({"cache_size": -1}, "cache_size"),
])
def test_invalid_parameters(dag_records, params, match):
    with pytest.raises(ValueError, match=match):
        RecursiveSketcher(**params).fit(dag_records)


def test_transform_before_fit(dag_records):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        RecursiveSketcher(8).transform(dag_records)


def test_feature_names_and_set_output(dag_records):
    pd = pytest.importorskip("pandas")
    sketcher = RecursiveSketcher(5, random_state=0).fit(dag_records)
    names = sketcher.get_feature_names_out()
    assert names.tolist() == [f"recursivesketcher{i}" for i in range(5)]
    frame = sketcher.set_output(transform="pandas").transform(dag_records)
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == names.tolist()
    np.testing.assert_array_equal(frame.to_numpy(),
                                  sketcher.set_output(transform="default")
                                  .transform(dag_records))


def test_clone_pickle_joblib_round_trip(dag_records, tmp_path):
    sketcher = RecursiveSketcher(64, random_state=7).fit(dag_records)
    expected = sketcher.transform(dag_records)
    np.testing.assert_array_equal(
        clone(sketcher).fit(dag_records).transform(dag_records), expected)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(sketcher)).transform(dag_records), expected)
    joblib.dump(sketcher, tmp_path / "sketcher.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "sketcher.joblib").transform(dag_records), expected)


def test_pickle_stays_small_whatever_the_dimension(dag_records):
    sizes = []
    for sketch_dim in (64, 1024):
        sketcher = RecursiveSketcher(sketch_dim, random_state=0).fit(dag_records)
        sketcher.transform(dag_records)  # fill the matrix and block caches
        assert sketcher._matrices()._cache.n_bytes > sketch_dim**2 * 8
        sizes.append(len(pickle.dumps(sketcher)))
    # No d^2 term: the pickle holds the parameters, the seed, the modules and
    # the graph, nothing that grows with the dimension.
    assert abs(sizes[1] - sizes[0]) < 16
    assert max(sizes) < 4096


def test_random_state_none_draws_a_seed(dag_records):
    a = RecursiveSketcher(16).fit(dag_records)
    b = RecursiveSketcher(16).fit(dag_records)
    assert a.seed_ != b.seed_
    rs = np.random.RandomState(0)
    c = RecursiveSketcher(16, random_state=rs).fit(dag_records)
    d = RecursiveSketcher(16, random_state=np.random.RandomState(0)).fit(dag_records)
    assert c.seed_ == d.seed_


_SUBPROCESS_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    from sksketch import RecursiveSketcher, make_activation_records
    records, _ = make_activation_records(40, random_state=1, weights="random",
                                         shared_fraction=0.4)
    # Feed the records in a shuffled dict order: nothing may depend on it.
    sketches = RecursiveSketcher(96, random_state=11).fit(records).transform(records)
    sys.stdout.write(hashlib.sha256(sketches.tobytes()).hexdigest())
""")


def test_bit_identical_across_processes_hash_seeds_and_threads():
    digests = set()
    for hash_seed, threads in [("0", "1"), ("12345", "2"), ("random", "1")]:
        env = {"PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": threads,
               "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        result = subprocess.run([sys.executable, "-c", _SUBPROCESS_SCRIPT],
                                env={**os.environ, **env}, capture_output=True,
                                text=True, check=True)
        digests.add(result.stdout)
    assert len(digests) == 1


@pytest.mark.parametrize("params, needed", [
    ({"sketch_dim": 4096, "cache_size": 100}, "256 MiB"),
    ({"sketch_dim": 4096, "cache_size": 100, "dtype": "float32"}, "384 MiB"),
    ({"sketch_dim": 2**20}, "MiB"),
])
def test_sketch_dim_too_large_for_memory_fails_at_fit(dag_records, params, needed):
    with pytest.raises(ValueError, match=rf"sketch_dim=\d+ needs .*{needed}"):
        RecursiveSketcher(**params).fit(dag_records)


def test_sparse_sign_fits_a_large_sketch_dim(dag_records):
    # 2 x 65536^2 x 8 bytes would be 64 GiB dense; sparse: a few MiB.
    sketcher = RecursiveSketcher(2**16, matrix="sparse_sign", cache_size=256,
                                 random_state=0).fit(dag_records[:3])
    sketches = sketcher.transform(dag_records[:3])
    assert sketches.shape == (3, 2**16) and np.isfinite(sketches).all()


@pytest.mark.parametrize("engine", ["unrolled", "levelwise"])
def test_overflowing_sketch_is_refused_naming_the_record(engine):
    # Finite inputs whose products overflow: 1e200^3 along a chain, and 20
    # leaves of 1e308 summed under one root.
    ok = {"objects": [{"id": 0, "module": "a", "attributes": [1.0]}]}
    chain = {"objects": [
        {"id": i, "module": "a", "attributes": [1.0], "weight": 1e200,
         "inputs": [i + 1] if i < 2 else []} for i in range(3)]}
    wide = {"objects": [{"id": 0, "module": "a", "attributes": [1.0],
                         "inputs": list(range(1, 21))}]
            + [{"id": i, "module": "a", "attributes": [1e308]}
               for i in range(1, 21)]}
    sketcher = RecursiveSketcher(16, engine=engine, random_state=0).fit([ok])
    for bad in (chain, wide):
        with pytest.raises(ValueError, match=r"record 1: its sketch is not finite"):
            sketcher.transform([ok, bad])
    assert np.isfinite(sketcher.transform([ok])).all()
