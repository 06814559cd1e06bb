import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sksketch import (
    RecursiveSketcher,
    SketchAttributeRecoverer,
    SketchRepository,
    make_activation_records,
    merge_records,
)
from sksketch import _repository as store


@pytest.fixture(scope="module")
def data():
    records, labels = make_activation_records(60, n_classes=3, random_state=0)
    sketcher = RecursiveSketcher(128, random_state=0).fit(records)
    return records, labels, sketcher, sketcher.transform(records)


def brute_force(Q, X, k, metric, allowed=None):
    scores = Q @ X.T
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1)
        scores = scores / np.linalg.norm(Q, axis=1)[:, None]
        scores = scores / np.where(norms > 0, norms, np.inf)[None, :]
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_round_trip_and_reopen(tmp_path, data):
    records, labels, sketcher, S = data
    metadata = [{"label": int(c), "name": f"r{i}", "tags": ["a", i]}
                for i, c in enumerate(labels)]
    with SketchRepository(tmp_path / "repo", sketcher=sketcher) as repo:
        ids = repo.add(S[:40], ids=[f"r{i}" for i in range(40)],
                       metadata=metadata[:40], times=5.0)
        assert ids.tolist() == [f"r{i}" for i in range(40)]
        repo.add(records[40:], ids=[f"r{i}" for i in range(40, 60)],
                 metadata=metadata[40:])
    reopened = SketchRepository(tmp_path / "repo")
    assert len(reopened) == 60
    vectors, stored = reopened.get([f"r{i}" for i in range(60)][::-1])
    np.testing.assert_allclose(vectors, S[::-1], rtol=1e-12, atol=1e-12)
    assert stored == metadata[::-1]
    rebuilt = reopened.sketcher
    assert rebuilt.seed_ == sketcher.seed_
    assert rebuilt.modules_ == sketcher.modules_
    assert rebuilt.module_graph_ == sketcher.module_graph_
    np.testing.assert_allclose(rebuilt.transform(records), S, rtol=1e-12,
                               atol=1e-12)
    with pytest.raises(KeyError, match="'missing'"):
        reopened.get(["r1", "missing"])
    reopened.close()


@pytest.mark.parametrize("change, named", [
    ({"random_state": 1}, "random_state"),
    ({"sketch_dim": 64}, "sketch_dim"),
    ({"wrapper": "none"}, "wrapper"),
    ({"matrix": "rademacher"}, "matrix"),
])
def test_refuses_a_different_sketcher(tmp_path, data, change, named):
    records, _, sketcher, S = data
    SketchRepository(tmp_path, sketcher=sketcher).add(S[:5])
    other = RecursiveSketcher(**{**sketcher.get_params(), **change}).fit(records)
    with pytest.raises(ValueError, match=f"sketcher's {named}"):
        SketchRepository(tmp_path, sketcher=other)
    repo = SketchRepository(tmp_path)
    with pytest.raises(ValueError, match=f"sketcher's {named}"):
        repo.add(other.transform(records[:3]), sketcher=other)
    with pytest.raises(ValueError, match=f"sketcher's {named}"):
        repo.query(S[:1], sketcher=other)
    assert len(repo) == 5


def test_refuses_a_module_of_another_dimension(tmp_path, data):
    _, _, sketcher, _ = data
    SketchRepository(tmp_path, sketcher=sketcher)
    name = next(iter(sketcher.modules_))
    dim = sketcher.modules_[name]
    other = RecursiveSketcher(128, random_state=0).fit(
        [{"objects": [{"id": 0, "module": name, "attributes": [0.0] * (dim + 1)}]}])
    with pytest.raises(ValueError, match=f"module {name!r} has dimension"):
        SketchRepository(tmp_path, sketcher=other)


