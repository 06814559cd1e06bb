import os
import pickle

import numpy as np
import pytest

from sksketch import RecursiveSketcher, make_activation_records, write_parquet

dask = pytest.importorskip("dask")
db = pytest.importorskip("dask.bag")
pytest.importorskip("pyarrow")
distributed = pytest.importorskip("distributed")

from sksketch.dask import group_sums, sketch_records  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two worker processes on loopback."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def data():
    records, labels = make_activation_records(150, n_classes=3, random_state=0)
    sketcher = RecursiveSketcher(96, random_state=0).fit(records)
    return records, labels, sketcher, sketcher.transform(records)


def test_the_sketcher_ships_its_seed_not_its_matrices(data):
    records, _, sketcher, S = data
    payload = pickle.dumps(sketcher)
    assert len(payload) < 96 * 96 * 8 / 4  # less than a quarter of one matrix
    np.testing.assert_array_equal(pickle.loads(payload).transform(records), S)


def test_sketch_records_on_a_local_cluster(client, data, tmp_path):
    records, labels, sketcher, S = data
    assert len(client.scheduler_info()["workers"]) == 2
    bag = db.from_sequence(records, npartitions=5)
    got = sketch_records(bag, sketcher)
    assert got.shape[1] == 96
    np.testing.assert_allclose(got.compute(), S, rtol=1e-12, atol=1e-12)

    os.mkdir(tmp_path / "set")
    for i, lo in enumerate(range(0, 150, 60)):
        write_parquet(records[lo:lo + 60], tmp_path / "set" / f"{i}.parquet")
    from_files = sketch_records(tmp_path / "set", sketcher)
    assert from_files.chunks[0] == (60, 60, 30)
    np.testing.assert_allclose(from_files.compute(), S, rtol=1e-12, atol=1e-12)

    import dask.dataframe as dd

    files = sorted(str(p) for p in (tmp_path / "set").iterdir())
    frame = dd.read_parquet(files, split_row_groups=False)
    assert frame.npartitions == 3
    np.testing.assert_allclose(sketch_records(frame, sketcher).compute(), S,
                               rtol=1e-12, atol=1e-12)

    sums = group_sums(db.from_sequence(list(range(150)), npartitions=6).map(
        records.__getitem__), sketcher, by=lambda r: len(r.modules) % 3,
        split_every=2).compute()
    groups = np.array([len(r.modules) % 3 for r in records])
    assert sorted(sums) == sorted(set(groups.tolist()))
    for group, (count, total) in sums.items():
        assert count == int((groups == group).sum())
        np.testing.assert_allclose(total, S[groups == group].sum(axis=0),
                                   rtol=1e-12, atol=1e-12)


def test_sketch_records_validates(data):
    _, _, sketcher, _ = data
    with pytest.raises(TypeError, match="'records'"):
        sketch_records(object(), sketcher)
    with pytest.raises(ValueError, match="not fitted"):
        sketch_records(db.from_sequence([]), RecursiveSketcher())
    with pytest.raises(TypeError, match="'by'"):
        group_sums(db.from_sequence([]), sketcher, by=3)


def test_without_dask_the_error_names_the_extra(monkeypatch):
    records, _ = make_activation_records(2, random_state=0)
    sketcher = RecursiveSketcher(8, random_state=0).fit(records)
    monkeypatch.setitem(__import__("sys").modules, "dask", None)
    with pytest.raises(ImportError, match=r"sksketch.dask needs 'dask': pip install "
                                          r"'sksketch\[dask\]'"):
        sketch_records(["r.parquet"], sketcher)
