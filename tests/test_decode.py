"""The decoding guarantees of SPEC section 4, checked statistically."""

import numpy as np
import pytest

from sksketch import (
    ActivationRecord,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    erase,
    make_activation_records,
    merge_records,
)

from .conftest import path_statistics, path_sums


def _truth(records, recoverer):
    """Counts and means per learned path, and every (path, slot) sum."""
    counts, means, slots = [], [], []
    for record in records:
        count, slot_sum = path_statistics(record)
        sums = path_sums(slot_sum)
        counts.append([count.get(p, 0.0) for p in recoverer.paths_])
        means.append(np.concatenate([
            sums[p] / count[p] if count.get(p, 0.0) > recoverer.threshold
            else np.zeros(recoverer.sketcher_.modules_[p[-1]])
            for p in recoverer.paths_]))
        slots.append(slot_sum)
    return np.array(counts), np.array(means), slots


def _split_features(features, recoverer):
    """(counts, means) columns of transform's output."""
    names = recoverer.get_feature_names_out()
    is_count = np.array([n.endswith(":count") for n in names])
    return features[:, is_count], features[:, ~is_count]


@pytest.fixture(scope="module")
def depth3_records():
    # Depth 3, shared children, several roots, random weights.
    records, _ = make_activation_records(120, n_modules=6, depth=3, n_roots=(2, 3),
                                         shared_fraction=0.4, weights="random",
                                         random_state=0)
    return records


@pytest.mark.parametrize("seed", [0, 1])
def test_lstsq_is_exact_when_unknowns_are_under_half_of_d(depth3_records, seed):
    sketch_dim = 512
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(sketch_dim, random_state=seed)).fit(depth3_records)
    assert recoverer._structure.n_unknowns < sketch_dim / 2
    sketches = recoverer.sketcher_.transform(depth3_records)
    counts, means = _split_features(recoverer.transform(sketches), recoverer)
    true_counts, true_means, slots = _truth(depth3_records, recoverer)
    np.testing.assert_allclose(counts, true_counts, rtol=0, atol=1e-8)
    np.testing.assert_allclose(means, true_means, rtol=0, atol=1e-8)
    # Node attributes at a path: the (path, last slot) sum.
    for (path, slot), value in list(slots[0].items())[:10]:
        query = [(module, 0) for module in path[:-1]] + [(path[-1], slot)]
        recovered = recoverer.recover(sketches[:1], query)[0]
        np.testing.assert_allclose(recovered, value, rtol=0, atol=1e-8)


def test_recover_returns_a_unique_nodes_attributes():
    record = ActivationRecord([
        {"id": "out", "module": "output", "attributes": [0.7], "inputs": ["c0", "c1"]},
        {"id": "c0", "module": "cat", "attributes": [1.0, 0.2, 0.5], "inputs": ["e"]},
        {"id": "c1", "module": "cat", "attributes": [3.0, -1.0, 0.0]},
        {"id": "e", "module": "edge", "attributes": [0.1, 0.3]}])
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(128, random_state=0))
    recoverer.fit([record])
    s = recoverer.sketcher_.transform([record])
    np.testing.assert_allclose(recoverer.recover(s, [("output", 0), ("cat", 1)]),
                               [[3.0, -1.0, 0.0]], atol=1e-10)
    np.testing.assert_allclose(
        recoverer.recover(s, [("output", 0), ("cat", 0), ("edge", 0)]),
        [[0.1, 0.3]], atol=1e-10)
    stats = recoverer.statistics(s, "cat")
    np.testing.assert_allclose(stats.count, [2.0], atol=1e-10)
    np.testing.assert_allclose(stats.mean, [[2.0, -0.4, 0.25]], atol=1e-10)


def test_statistics_sum_every_path_ending_in_the_module(depth3_records):
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(512, random_state=0)).fit(depth3_records)
    sketches = recoverer.sketcher_.transform(depth3_records[:20])
    stats = recoverer.statistics(sketches, "L2M0")
    for i, record in enumerate(depth3_records[:20]):
        count, slot_sum = path_statistics(record)
        expected_count = sum(c for p, c in count.items() if p[-1] == "L2M0")
        expected_sum = sum((v for (p, _), v in slot_sum.items() if p[-1] == "L2M0"),
                           np.zeros(4))
        np.testing.assert_allclose(stats.count[i], expected_count, atol=1e-8)
        np.testing.assert_allclose(stats.sum[i], expected_sum, atol=1e-8)