def test_validation(tmp_path, data):
    _, _, sketcher, S = data
    with pytest.raises(ValueError, match="no repository"):
        SketchRepository(tmp_path / "none")
    with pytest.raises(ValueError, match="not fitted"):
        SketchRepository(tmp_path, sketcher=RecursiveSketcher())
    with pytest.raises(TypeError, match="'sum_keys'"):
        SketchRepository(tmp_path, sketcher=sketcher, sum_keys="label")
    repo = SketchRepository(tmp_path, sketcher=sketcher)
    repo.add(S[:3], ids=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"shape \(n, 128\)"):
        repo.add(S[:2, :10])
    bad = S[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        repo.add(bad)
    with pytest.raises(ValueError, match="repeats the id 'x'"):
        repo.add(S[:2], ids=["x", "x"])
    with pytest.raises(ValueError, match="id 'b' is already"):
        repo.add(S[:2], ids=["z", "b"])
    with pytest.raises(TypeError, match=r"'ids\[0\]'"):
        repo.add(S[:1], ids=[1.5])
    with pytest.raises(TypeError, match=r"'metadata\[1\]' must be a dict"):
        repo.add(S[:2], metadata=[{}, 3])
    with pytest.raises(ValueError, match=r"'metadata\[0\]' is not JSON-able"):
        repo.add(S[:1], metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="'k'"):
        repo.query(S[:1], k=0)
    with pytest.raises(ValueError, match="'metric'"):
        repo.query(S[:1], metric="euclidean")
    with pytest.raises(TypeError, match="'in'"):
        repo.query(S[:1], where={"label": [1, 2]})
    with pytest.raises(ValueError, match="operator '~'"):
        repo.query(S[:1], where={"label": {"~": 1}})
    with pytest.raises(TypeError, match="'where'"):
        repo.sum(where="label = 1")
    # Failed adds left nothing behind; the next add lands right after.
    assert len(repo) == 3
    repo.add(S[3:5], ids=["d", "e"])
    vectors, _ = repo.get(["a", "b", "c", "d", "e"])
    np.testing.assert_array_equal(vectors, S[:5])


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_query_equals_brute_force(tmp_path, data, metric, monkeypatch):
    _, _, sketcher, _ = data
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3000, 128))
    X[7] = 0.0
    Q = rng.standard_normal((25, 128))
    Q[0] = X[11]
    repo = SketchRepository(tmp_path, sketcher=sketcher)
    for lo in range(0, 3000, 700):  # several adds
        repo.add(X[lo:lo + 700], metadata=[{"i": i, "odd": bool(i % 2)}
                                           for i in range(lo, min(lo + 700, 3000))])
    # Small chunks: the top-k is merged across many chunks, both ways.
    monkeypatch.setattr(store, "CHUNK_BYTES", 128 * 8 * 97)
    monkeypatch.setattr(store, "FIRST_PIECE", 20)  # the first 20 start the top-k
    ids, scores = repo.query(Q, k=10, metric=metric)
    order, expected = brute_force(Q, X, 10, metric)
    assert ids.tolist() == order.tolist()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert ids[0, 0] == 11
    allowed = np.array([i % 2 == 1 and i >= 500 for i in range(3000)])
    ids, scores = repo.query(Q, k=7, metric=metric,
                             where={"odd": True, "i": {">=": 500}})
    order, expected = brute_force(Q, X, 7, metric, allowed)
    assert ids.tolist() == order.tolist()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    # Fewer matches than k.
    ids, scores = repo.query(Q[:2], k=10, metric=metric,
                             where={"i": {"in": [3, 7, 9]}})
    assert ids.shape == (2, 3) and sorted(ids[0]) == [3, 7, 9]
    if metric == "cosine":
        assert scores[0][ids[0].tolist().index(7)] == 0.0  # a zero vector


def test_ties_keep_the_earlier_entry_across_chunks(tmp_path, data, monkeypatch):
    _, _, sketcher, _ = data
    x = np.random.default_rng(2).standard_normal(128)
    repo = SketchRepository(tmp_path, sketcher=sketcher)
    repo.add(np.tile(x, (300, 1)))  # 300 equal sketches: every score ties
    monkeypatch.setattr(store, "CHUNK_BYTES", 128 * 8 * 64)  # chunks of 64 rows
    monkeypatch.setattr(store, "FIRST_PIECE", 16)
    for metric in ("cosine", "dot"):
        ids, _ = repo.query(np.vstack([x, -x]), k=10, metric=metric)
        assert ids.tolist() == [list(range(10))] * 2


def test_float32_query_matches_float64_brute_force(tmp_path, data):
    records = data[0]
    sketcher = RecursiveSketcher(64, dtype="float32", random_state=0).fit(records)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2000, 64)).astype(np.float32)
    Q = rng.standard_normal((20, 64)).astype(np.float32)
    repo = SketchRepository(tmp_path, sketcher=sketcher)
    repo.add(X)
    X64, Q64 = X.astype(np.float64), Q.astype(np.float64)
    for metric in ("cosine", "dot"):
        ids, scores = repo.query(Q, k=5, metric=metric)
        order, expected = brute_force(Q64, X64, 6, metric)
        # float32 products of 64 terms: error below 64 * 2**-24 * |q| |x|.
        bound = 64 * 2.0**-24 * (1.0 if metric == "cosine" else np.outer(
            np.linalg.norm(Q64, axis=1), np.linalg.norm(X64, axis=1)).max())
        np.testing.assert_allclose(scores, expected[:, :5], rtol=0, atol=bound)
        # Ids agree wherever the exact scores are further apart than the error.
        clear = np.diff(-expected, axis=1) > 2 * bound
        for q in range(20):
            for j in range(5):
                if clear[q, j] and (j == 0 or clear[q, j - 1]):
                    assert ids[q, j] == order[q, j], (metric, q, j)


