import os
import tracemalloc

import numpy as np
import pytest

from sksketch import (
    RecordBatch,
    RecursiveSketcher,
    iter_parquet,
    jsonl_to_parquet,
    make_activation_records,
    read_batch,
    read_parquet,
    write_parquet,
    write_records,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_round_trip_every_kind_of_record(tmp_path, dag_records):
    empty = {"objects": []}
    records = [empty, *dag_records[:10], empty, *dag_records[10:], empty]
    path = tmp_path / "r.parquet"
    assert write_parquet(records, path, chunk_size=7) == len(records)
    expected = RecordBatch.from_records(records)
    batch = read_parquet(path, ids=True)
    assert batch.n_records == len(records)
    assert batch.to_records() == expected.to_records()
    sketcher = RecursiveSketcher(64, random_state=0).fit(expected)
    S = sketcher.transform(expected)
    np.testing.assert_allclose(sketcher.transform(read_parquet(path)), S,
                               rtol=1e-12, atol=1e-12)
    pieces = list(iter_parquet(path, dtype=np.float32))
    assert [p.n_records for p in pieces] == [7, 7, 7, 7]  # 28, ends empty
    assert all(p.dtype == np.float32 for p in pieces)
    np.testing.assert_allclose(
        np.vstack([sketcher.transform(p.astype(np.float64)) for p in pieces]), S,
        rtol=1e-5, atol=1e-5)


def test_default_slots_are_stored_as_nulls(tmp_path):
    records, _ = make_activation_records(30, random_state=0)
    write_parquet(records, tmp_path / "r.parquet")
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.column("slot").null_count == table.num_rows
    assert read_parquet(tmp_path / "r.parquet", ids=True).to_records() == records


def test_a_directory_is_one_dataset(tmp_path, dag_records):
    os.mkdir(tmp_path / "set")
    write_parquet(dag_records[:9], tmp_path / "set" / "a.parquet")
    write_parquet([{"objects": []}], tmp_path / "set" / "b.parquet")
    write_parquet(dag_records[9:], tmp_path / "set" / "c.parquet", chunk_size=4)
    batch = read_parquet(tmp_path / "set", ids=True)
    assert batch.to_records() == RecordBatch.from_records(
        dag_records[:9] + [{"objects": []}] + dag_records[9:]).to_records()
    assert sum(b.n_records for b in iter_parquet(tmp_path / "set")) == 26


def test_row_groups_that_split_records_are_read_whole(tmp_path, dag_records):
    from sksketch._parquet import batch_to_table

    table = batch_to_table(RecordBatch.from_records(dag_records))
    pq.write_table(table, tmp_path / "foreign.parquet", row_group_size=5)
    assert pq.ParquetFile(tmp_path / "foreign.parquet").num_row_groups > 10
    pieces = list(iter_parquet(tmp_path / "foreign.parquet", ids=True))
    assert sum(p.n_records for p in pieces) == len(dag_records)
    got = [r for p in pieces for r in p.to_records()]
    assert got == RecordBatch.from_records(dag_records).to_records()


def test_jsonl_converts_in_bounded_memory(tmp_path):
    records, _ = make_activation_records(1000, random_state=0)
    write_records(records, tmp_path / "r.jsonl")
    tracemalloc.start()
    read_batch(tmp_path / "r.jsonl")
    _, whole = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    n = jsonl_to_parquet(tmp_path / "r.jsonl", tmp_path / "r.parquet",
                         chunk_size=50)
    _, streamed = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 1000
    assert streamed < whole / 4, (streamed, whole)
    assert pq.ParquetFile(tmp_path / "r.parquet").num_row_groups == 20
    sketcher = RecursiveSketcher(32, random_state=0).fit(records)
    np.testing.assert_allclose(sketcher.transform(read_parquet(tmp_path / "r.parquet")),
                               sketcher.transform(records), rtol=1e-12, atol=1e-12)


def test_failed_writes_leave_the_old_file(tmp_path):
    records, _ = make_activation_records(5, random_state=0)
    path = tmp_path / "r.parquet"
    write_parquet(records, path)
    before = path.read_bytes()
    bad = [*records, {"objects": [{"id": 0, "module": "m", "attributes": [np.nan]}]}]
    with pytest.raises(ValueError, match="non-finite"):
        write_parquet(bad, path, chunk_size=2)
    (tmp_path / "bad.jsonl").write_text('{"objects": []}\n{"objects": 3}\n')
    with pytest.raises((ValueError, TypeError), match="line 2"):
        jsonl_to_parquet(tmp_path / "bad.jsonl", path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "r.parquet"]
    with pytest.raises(ValueError, match="'chunk_size'"):
        write_parquet(records, path, chunk_size=0)


def test_invalid_tables_are_refused(tmp_path, dag_records):
    from sksketch._parquet import batch_to_table

    table = batch_to_table(RecordBatch.from_records(dag_records[:3]))
    pq.write_table(table.drop_columns(["inputs"]), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"missing columns \['inputs'\]"):
        read_parquet(tmp_path / "a.parquet")
    inputs = pa.array([[99]] + [[]] * (table.num_rows - 1), pa.list_(pa.int32()))
    bad = table.set_column(table.column_names.index("inputs"), "inputs", inputs)
    pq.write_table(bad, tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="offset 99"):
        read_parquet(tmp_path / "b.parquet")
    module = pa.array(["same"] * table.num_rows)
    bad = table.set_column(table.column_names.index("module"), "module", module)
    pq.write_table(bad, tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="module 'same' has"):
        read_parquet(tmp_path / "c.parquet")


def test_parquet_is_told_by_content(tmp_path):
    from sksketch._parquet import is_parquet, parquet_records

    records, _ = make_activation_records(4, random_state=0)
    write_parquet(records, tmp_path / "renamed.jsonl")
    write_records(records, tmp_path / "r.parquet")  # JSON Lines, misnamed
    assert is_parquet(tmp_path / "renamed.jsonl")
    assert not is_parquet(tmp_path / "r.parquet")
    assert not is_parquet(tmp_path / "missing")
    assert list(parquet_records(tmp_path / "renamed.jsonl")) == records


def test_read_records_and_read_batch_accept_parquet(tmp_path):
    from sksketch import read_batch, read_records, write_parquet

    records, _ = make_activation_records(7, random_state=3)
    path = tmp_path / "records.data"  # told by content, not by suffix
    write_parquet(records, path)
    read = list(read_records(path))
    assert [r.n_objects for r in read] == [r.n_objects for r in records]
    sketcher = RecursiveSketcher(32, random_state=0).fit(records)
    np.testing.assert_allclose(sketcher.transform(read_batch(path)),
                               sketcher.transform(records), rtol=0, atol=1e-12)


def test_without_pyarrow_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"Parquet support needs 'pyarrow': pip "
                                          r"install 'sksketch\[parquet\]'"):
        write_parquet([{"objects": []}], tmp_path / "r.parquet")