def test_group_pursuit_is_exact_for_sparse_sketches():
    # More unknowns than d/2 (so no pseudo-inverse): each sketch uses a few
    # blocks. Orthogonal matching pursuit recovers k active unknowns out of p
    # when d exceeds about 2 k log(p / k): with p = 297 and d = 256, k < d/4
    # meets that.
    records, _ = make_activation_records(150, n_modules=9, depth=3, fan_in=3,
                                         n_roots=(1, 2), shared_fraction=0.3,
                                         weights="random", random_state=0)
    sketch_dim = 256
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(sketch_dim, random_state=0)).fit(records)
    n_unknowns = recoverer._structure.n_unknowns
    assert n_unknowns > sketch_dim / 2
    sketches = recoverer.sketcher_.transform(records)
    counts, means = _split_features(recoverer.transform(sketches), recoverer)
    true_counts, true_means, _ = _truth(records, recoverer)
    dims = recoverer.sketcher_.modules_
    # active unknowns: a count per path, dim attributes per (path, slot)
    active = np.array([len(count) + sum(dims[p[-1]] for p, _ in slot_sum)
                       for count, slot_sum in map(path_statistics, records)])
    sparse = active < sketch_dim / 4
    assert sparse.sum() >= 30
    np.testing.assert_allclose(counts[sparse], true_counts[sparse], atol=1e-8)
    np.testing.assert_allclose(means[sparse], true_means[sparse], atol=1e-8)


def _transpose_errors(records, sketch_dim, kept=None, matrix="gaussian"):
    """Per (path, slot) node error, relative to ||S|| sqrt(dim/d), by length."""
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(sketch_dim, matrix=matrix, random_state=0),
        method="transpose").fit(records)
    sketches = recoverer.sketcher_.transform(records)
    norms = np.linalg.norm(sketches, axis=1)
    if kept is not None:
        sketches = sketches[:, kept]
    errors = {}
    for record, sketch, norm in zip(records, sketches, norms):
        _, slot_sum = path_statistics(record)
        for (path, slot), value in slot_sum.items():
            query = [(m, 0) for m in path[:-1]] + [(path[-1], slot)]
            estimate = recoverer.recover(sketch[None], query, kept=kept)[0]
            scale = norm * np.sqrt(value.size / sketch_dim)
            errors.setdefault(len(path), []).append(
                np.linalg.norm(estimate - value) / scale)
    return {length: np.array(e) for length, e in errors.items()}


@pytest.fixture(scope="module")
def chain_network_records():
    # Three modules, one per layer: small enough for d = 4096 in a test.
    records, _ = make_activation_records(40, n_modules=3, depth=3, n_roots=(1, 2),
                                         n_children=(1, 2), random_state=0)
    return records


def test_transpose_error_bound_and_decay(chain_network_records):
    # Error of a node read through a path of L modules: about
    # kappa^L ||S|| sqrt(m/d), kappa^2 = 2 (5/4)^2 (see _dimension.py); the
    # bound allows a factor 2 for the tail of the chi distribution.
    kappa = np.sqrt(2 * (5 / 4) ** 2)
    mean_error = {}
    for sketch_dim in (256, 1024, 4096):
        errors = _transpose_errors(chain_network_records, sketch_dim)
        for length, values in errors.items():
            assert np.quantile(values, 0.99) <= 2 * kappa**length, (sketch_dim, length)
        all_errors = np.concatenate(list(errors.values()))
        # absolute error = normalized error * ||S|| sqrt(m/d)
        mean_error[sketch_dim] = all_errors.mean() / np.sqrt(sketch_dim)
    # Falls like 1/sqrt(d): a factor 2 per 4x in d, within 25%.
    for small, large in [(256, 1024), (1024, 4096)]:
        assert 2 / 1.25 <= mean_error[small] / mean_error[large] <= 2 * 1.25


