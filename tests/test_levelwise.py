"""The level-wise engine on the shapes that make unrolling explode."""

import numpy as np
import pytest

from sksketch import RecursiveSketcher
from sksketch import _shapes as shapes
from sksketch._reference import reference_sketch

SHAPES = {
    # 2^10 module paths reach the bottom of a 10-layer lattice.
    "lattice": lambda: shapes.lattice(10, n_records=3),
    # Paths of every length 1..300 (recursion depth stays under Python's).
    "chain": lambda: shapes.chain(300, n_records=2),
    "chain_distinct_modules": lambda: shapes.chain(60, distinct_modules=True,
                                                   n_records=2),
    "receptive_field": lambda: shapes.receptive_field(5, n_layers=3, n_records=2),
    "residual": lambda: shapes.residual(5, width=3, n_records=2),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("engine", ["auto", "levelwise", "unrolled"])
def test_every_engine_matches_the_recursion_on_hard_shapes(shape, engine):
    batch = SHAPES[shape]()
    sketcher = RecursiveSketcher(48, engine=engine, random_state=0).fit(batch)
    expected = np.array([reference_sketch(r, sketcher) for r in batch.to_records()])
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(sketcher.transform(batch), expected, rtol=0,
                               atol=1e-10 * scale)


def test_sparse_sign_levelwise_matches_the_recursion():
    batch = shapes.receptive_field(4, n_layers=3, n_records=2)
    sketcher = RecursiveSketcher(64, matrix="sparse_sign", engine="levelwise",
                                 random_state=1).fit(batch)
    expected = np.array([reference_sketch(r, sketcher) for r in batch.to_records()])
    np.testing.assert_allclose(sketcher.transform(batch), expected, rtol=0,
                               atol=1e-10 * np.abs(expected).max())


def test_chunks_of_records_give_the_same_sketches(monkeypatch):
    import sksketch._levelwise as levelwise

    batch = shapes.residual(3, n_records=7)
    sketcher = RecursiveSketcher(32, engine="levelwise", random_state=0).fit(batch)
    whole = sketcher.transform(batch)
    # A chunk per 20 objects: whole records of 28 objects, one per chunk.
    monkeypatch.setattr(levelwise, "_CHUNK_OBJECTS", 20)
    np.testing.assert_allclose(sketcher.transform(batch), whole, rtol=0,
                               atol=1e-12 * np.abs(whole).max())


def test_deep_lattice_is_sketched_without_enumerating_paths():
    # 2^40 module paths: only the level-wise engine can finish. Its result is
    # linear: doubling every root weight doubles the sketch.
    batch = shapes.lattice(40, n_records=2)
    sketcher = RecursiveSketcher(32, random_state=0).fit(batch)
    sketches = sketcher.transform(batch)
    assert np.isfinite(sketches).all() and np.abs(sketches).max() > 0
    batch._weight = batch._weight.copy()
    batch._weight[batch._roots] *= 2
    np.testing.assert_allclose(sketcher.transform(batch), 2 * sketches, rtol=1e-12)