def test_a_version_1_repository_gets_its_norms(tmp_path, data):
    import sqlite3

    _, _, sketcher, S = data
    path = tmp_path / "repo"
    X = np.vstack([S, np.zeros((1, S.shape[1]))])
    with SketchRepository(path, sketcher=sketcher) as repo:
        repo.add(X)
        expected = repo.query(S[:5], k=4)
    norm_file = path / store.NORM_FILE
    for leftover in (None, b"\xff" * 8 * 7):
        # As version 1 wrote it: no norm file (or one half written by an
        # opening killed while computing it), and version 1 recorded.
        norm_file.unlink()
        if leftover is not None:
            norm_file.write_bytes(leftover)
        con = sqlite3.connect(path / store.META_FILE)
        with con:
            con.execute("UPDATE config SET value = '1' WHERE key = 'format_version'")
        con.close()
        with SketchRepository(path) as repo:
            np.testing.assert_allclose(repo._norms(len(X)),
                                       np.linalg.norm(X, axis=1), rtol=1e-15)
            ids, scores = repo.query(S[:5], k=4)
            assert ids.tolist() == expected[0].tolist()
            np.testing.assert_allclose(scores, expected[1], rtol=1e-12)
            assert repo._config["format_version"] == store.FORMAT_VERSION
    with SketchRepository(path, sketcher=sketcher) as repo:  # stays version 2
        repo.add(S[:3])
        np.testing.assert_allclose(repo._norms(len(repo)),
                                   np.linalg.norm(np.vstack([X, S[:3]]), axis=1),
                                   rtol=1e-15)
    con = sqlite3.connect(path / store.META_FILE)
    with con:  # a later format: refused, not misread
        con.execute("UPDATE config SET value = '3' WHERE key = 'format_version'")
    con.close()
    with pytest.raises(ValueError, match=r"format version 3; this sksketch reads "
                                         r"versions \[1, 2\]"):
        SketchRepository(path)


def test_where_filters_match_python(tmp_path, data):
    _, _, sketcher, _ = data
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 128))
    metadata = []
    for i in range(200):
        entry = {"n": int(i % 7), "s": ["a", "b", "c"][i % 3], "f": float(i) / 3}
        if i % 5:
            entry["opt"] = i % 2 == 0
        metadata.append(entry)
    repo = SketchRepository(tmp_path, sketcher=sketcher)
    repo.add(X, metadata=metadata)
    filters = [
        ({"n": 3}, lambda m: m["n"] == 3),
        ({"s": "b", "n": {"!=": 2}}, lambda m: m["s"] == "b" and m["n"] != 2),
        ({"f": {">": 10, "<=": 40.5}}, lambda m: 10 < m["f"] <= 40.5),
        ({"s": {"in": ["a", "c"]}}, lambda m: m["s"] in ("a", "c")),
        ({"n": {"not in": [0, 1, 2]}}, lambda m: m["n"] not in (0, 1, 2)),
        ({"opt": None}, lambda m: "opt" not in m),
        ({"opt": True}, lambda m: m.get("opt") is True),
        ({"opt": {"in": [False, None]}}, lambda m: m.get("opt") is not True),
        ({"n": "3"}, lambda m: False),  # a string never equals a number
    ]
    for where, keep in filters:
        expected = [i for i, m in enumerate(metadata) if keep(m)]
        ids, _ = repo.query(X[:1], k=200, where=where)
        assert sorted(ids[0].tolist()) == expected, where
        total, count = repo.sum(where=where, return_counts=True)
        assert count == len(expected)
        np.testing.assert_allclose(total, X[expected].sum(axis=0), atol=1e-10)