def test_sparse_sign_transpose_error_matches_gaussian(chain_network_records):
    # Sparse sign wiring and wrapper matrices have the second moments of
    # Gaussian ones (unit column norms in expectation, column inner products
    # of mean 0 and variance 1/d), and the decoder's error is a sum of such
    # inner products: the same error at every d and path length. With about
    # 60 nodes per cell, a mean's standard error is under 10%: the ratio of
    # means stays within 1.5 (about 4 standard errors).
    for sketch_dim in (256, 1024, 4096):
        dense = _transpose_errors(chain_network_records, sketch_dim)
        sparse = _transpose_errors(chain_network_records, sketch_dim,
                                   matrix="sparse_sign")
        for length in dense:
            ratio = sparse[length].mean() / dense[length].mean()
            assert 1 / 1.5 <= ratio <= 1.5, (sketch_dim, length, ratio)


def test_erasure_grows_smoothly_for_transpose(chain_network_records):
    sketch_dim = 1024
    full = np.concatenate(list(_transpose_errors(chain_network_records,
                                                 sketch_dim).values()))
    quarter = np.concatenate(list(_transpose_errors(
        chain_network_records, sketch_dim, kept=np.arange(sketch_dim // 4)).values()))
    # normalized by sqrt(m/d) with the full d: undo to compare absolute errors
    ratio = quarter.mean() / full.mean()
    assert 1 < ratio <= 3 * np.sqrt(4)


def test_erasure_random_subset(chain_network_records):
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(512, random_state=0)).fit(
        chain_network_records)
    sketches = recoverer.sketcher_.transform(chain_network_records)
    erased, kept = erase(sketches, 0.5, random_state=0)
    assert erased.shape == (len(sketches), 256) and np.all(np.diff(kept) > 0)
    assert recoverer._structure.n_unknowns < 256 / 2
    np.testing.assert_allclose(recoverer.transform(erased, kept=kept),
                               recoverer.transform(sketches), atol=1e-8)


def test_lstsq_stays_exact_under_erasure_while_unknowns_fit(depth3_records):
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(1024, random_state=0)).fit(depth3_records)
    n_unknowns = recoverer._structure.n_unknowns
    sketches = recoverer.sketcher_.transform(depth3_records)
    expected = recoverer.transform(sketches)
    kept = 2 * n_unknowns + 2  # unknowns < d'/2
    assert kept < 1024
    np.testing.assert_allclose(recoverer.transform(erase(sketches, kept)[0]), expected,
                               atol=1e-8)


def _renamed(records, prefix):
    return [ActivationRecord([o._replace(module=prefix + o.module) for o in r.objects],
                             outputs=r.roots) for r in records]


def test_similarity_of_unrelated_records():
    a, _ = make_activation_records(60, random_state=0, weights="random")
    b, _ = make_activation_records(60, random_state=1, weights="random")
    b = _renamed(b, "other_")  # no module path in common with a
    sketch_dim = 512
    sketcher = RecursiveSketcher(sketch_dim, random_state=0).fit(a + b)
    sa, sb = sketcher.transform(a), sketcher.transform(b)
    bound = 3 * np.outer(np.linalg.norm(sa, axis=1),
                         np.linalg.norm(sb, axis=1)) / np.sqrt(sketch_dim)
    # |<S1, S2>| is about N(0, ||S1||^2 ||S2||^2 / d): 3 sigma holds in 99.7%.
    assert (np.abs(sa @ sb.T) <= bound).mean() >= 0.99


def test_similarity_of_records_sharing_objects():
    # SPEC 4.4: E<S1, S2> = sum over paths P of 2^-|P| (c1 c2 + <U1, U2>
    # + sum_slots <u1, u2>): the presence terms, the path attribute sums (the
    # subspace A) and the same-slot attributes (the node subspace N). The
    # expectation is over the random matrices: every pair gets its own draw,
    # so that the deviations are independent.
    a, _ = make_activation_records(60, random_state=0, weights="random")
    c, _ = make_activation_records(60, random_state=2, weights="random")
    shared = [merge_records([x, y]) for x, y in zip(a, c)]
    deviations = {}
    for sketch_dim in (128, 512):
        values = []
        for seed, (x, y) in enumerate(zip(a, shared)):
            sketcher = RecursiveSketcher(sketch_dim, random_state=seed).fit([y])
            v1, v2 = sketcher.transform([x, y])
            (c1, u1), (c2, u2) = path_statistics(x), path_statistics(y)
            sums1, sums2 = path_sums(u1), path_sums(u2)
            predicted = sum(2.0 ** -len(p) * (c1[p] * c2[p] + sums1[p] @ sums2[p])
                            for p in c1)
            predicted += sum(2.0 ** -len(p) * (u1[(p, s)] @ u2[(p, s)])
                             for p, s in u1)
            scale = np.linalg.norm(v1) * np.linalg.norm(v2) / np.sqrt(sketch_dim)
            values.append((v1 @ v2 - predicted) / scale)
        values = np.array(values)
        # Unbiased: the mean deviation is within 4 standard errors of 0.
        assert abs(values.mean()) <= 4 * values.std() / np.sqrt(values.size)
        deviations[sketch_dim] = np.sqrt(np.mean(values**2))
    # The deviation in units of ||S1|| ||S2|| / sqrt(d) does not depend on d:
    # the absolute error falls like 1/sqrt(d).
    assert 1 / 1.5 <= deviations[128] / deviations[512] <= 1.5


def test_unroll_recovers_the_module_tree(depth3_records):
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(random_state=0))
    recoverer.fit(depth3_records)  # the default sketch_dim
    sketches = recoverer.sketcher_.transform(depth3_records)
    for record, sketch in zip(depth3_records, sketches):
        count, _ = path_statistics(record)
        expected = {p for p, c in count.items() if c > recoverer.threshold}
        found = _tree_paths(recoverer.unroll(sketch))
        for path, estimate in found.items():
            assert abs(estimate - count[path]) < 1e-6
        # every present path whose parents are present, and nothing else
        expected = {p for p in expected
                    if all(p[:i] in expected for i in range(1, len(p)))}
        assert set(found) == expected


def _tree_paths(tree, prefix=()):
    """{path: count} of every node of an unrolled tree."""
    paths = {}
    for module, node in tree.items():
        paths[prefix + (module,)] = node["count"]
        paths.update(_tree_paths(node["children"], prefix + (module,)))
    return paths


def _flag_and_cat_records():
    """Records of a dim-0 module ("flag") and a dim-4 one ("cat").

    The last group of the layout is a slot of ``cat/flag``: zero columns.
    """
    rng = np.random.default_rng(0)
    records = [ActivationRecord([{"id": 0, "module": "flag", "attributes": [],
                                  "weight": 1.5}])]
    for _ in range(10):
        records.append(ActivationRecord([
            {"id": 0, "module": "cat", "attributes": rng.standard_normal(4).tolist(),
             "inputs": [1, 2], "weight": float(rng.uniform(0.5, 2))},
            {"id": 1, "module": "flag", "attributes": [], "slot": 0},
            {"id": 2, "module": "flag", "attributes": [], "slot": 1}]))
    return records


def test_group_pursuit_skips_groups_without_columns():
    # A group of width 0 has no columns to score: reduceat would read the
    # next group's first column, or index past the end for the last group.
    records = _flag_and_cat_records()
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(64, random_state=0)).fit(records)
    layout = recoverer._structure.layout
    assert layout.offsets[-2] == layout.offsets[-1]  # last group: zero columns
    sketches = recoverer.sketcher_.transform(records)
    kept = 2 * recoverer._structure.n_unknowns - 2  # forces the pursuit
    counts = recoverer.transform(sketches[:, :kept])
    np.testing.assert_allclose(counts, recoverer.transform(sketches), atol=1e-8)


