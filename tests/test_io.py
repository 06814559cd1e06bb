import gzip
import io
import json
import os
import stat

import numpy as np
import pytest

from sksketch import (
    RecordBatch,
    RecursiveSketcher,
    read_batch,
    read_records,
    write_records,
)


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


def _bad_record():
    return {"objects": [{"id": 0, "module": "a", "attributes": [1.0],
                         "weight": -1.0}]}


def _raising(records):
    yield from records
    raise RuntimeError("recorder crashed")


@pytest.mark.parametrize("name", ["records.jsonl", "records.jsonl.gz"])
@pytest.mark.parametrize("failure", ["bad record", "generator raises"])
def test_failed_write_keeps_the_old_file(dag_records, tmp_path, name, failure):
    path = tmp_path / name
    assert write_records([dag_records[0]] * 5, path) == 5
    if failure == "bad record":
        new, error = [dag_records[1]] * 2 + [_bad_record(), dag_records[1]], \
            ValueError
    else:
        new, error = _raising([dag_records[1]] * 2), RuntimeError
    with pytest.raises(error):
        write_records(new, path)
    assert list(read_records(path)) == [dag_records[0]] * 5
    assert os.listdir(tmp_path) == [name]  # the temporary file is gone


def test_failed_write_to_a_new_path_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="record 0, object 0: field 'weight'"):
        write_records([_bad_record()], tmp_path / "new.jsonl")
    assert os.listdir(tmp_path) == []


def test_open_file_gets_whole_lines_only(dag_records):
    buffer = io.StringIO()
    with pytest.raises(ValueError):
        write_records([dag_records[0], _bad_record()], buffer)
    assert buffer.getvalue().count("\n") == 1 and buffer.getvalue().endswith("\n")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_rewrite_keeps_permissions_and_follows_symlinks(dag_records, tmp_path):
    target = tmp_path / "target.jsonl"
    write_records(dag_records[:1], target)
    target.chmod(0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    write_records(dag_records[:3], link)
    assert link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert list(read_records(target)) == dag_records[:3]


def test_binary_file_objects(dag_records):
    buffer = io.BytesIO()
    write_records(dag_records[:2], buffer)
    buffer.seek(0)
    assert list(read_records(buffer)) == dag_records[:2]


def _write_lines(path, lines, compress=False):
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _good_line(dag_records):
    return json.dumps(dag_records[0].to_dict()).encode()


@pytest.mark.parametrize("name", ["RECORDS.JSONL.GZ", "records.jsonl",
                                  "records.gzip"])
def test_gzip_is_told_by_its_magic_bytes(dag_records, tmp_path, name):
    path = _write_lines(tmp_path / name, [_good_line(dag_records)] * 2,
                        compress=True)
    assert list(read_records(path)) == [dag_records[0]] * 2


def test_gz_suffix_is_compressed_in_any_case(dag_records, tmp_path):
    path = tmp_path / "RECORDS.JSONL.GZ"
    write_records(dag_records[:2], path)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert list(read_records(path)) == dag_records[:2]


BAD_LINES = [
    (b'{"objects": [{"id": 0, "module": "caf\xe9", "attributes": []}]}',
     r"line 3 of '.*records': invalid UTF-8 at byte 37"),
    (b"[" * 100_000, r"line 3 of '.*records': invalid JSON: nested too deeply"),
    (b'{"objects": [], "outputs": [' + b"1" * 5000 + b"]}",
     r"line 3 of '.*records': invalid JSON: Exceeds the limit"),
    (b"{oops", r"line 3 of '.*records': invalid JSON: Expecting"),
    (b'{"objects": [{"id": 0}]}',
     r"record on line 3 of '.*records', object #0: missing required field"),
    (b'{"objects": [{"id": 0, "module": "a", "attributes": [], "weight": 1'
     + b"0" * 400 + b"}]}", r"record on line 3 of '.*records', object 0: field "
                            r"'weight' must be finite and >= 0; got an int of"),
    (b'{"objects": [{"id": 0, "module": "a/b", "attributes": []}]}',
     r"record on line 3 of '.*records', object 0: field 'module' must not "
     r"contain '/'"),
]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("bad, match", BAD_LINES)
def test_bad_lines_name_file_and_line(dag_records, tmp_path, bad, match, compress):
    good = _good_line(dag_records)
    path = _write_lines(tmp_path / "records", [good, b"", bad, good], compress)
    records = read_records(path)
    assert next(records) == dag_records[0]
    with pytest.raises(ValueError, match=match):
        next(records)


def test_invalid_utf8_in_a_text_file_object(dag_records):
    good = _good_line(dag_records)
    text = io.TextIOWrapper(io.BytesIO(b"\n".join([good, good, b"\xff\xfe", good])),
                            encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 or later: invalid UTF-8"):
        list(read_records(text))


def test_truncated_gzip_names_the_line(dag_records, tmp_path):
    path = tmp_path / "records.jsonl.gz"
    write_records([dag_records[0]] * 1000, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    seen = []
    with pytest.raises(ValueError, match=r"line (\d+) of '.*records.jsonl.gz': "
                                         r"truncated or corrupt gzip data"):
        seen.extend(read_records(path))
    assert 0 < len(seen) < 1000
    assert f"line {len(seen) + 1} of" in str(_error_of(lambda: list(
        read_records(path))))


def test_corrupt_gzip_is_a_value_error(dag_records, tmp_path):
    path = tmp_path / "records.jsonl.gz"
    write_records([dag_records[0]] * 10, path)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the CRC32 of the trailer
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt gzip data"):
        list(read_records(path))


def _error_of(function):
    try:
        function()
    except ValueError as exc:
        return exc
    raise AssertionError("no ValueError")


@pytest.mark.parametrize("bad, match", BAD_LINES)
def test_read_batch_names_file_and_line_as_read_records(dag_records, tmp_path, bad,
                                                        match):
    good = _good_line(dag_records)
    path = _write_lines(tmp_path / "records", [good, b"", bad, good])
    with pytest.raises(ValueError, match=match):
        read_batch(path)


def test_read_batch_equals_reading_records(dag_records, tmp_path):
    path = tmp_path / "records.jsonl.gz"
    write_records(dag_records, path)
    batch = read_batch(path, dtype=np.float32)
    assert batch.dtype == np.float32 and len(batch) == len(dag_records)
    assert batch.to_records() == RecordBatch.from_records(dag_records).astype(
        np.float32).to_records()
    sketcher = RecursiveSketcher(32, random_state=0).fit(dag_records)
    np.testing.assert_array_equal(sketcher.transform(read_batch(path)),
                                  sketcher.transform(list(read_records(path))))


def test_read_batch_checks_structure_across_lines(tmp_path):
    lines = [b'{"objects": [{"id": 0, "module": "a", "attributes": [1.0]}]}',
             b'{"objects": [{"id": 0, "module": "a", "attributes": [1.0], '
             b'"inputs": [0]}]}']
    path = _write_lines(tmp_path / "records.jsonl", lines)
    with pytest.raises(ValueError, match="record on line 2 of '.*records.jsonl', "
                                         "object 0: field 'inputs' closes a cycle"):
        read_batch(path)
