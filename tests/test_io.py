import gzip
import io

import pytest

from sksketch import read_records, write_records


def test_round_trip(dag_records, tmp_path):
    path = tmp_path / "records.jsonl"
    assert write_records(dag_records, path) == len(dag_records)
    assert list(read_records(path)) == dag_records
    assert len(path.read_text().splitlines()) == len(dag_records)


def test_gzip_round_trip(dag_records, tmp_path):
    path = tmp_path / "records.jsonl.gz"
    write_records(iter(dag_records), path)
    with gzip.open(path, "rt") as handle:
        assert handle.readline().startswith('{"objects":')
    assert list(read_records(str(path))) == dag_records


def test_reading_is_lazy_and_names_the_bad_line(dag_records):
    buffer = io.StringIO()
    write_records(dag_records[:2], buffer)
    text = buffer.getvalue() + "\n" + '{"objects": [{"id": 0}]}\n' + "not json\n"
    records = read_records(io.StringIO(text))
    assert next(records) == dag_records[0]  # nothing past line 1 read yet
    assert next(records) == dag_records[1]
    with pytest.raises(ValueError, match="record on line 4, object #0: missing "
                                         "required field 'module'"):
        next(records)


def test_invalid_json_line():
    with pytest.raises(ValueError, match="line 1: invalid JSON"):
        list(read_records(io.StringIO("{oops\n")))