def test_running_sums_equal_members_and_decode(tmp_path, data, monkeypatch):
    records, labels, sketcher, S = data
    colors = ["red", "blue"]
    metadata = [{"label": int(c), "color": colors[i % 2]}
                for i, c in enumerate(labels)]
    repo = SketchRepository(tmp_path, sketcher=sketcher,
                            sum_keys=["label", ("color", "label")])
    for lo in range(0, 60, 25):
        repo.add(records[lo:lo + 25], metadata=metadata[lo:lo + 25])
    scanned = repo.sum(group_by=["color", "label"])

    def no_scan(*args):
        raise AssertionError("scanned")

    monkeypatch.setattr(SketchRepository, "_sum_scan", no_scan)
    sums, counts = repo.sum(group_by="label", return_counts=True)
    assert sorted(sums) == [0, 1, 2]
    recoverer = SketchAttributeRecoverer(sketcher).fit(records)
    for label in range(3):
        members = np.flatnonzero(labels == label)
        assert counts[label] == members.size
        np.testing.assert_allclose(sums[label], S[members].sum(axis=0), atol=1e-10)
        # By linearity: the sketch of the union of the group's records.
        union = sketcher.transform([merge_records([records[i] for i in members])])
        np.testing.assert_allclose(sums[label], union[0], atol=1e-9)
        statistics = recoverer.statistics(sums[label][None, :], "L0M0")
        each = recoverer.statistics(S[members], "L0M0")
        np.testing.assert_allclose(statistics.count, each.count.sum(), atol=1e-6)
        np.testing.assert_allclose(statistics.sum[0], each.sum.sum(axis=0),
                                   atol=1e-6)
    by_pair = repo.sum(group_by=["color", "label"])  # from ("color", "label")
    assert by_pair.keys() == scanned.keys()
    for group, vector in by_pair.items():
        np.testing.assert_allclose(vector, scanned[group], atol=1e-10)
    red_1 = repo.sum(where={"color": "red", "label": 1})
    np.testing.assert_allclose(red_1, scanned[("red", 1)], atol=1e-10)
    np.testing.assert_allclose(repo.sum(), S.sum(axis=0), atol=1e-10)
    np.testing.assert_allclose(repo.sum(where={"color": "blue"}),
                               S[1::2].sum(axis=0), atol=1e-10)
    monkeypatch.undo()
    # A key tracked later is summed once over what the repository holds.
    repo.close()
    repo = SketchRepository(tmp_path, sum_keys=["color"])
    monkeypatch.setattr(SketchRepository, "_sum_scan", no_scan)
    by_color = repo.sum(group_by="color")
    np.testing.assert_allclose(by_color["red"], S[::2].sum(axis=0), atol=1e-10)


def test_partial_fit_keeps_old_sketches_comparable(tmp_path):
    old, _ = make_activation_records(30, n_modules=4, random_state=0)
    new = [{"objects": [
        {"id": 0, "module": "fresh", "attributes": [float(i), 1.0], "inputs": [1]},
        {"id": 1, "module": "other", "attributes": [0.5 * i], "inputs": []}]}
        for i in range(10)]
    sketcher = RecursiveSketcher(128, random_state=3).fit(old)
    repo = SketchRepository(tmp_path, sketcher=sketcher)
    repo.add(old)
    sketcher.partial_fit(new)
    repo.add(new)  # the repository's sketcher is the caller's: it knows "fresh"
    repo.close()
    reopened = SketchRepository(tmp_path)  # rebuilt, with the new modules
    assert {"fresh", "other"} <= set(reopened.sketcher.modules_)
    both = reopened.sketcher.transform(old + new)
    np.testing.assert_allclose(reopened.get(list(range(40)))[0], both,
                               rtol=1e-12, atol=1e-12)
    ids, scores = reopened.query(old[:5] + new[:5], k=1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4, 30, 31, 32, 33, 34]
    np.testing.assert_allclose(scores[:, 0], 1.0)
    # Reopening with the partially fitted sketcher is accepted, as is the
    # original one (it knows fewer modules, with the same matrices).
    SketchRepository(tmp_path, sketcher=sketcher).close()
    SketchRepository(tmp_path,
                     sketcher=RecursiveSketcher(128, random_state=3).fit(old)).close()