@pytest.mark.parametrize("n_kept", [3, 2])
def test_decoding_keeps_groups_aligned_with_fewer_rows_than_columns(n_kept):
    # With 3 kept rows a 4-column group spans 3 dimensions: its basis must
    # stay at its own offset. The budget (1 unknown) allows only counts, and
    # the "flag"-only sketch is one count: found exactly.
    records = _flag_and_cat_records()
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(64, random_state=0)).fit(records)
    sketches = recoverer.sketcher_.transform(records)
    names = list(recoverer.get_feature_names_out())
    features = recoverer.transform(sketches[:1, :n_kept])
    expected = np.zeros(len(names))
    expected[names.index("flag:count")] = 1.5
    np.testing.assert_allclose(features[0], expected, atol=1e-8)


def test_too_erased_to_decode_anything_is_a_clear_error():
    records = _flag_and_cat_records()
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(64, random_state=0)).fit(records)
    sketches = recoverer.sketcher_.transform(records)
    erased, kept = erase(sketches, 1e-9)
    assert kept.size == 1
    with pytest.raises(ValueError, match="too few to decode.*keep at least 2"):
        recoverer.transform(erased, kept=kept)
    # The transpose decoder reads any number of coordinates.
    transpose = SketchAttributeRecoverer(recoverer.sketcher_, method="transpose")
    assert transpose.fit(records).transform(erased, kept=kept).shape == (
        len(records), len(recoverer.get_feature_names_out()))


