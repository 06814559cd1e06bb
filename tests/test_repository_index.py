import numpy as np
import pytest

from sksketch import RecursiveSketcher, SketchRepository, make_activation_records

faiss = pytest.importorskip("faiss")


@pytest.fixture
def repo(tmp_path):
    records, _ = make_activation_records(3, random_state=0)
    sketcher = RecursiveSketcher(32, random_state=0).fit(records)
    return SketchRepository(tmp_path / "repo", sketcher=sketcher)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_recall_at_10_against_exact(repo, metric):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((50, 32))
    X = centers[rng.integers(50, size=5000)] + 0.5 * rng.standard_normal((5000, 32))
    repo.add(X)
    assert repo.build_index(metric=metric, m=16) == 5000
    Q = X[rng.integers(5000, size=200)] + 0.1 * rng.standard_normal((200, 32))
    exact, exact_scores = repo.query(Q, k=10, metric=metric)
    approximate, scores = repo.query(Q, k=10, metric=metric, approximate=True,
                                     ef_search=128)
    recall = np.mean([len(set(a) & set(e)) / 10
                      for a, e in zip(approximate.tolist(), exact.tolist())])
    assert recall >= 0.9, recall
    # Scores are the true scores of the ids returned, best first.
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert np.all(scores[:, 0] <= exact_scores[:, 0] + 1e-5)


def test_entries_added_after_the_index_are_scanned(repo, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2000, 32))
    repo.add(X[:1500])
    repo.build_index()
    repo.add(X[1500:])
    ids, scores = repo.query(X[1500:1510], k=1, approximate=True)
    assert ids[:, 0].tolist() == list(range(1500, 1510))
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    repo.close()
    reopened = SketchRepository(tmp_path / "repo")  # the index is reloaded
    ids, _ = reopened.query(X[:5], k=1, approximate=True)
    assert ids[:, 0].tolist() == list(range(5))
    assert reopened._load_index("cosine")[1] == 1500
    assert reopened._load_index("dot") is None  # exact for dot
    ids, _ = reopened.query(X[:5], k=3, metric="dot", approximate=True)
    exact, _ = reopened.query(X[:5], k=3, metric="dot")
    assert ids.tolist() == exact.tolist()
    # A rebuilt index replaces the old file.
    assert reopened.build_index() == 2000
    names = sorted(p.name for p in (tmp_path / "repo").iterdir()
                   if p.name.startswith("index"))
    assert names == ["index-cosine-2000.faiss"]
    with pytest.raises(ValueError, match="'m'"):
        reopened.build_index(m=1)


def test_without_faiss_the_error_names_the_extra(repo, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)
    with pytest.raises(ImportError, match=r"An approximate index needs 'faiss': pip "
                                          r"install 'sksketch\[index\]'"):
        repo.build_index()