def test_find_emerging(tmp_path, data):
    _, _, sketcher, _ = data
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((4, 128))

    def near(c, n):
        return centers[c] + 0.2 * rng.standard_normal((n, 128))

    repo = SketchRepository(tmp_path, sketcher=sketcher)
    repo.add(np.vstack([near(0, 30), near(1, 30)]), times=100.0)
    repo.add(near(0, 5), ids=[f"a{i}" for i in range(5)], times=200.0,
             metadata=[{"site": "x"}] * 5)
    repo.add(near(2, 6), ids=[f"b{i}" for i in range(6)], times=200.0,
             metadata=[{"site": "x"}] * 6)
    repo.add(near(3, 3), ids=[f"c{i}" for i in range(3)], times=300.0,
             metadata=[{"site": "y"}] * 3)
    repo.add(rng.standard_normal((1, 128)), ids=["lone"], times=300.0)
    clusters = repo.find_emerging(since=150.0)
    assert [c.ids.tolist() for c in clusters] == [
        [f"b{i}" for i in range(6)], [f"c{i}" for i in range(3)]]
    vectors, _ = repo.get([f"b{i}" for i in range(6)])
    np.testing.assert_allclose(clusters[0].sum, vectors.sum(axis=0))
    assert clusters[0].similarity < 0.5
    assert [c.ids.size for c in repo.find_emerging(since=150.0, min_size=1)] == [
        6, 3, 1]
    # Since 250, the b-cluster is old, and the c-cluster is new.
    assert [c.ids.size for c in repo.find_emerging(since=250.0)] == [3]
    # The filter applies to the older sketches too: none has site "x", so
    # the a's, near old ones but not near an old "x", are new as well.
    assert [c.ids.tolist()[0] for c in repo.find_emerging(
        since=150.0, where={"site": "x"})] == ["b0", "a0"]
    # With nothing older, every recent cluster is new, the c's included.
    everything = repo.find_emerging(since=0.0)
    assert [c.ids.size for c in everything] == [35, 30, 6, 3]
    assert everything[0].similarity == -np.inf
    # A stricter threshold: far fewer sketches link, so the clusters split.
    assert len(repo.find_emerging(since=150.0, threshold=0.99)) == 0
    with pytest.raises(ValueError, match="'threshold'"):
        repo.find_emerging(since=0.0, threshold=2)
    with pytest.raises(TypeError, match="'since'"):
        repo.find_emerging(since="yesterday")


IMPORT_WATCH = """
import os, sys
OPTIONAL = {"pyarrow", "dask", "distributed"}
culprits = []

class Watch:
    # Records which file imports an optional dependency (scikit-learn may
    # import pandas, which imports pyarrow: that is not sksketch's doing).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            frame = sys._getframe(1)
            while frame.f_code.co_filename.startswith("<frozen"):
                frame = frame.f_back
            culprits.append((name, frame.f_code.co_filename))
        return None

sys.meta_path.insert(0, Watch())
import sksketch, sksketch.dask, sksketch.repository
ours = os.path.dirname(sksketch.__file__)
print(sorted({name for name, file in culprits if file.startswith(ours)}))
"""


def test_empty_cases(tmp_path, data):
    _, _, sketcher, S = data
    repo = SketchRepository(tmp_path, sketcher=sketcher, sum_keys=["label"])
    ids, scores = repo.query(S[:2], k=3)
    assert ids.shape == scores.shape == (2, 0)
    assert repo.find_emerging(since=0.0) == []
    np.testing.assert_array_equal(repo.sum(), np.zeros(128))
    assert repo.sum(group_by="label") == {}
    repo.add(S[:4], times=10.0)
    assert repo.find_emerging(since=20.0) == []
    ids, scores = repo.query(S[:0], k=3)
    assert ids.shape == (0, 3)
    assert repo.sum(group_by="label", return_counts=True)[1] == {None: 4}


def test_a_key_tracked_by_another_handle_is_kept_up_to_date(tmp_path, data):
    _, _, sketcher, S = data
    first = SketchRepository(tmp_path, sketcher=sketcher)
    first.add(S[:10], metadata=[{"x": i % 2} for i in range(10)])
    second = SketchRepository(tmp_path, sum_keys=["x"])  # as another process
    first.add(S[10:20], metadata=[{"x": i % 2} for i in range(10, 20)])
    for handle in (first, second):
        sums, counts = handle.sum(group_by="x", return_counts=True)
        assert counts == {0: 10, 1: 10}
        np.testing.assert_allclose(sums[1], S[1:20:2].sum(axis=0), atol=1e-10)