@pytest.mark.parametrize("solver", ["pursuit", "superset"])
def test_sparse_decoding_of_few_sketches_runs_blas_on_one_thread(monkeypatch, solver):
    # Small products (a few sketches): one BLAS thread (see test_network).
    from threadpoolctl import threadpool_info, threadpool_limits

    from sksketch import _decode
    from sksketch._decode import _GroupPursuit
    from sksketch._superset import _SupersetLeastSquares

    seen = []
    cls = _GroupPursuit if solver == "pursuit" else _SupersetLeastSquares
    solve = cls._solve

    def spy(self, *args):
        seen.append({p["num_threads"] for p in threadpool_info()
                     if p["user_api"] == "blas"})
        return solve(self, *args)

    monkeypatch.setattr(cls, "_solve", spy)
    if solver == "pursuit":
        monkeypatch.setattr(_decode, "_superset", lambda *args: None)
    records = _flag_and_cat_records()
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(64, random_state=0)).fit(records)
    sketches = recoverer.sketcher_.transform(records)
    with threadpool_limits(limits=2, user_api="blas"):
        recoverer.transform(sketches[:, :8])  # 7 unknowns > 8 / 2: sparse decoding
    assert seen == [{1}]


def _plain_group_omp(g, offsets, budget, tol, s):
    """Group orthogonal matching pursuit of one sketch, the textbook way.

    Each step scores every group by the norm of the residual's projection on
    its span, takes the best one that fits the budget, and solves least
    squares on all groups taken so far from scratch.
    """
    from sksketch._decode import _span

    widths = np.diff(offsets)
    spans = [_span(g[:, lo:hi]) for lo, hi in zip(offsets[:-1], offsets[1:])]
    chosen, width = [], 0
    z, residual = np.zeros(g.shape[1]), s.copy()
    while np.linalg.norm(residual) > tol * np.linalg.norm(s):
        scores = [np.linalg.norm(span.T @ residual)
                  if i not in chosen and 0 < widths[i] <= budget - width else -np.inf
                  for i, span in enumerate(spans)]
        best = int(np.argmax(scores))
        if not np.isfinite(scores[best]):
            break
        chosen.append(best)
        width += widths[best]
        columns = np.concatenate([np.arange(offsets[i], offsets[i + 1])
                                  for i in chosen])
        z = np.zeros(g.shape[1])
        z[columns] = np.linalg.lstsq(g[:, columns], s, rcond=None)[0]
        residual = s - g @ z
    return z


def _wide_pursuit_case(n_records, random_state, weights="random"):
    """Sketches of a 9-module network (297 unknowns at d = 128: the pursuit's
    regime), its fitted recoverer and that recoverer's decoder."""
    records, _ = make_activation_records(n_records, n_modules=9, depth=3,
                                         fan_in=3, n_roots=(1, 2),
                                         shared_fraction=0.3, weights=weights,
                                         random_state=random_state)
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(128, random_state=0)).fit(records)
    return recoverer.sketcher_.transform(records), recoverer, recoverer._decoder()


