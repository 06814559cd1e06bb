import numpy as np
import pytest

from sksketch._random import LRUCache, ModuleMatrices, draw_matrix, stable_seed


def test_stable_seed_known_answers():
    # Sketches stored today must stay decodable by every later version: the
    # seed derivation is frozen (blake2b of canonical JSON, never hash()).
    assert stable_seed(0, "cat", "A") == 287887912643936404655903770659830457647
    assert stable_seed(7, "cat", "N", (1, 2)) == \
        152433701571298590058821150321706390948
    assert stable_seed(7, "cat", "N", (1, 2)) != stable_seed(7, "cat", "N", "1,2")
    assert stable_seed(7, "cat", "N", 1) != stable_seed(7, "cat", "N", "1")


def test_draws_are_reproducible_and_independent():
    a = draw_matrix(0, "cat", "A", (4, 2))
    np.testing.assert_array_equal(a, draw_matrix(0, "cat", "A", (4, 2)))
    np.testing.assert_allclose(a[:, 0], [0.13089525699615479, 0.2301994115114212,
                                         0.09344213455915451, 0.925348699092865],
                               rtol=1e-15)
    assert not np.allclose(a, draw_matrix(0, "dog", "A", (4, 2)))
    assert not np.allclose(a, draw_matrix(1, "cat", "A", (4, 2)))


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_draws_preserve_norms_in_expectation(distribution):
    d = 512
    g = draw_matrix(3, "m", "C", (d, d), distribution=distribution)
    # ||G e_j||^2 has mean 1 and variance 2/d (gaussian) or 0 (rademacher):
    # the mean over d columns is within 5 standard errors of 1.
    column_norms = (g**2).sum(axis=0)
    assert abs(column_norms.mean() - 1) < 5 * np.sqrt(2 / d / d)
    if distribution == "rademacher":
        np.testing.assert_allclose(np.abs(g), 1 / np.sqrt(d))


def test_lru_cache_is_bounded():
    cache = LRUCache(max_bytes=3 * 80)
    for i in range(5):
        cache.put(i, np.zeros(10))
    assert len(cache) == 3 and cache.n_bytes == 240
    assert cache.get(0) is None and cache.get(4) is not None
    cache.get(2)
    cache.put(5, np.zeros(10))  # evicts 3, the least recently used
    assert cache.get(3) is None and cache.get(2) is not None


def test_module_matrices_shapes_and_wrapper():
    matrices = ModuleMatrices(0, 16, wrapper="none")
    assert matrices.subspace("m", 3).shape == (16, 4)
    assert matrices.node("m", (0, 1), 3).shape == (16, 3)
    assert matrices.wiring("m").shape == (16, 16)
    assert matrices.wrapper_matrix("m") is None
    rows = np.ones((2, 16))
    np.testing.assert_array_equal(matrices.apply_wrapper("m", rows), rows)


def test_sparse_sign_matrix_moments_and_storage():
    from sksketch._random import SPARSE_SIGN_NNZ, draw_sparse_sign

    d = 1024
    g = draw_sparse_sign(0, "m", "C", d)
    assert g.shape == (d, d) and g.nnz <= SPARSE_SIGN_NNZ * d
    dense = g.toarray()
    # Every column: 8 draws of +-1/sqrt(8), repeats adding up, so
    # E||G e_j||^2 = 1; the mean over d columns within 5 standard errors.
    norms = (dense**2).sum(axis=0)
    assert abs(norms.mean() - 1) < 5 * norms.std() / np.sqrt(d) + 1e-12
    # Column inner products: mean 0, variance 1/d.
    gram = dense.T @ dense
    off = gram[~np.eye(d, dtype=bool)]
    assert abs(off.mean()) < 5 * np.sqrt(1 / d) / np.sqrt(off.size)
    assert 0.8 / d < off.var() < 1.25 / d
    np.testing.assert_array_equal(g.toarray(), draw_sparse_sign(0, "m", "C", d)
                                  .toarray())


def test_sparse_sign_module_matrices_apply_like_dense():
    matrices = ModuleMatrices(0, 64, distribution="sparse_sign")
    rows = np.random.default_rng(0).standard_normal((3, 64))
    wiring = matrices.wiring("m").toarray()
    np.testing.assert_allclose(matrices.apply_wiring("m", rows), rows @ wiring.T,
                               atol=1e-12)
    wrapper = matrices.wrapper_matrix("m").toarray()
    np.testing.assert_allclose(matrices.apply_wrapper("m", rows),
                               0.5 * (rows + rows @ wrapper.T), atol=1e-12)
    # The small matrices stay dense Gaussian.
    assert isinstance(matrices.subspace("m", 3), np.ndarray)