def test_import_does_not_load_optional_dependencies():
    out = subprocess.run([sys.executable, "-c", IMPORT_WATCH], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- crash safety ------------------------------------------------------------

# The reader is a fresh interpreter; the writers are forked from this one, so
# that each of them starts at once (importing scikit-learn takes seconds).
READER = """
import os, sys, time
import numpy as np
from sksketch import SketchRepository
path, B, MAX, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
T = np.random.default_rng(0).standard_normal((MAX, D))
repo = SketchRepository(path)
rng = np.random.default_rng(1)
print("ready", flush=True)
checks = 0
while not os.path.exists(path + ".stop"):
    sums, counts = repo.sum(group_by="g", return_counts=True)
    total = sum(counts.values())
    assert total % B == 0, f"torn: {total} entries"
    for g in counts:
        rows = np.arange(g, total, 3)
        assert counts[g] == rows.size, (g, counts[g], rows.size)
        assert np.allclose(sums[g], T[rows].sum(axis=0)), g
    n = len(repo)
    assert n % B == 0 and n >= total, (n, total)
    if n:
        i = rng.integers(n, size=5)
        ids, scores = repo.query(T[i], k=1)
        assert ids[:, 0].tolist() == [f"e{j}" for j in i], (ids, i)
        assert np.allclose(scores[:, 0], 1.0)
        ids, _ = repo.query(T[i], k=3, where={"g": 1})
        assert all(int(x[1:]) % 3 == 1 for x in ids.ravel())
    checks += 1
    time.sleep(0.005)
print(checks)
"""


def _write_forever(path, B, T, fd):
    """Append batches of ``B`` rows of ``T``; write each committed count."""
    repo = SketchRepository(path)
    os.write(fd, b"ready\n")
    while True:
        n = len(repo)
        if n + B > T.shape[0]:
            time.sleep(1)
            continue
        rows = range(n, n + B)
        repo.add(T[n:n + B], ids=[f"e{i}" for i in rows],
                 metadata=[{"g": i % 3, "i": i} for i in rows],
                 times=[float(i) for i in rows])
        os.write(fd, f"{n + B}\n".encode())


def _read_all(fd):
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")
def test_sigkill_mid_batch_loses_nothing_committed(tmp_path):
    import multiprocessing

    B, MAX, D, kills = 400, 120_000, 32, 10
    path = str(tmp_path / "repo")
    sketcher = RecursiveSketcher(D, random_state=0).fit(
        make_activation_records(3, random_state=0)[0])
    SketchRepository(path, sketcher=sketcher, sum_keys=["g"]).close()
    (tmp_path / "reader.py").write_text(READER)
    reader = subprocess.Popen(
        [sys.executable, str(tmp_path / "reader.py"), path, str(B), str(MAX), str(D)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    T = np.random.default_rng(0).standard_normal((MAX, D))
    rng = np.random.default_rng(5)
    fork = multiprocessing.get_context("fork")
    torn_tails = n = 0
    try:
        assert reader.stdout.readline() == "ready\n", reader.stderr.read()
        for _ in range(kills):
            read_end, write_end = os.pipe()
            writer = fork.Process(target=_write_forever,
                                  args=(path, B, T, write_end), daemon=True)
            writer.start()
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                assert pipe.readline() == b"ready\n"
                time.sleep(rng.uniform(0.05, 0.25))
                os.kill(writer.pid, signal.SIGKILL)
                writer.join()
                assert writer.exitcode == -signal.SIGKILL
                printed = [int(line) for line in pipe.read().split()]
            with SketchRepository(path) as repo:
                n = len(repo)
                # Every add that returned is there; at most the one being
                # committed when killed is there too; no part of a batch.
                assert n % B == 0
                assert max(printed, default=0) <= n <= max(printed, default=n) + B
                size = os.path.getsize(os.path.join(path, store.VECTOR_FILE))
                torn_tails += size > n * D * 8
                vectors, metadata = repo.get([f"e{i}" for i in range(n)])
                np.testing.assert_array_equal(vectors, T[:n])
                np.testing.assert_allclose(repo._norms(n),
                                           np.linalg.norm(T[:n], axis=1), rtol=1e-14)
                assert metadata == [{"g": i % 3, "i": i} for i in range(n)]
                sums, counts = repo.sum(group_by="g", return_counts=True)
                for g in range(3):
                    assert counts.get(g, 0) == len(range(g, n, 3))
                    np.testing.assert_allclose(sums.get(g, 0), T[g:n:3].sum(axis=0),
                                               atol=1e-9)
    finally:
        open(path + ".stop", "w").close()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) > 0  # the reader queried while writers appended
    assert n >= B  # writers did commit
    print(f"{kills} kills, {n} entries, {torn_tails} torn tails, "
          f"{int(out)} reader checks")