@pytest.mark.parametrize("keep", [None, 0.7])
def test_batched_pursuit_matches_a_plain_group_omp(keep):
    # The batched pursuit (inverse Cholesky factors grown a group at a time,
    # correlations updated in coefficient space) takes the same groups as
    # the textbook pursuit, so its coefficients agree to rounding: both on
    # the sketches it explains and on those that exhaust the budget.
    from sksketch._decode import _GroupPursuit, _unit_columns

    sketches, recoverer, decoder = _wide_pursuit_case(40, 1)
    kept = np.arange(128)
    if keep is not None:
        sketches, kept = erase(sketches, keep, random_state=0)
    g, norms = _unit_columns(decoder.g_rows[:, kept].T)
    offsets = recoverer._structure.layout.offsets
    budget = int(decoder.max_active * kept.size)
    assert recoverer._structure.n_unknowns > budget  # the pursuit's regime
    z, residual, _ = _GroupPursuit(g, norms, offsets, budget, decoder.tol).solve(
        sketches)
    expected = np.array([_plain_group_omp(g, offsets, budget, decoder.tol, s)
                         for s in sketches]) / norms
    explained = np.linalg.norm(residual, axis=1) <= 1e-10 * np.linalg.norm(
        sketches, axis=1)
    assert 0 < explained.sum() < len(sketches)  # both kinds are checked
    scale = np.abs(expected).max(axis=1, keepdims=True)
    np.testing.assert_allclose(z / scale, expected / scale, atol=1e-9)
    np.testing.assert_allclose(residual, sketches - z @ decoder.g_rows[:, kept],
                               atol=1e-10 * np.abs(sketches).max())


def test_pursuit_condition_numbers_are_exact_where_they_set_the_noise():
    # Below cond_limit the pursuit may return a bound (the noise level is tol
    # there anyway); at 0 every condition number is exact, and the bound is
    # never below the exact value.
    from sksketch._decode import _GroupPursuit, _unit_columns

    sketches, recoverer, decoder = _wide_pursuit_case(30, 2, weights="unit")
    g, norms = _unit_columns(decoder.g_rows.T)
    pursuit = _GroupPursuit(g, norms, recoverer._structure.layout.offsets, 64,
                            decoder.tol)
    _, _, exact = pursuit.solve(sketches)
    _, _, bound = pursuit.solve(sketches, cond_limit=np.inf)
    assert np.all(exact >= 1) and np.all(bound >= exact * (1 - 1e-12))
    limit = float(np.median(exact))
    _, _, mixed = pursuit.solve(sketches, cond_limit=limit)
    unsure = mixed > limit
    np.testing.assert_allclose(mixed[unsure], exact[unsure], rtol=1e-10)
    assert np.all(exact[~unsure] <= limit)


def test_pursuit_chunks_reuse_factor_memory_without_leaking(monkeypatch):
    # Chunks of sketches share one pool of factors, which keeps what earlier
    # sketches left beyond each factor's width: results must not depend on it.
    from sksketch import _decode

    sketches, recoverer, decoder = _wide_pursuit_case(60, 3)
    g, norms = _decode._unit_columns(decoder.g_rows.T)
    pursuit = _decode._GroupPursuit(g, norms, recoverer._structure.layout.offsets,
                                    64, decoder.tol)
    # Widest supports first, so later chunks reuse rows wider ones filled.
    alone = [pursuit.solve(s[None]) for s in sketches]
    order = np.argsort([np.count_nonzero(z) for z, _, _ in alone])[::-1]
    monkeypatch.setattr(_decode, "_FACTOR_BYTES", 16 * 16 * 64**2)  # 16 a chunk
    monkeypatch.setattr(_decode, "_MIN_CHUNK", 16)
    z, residual, cond = pursuit.solve(sketches[order])
    for i, row in enumerate(order):
        np.testing.assert_allclose(z[i], alone[row][0][0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(cond[i], alone[row][2][0], rtol=1e-9)


def test_pursuit_stops_at_the_noise_level_of_float32_sketches():
    # A float32 sketch never gets within tol = 1e-10 of its blocks' span:
    # the pursuit stops at its precision's noise level instead of fitting
    # rounding with more groups until the budget is spent.
    sketches, recoverer, decoder = _wide_pursuit_case(40, 4)
    kept = np.arange(sketches.shape[1])
    exact = decoder.decode(sketches, kept)
    rounded = decoder.decode(sketches.astype(np.float32).astype(np.float64), kept,
                             eps=np.finfo(np.float32).eps)
    explained = exact.residual <= exact.noise
    assert 10 <= explained.sum() < len(sketches)
    support = np.count_nonzero(exact.z, axis=1)
    np.testing.assert_array_equal(np.count_nonzero(rounded.z, axis=1)[explained],
                                  support[explained])
    assert np.all(rounded.residual[explained] <= rounded.noise[explained])
    scale = np.abs(exact.z[explained]).max(axis=1, keepdims=True)
    np.testing.assert_allclose(rounded.z[explained] / scale,
                               exact.z[explained] / scale, atol=1e-4)
