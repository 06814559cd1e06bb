import gzip
import io
import json
import os
import stat

import numpy as np
import pytest

import sksketch._io
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


@pytest.fixture(params=["msgspec", "json"])
def decoder(request, monkeypatch):
    """read_batch's two paths: msgspec's typed decoder, and json alone."""
    if request.param == "msgspec":
        pytest.importorskip("msgspec")
        assert sksketch._io._typed_decoder() is not None
    else:
        monkeypatch.setattr(sksketch._io, "_typed_decoder", lambda: None)
    return request.param


@pytest.mark.parametrize("bad, match", BAD_LINES)
def test_read_batch_names_file_and_line_as_read_records(dag_records, tmp_path, bad,
                                                        match, decoder):
    good = _good_line(dag_records)
    path = _write_lines(tmp_path / "records", [good, b"", bad, good])
    with pytest.raises(ValueError, match=match):
        read_batch(path)


def test_read_batch_equals_reading_records(dag_records, tmp_path, decoder):
    path = tmp_path / "records.jsonl.gz"
    write_records(dag_records, path)
    batch = read_batch(path, dtype=np.float32)
    assert batch.dtype == np.float32 and len(batch) == len(dag_records)
    assert batch.to_records() == RecordBatch.from_records(dag_records).astype(
        np.float32).to_records()
    sketcher = RecursiveSketcher(32, random_state=0).fit(dag_records)
    np.testing.assert_array_equal(sketcher.transform(read_batch(path)),
                                  sketcher.transform(list(read_records(path))))


def test_read_batch_checks_structure_across_lines(tmp_path, decoder):
    lines = [b'{"objects": [{"id": 0, "module": "a", "attributes": [1.0]}]}',
             b'{"objects": [{"id": 0, "module": "a", "attributes": [1.0], '
             b'"inputs": [0]}]}']
    path = _write_lines(tmp_path / "records.jsonl", lines)
    with pytest.raises(ValueError, match="record on line 2 of '.*records.jsonl', "
                                         "object 0: field 'inputs' closes a cycle"):
        read_batch(path)


def _batch_fields(batch):
    """Every field of a batch, arrays as lists, ids with their types."""
    fields = {}
    for name, value in sorted(vars(batch).items()):
        if isinstance(value, np.ndarray):
            value = (value.dtype.str, value.tolist())
        elif isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
            value = [(a.dtype.str, a.tolist()) for a in value]
        elif name == "_object_ids":
            value = [(type(i).__name__, i) for i in value]
        fields[name] = value
    return fields


# Booleans as attributes: json reads them as 0/1, msgspec refuses them (and
# leaves the line to json).
JSON_ONLY = b'{"objects": [{"id": 0, "module": "a", "attributes": [true, false, 1]}]}'

# Valid lines on which msgspec's types and json's differ in what they see:
# ints where floats go, ints beyond int64 and beyond a float's precision,
# booleans as attributes (json accepts them as 0/1, msgspec refuses), string
# ids, nested slots, null inputs and outputs, explicit outputs, non-ASCII
# names, a module without attributes, duplicate keys (the last one counts).
VALID_LINES = [
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1, 2.5, -3],'
    b' "weight": 2, "slot": 4, "inputs": [1]},'
    b' {"id": 1, "module": "b", "attributes": [123456789012345678901234567890,'
    b' 9007199254740993]}]}',
    JSON_ONLY,
    b'{"objects": [{"id": "x", "module": "caf\xc3\xa9", "attributes": [0.1],'
    b' "slot": [1, [2, "s"]], "inputs": null},'
    b' {"id": "y", "module": "caf\xc3\xa9", "attributes": [1e-300],'
    b' "slot": "left", "inputs": ["x"]}], "outputs": ["y", "x"]}',
    b'{"objects": [{"id": 0, "module": "flag", "attributes": [], "weight": 0.5},'
    b' {"id": 1, "id": 2, "module": "a", "attributes": [7, 8, 9],'
    b' "inputs": [0]}], "outputs": null}',
    b'{"objects": []}',
    b'  {"objects": [{"id": 5, "module": "a", "attributes": [1e308, -0.0]}]}  ',
]

# Invalid lines: each path must refuse them with the same message.
INVALID_LINES = [line for line, _ in BAD_LINES] + [
    b'{"objects": [{"id": 0, "module": "a", "attributes": []},'
    b' {"id": 0, "module": "a", "attributes": []}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "inputs": [1, 1]},'
    b' {"id": 1, "module": "a", "attributes": [2]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "inputs": [7]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1]},'
    b' {"id": 1, "module": "a", "attributes": [1, 2]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "weight": -1}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "weight": NaN}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "weight": 1e400}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [Infinity]}]}',
    b'{"objects": [{"id": 0, "module": "", "attributes": [1]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1]}], "outputs": [0, 0]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1]}], "outputs": [3]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "colour": 1}]}',
    b'{"objects": [], "extra": 1}',
    b'{"objects": [{"id": true, "module": "a", "attributes": [1]}]}',
    b'{"objects": [{"id": 1.0, "module": "a", "attributes": [1]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "slot": []}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "slot": 1.5}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "slot": [true]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [[1, 2]]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": "12"}]}',
    b'{"objects": [{"id": 0, "module": 7, "attributes": [1]}]}',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "inputs": 0}]}',
    b'{"objects": {"id": 0}}',
    b'["objects"]',
    b'{"objects": [{"id": 0, "module": "a", "attributes": [1], "inputs": [0]}]}',
]


def _read_batch_both_ways(path, monkeypatch):
    """read_batch's result (or error message) with msgspec, then json alone."""
    outcomes = []
    for typed in (True, False):
        with monkeypatch.context() as patch:
            if not typed:
                patch.setattr(sksketch._io, "_typed_decoder", lambda: None)
            try:
                outcomes.append(_batch_fields(read_batch(path)))
            except (TypeError, ValueError) as exc:
                outcomes.append((type(exc).__name__, str(exc)))
    return outcomes


@pytest.mark.parametrize("index", range(len(VALID_LINES)))
def test_msgspec_and_json_read_the_same_batch(tmp_path, monkeypatch, index):
    pytest.importorskip("msgspec")
    path = _write_lines(tmp_path / "records.jsonl", [VALID_LINES[index]] * 2)
    typed, plain = _read_batch_both_ways(path, monkeypatch)
    assert isinstance(plain, dict)  # read, not refused
    assert typed == plain
    # ... and the typed decoder read the line itself, not json after it.
    parsed = sksketch._io._parse_typed(sksketch._io._typed_decoder(),
                                       VALID_LINES[index], "record")
    assert (parsed is None) == (VALID_LINES[index] is JSON_ONLY)


@pytest.mark.parametrize("index", range(len(INVALID_LINES)))
def test_msgspec_and_json_refuse_with_the_same_message(tmp_path, monkeypatch, index):
    pytest.importorskip("msgspec")
    good = b'{"objects": [{"id": 0, "module": "a", "attributes": [1.0]}]}'
    path = _write_lines(tmp_path / "records.jsonl", [good, INVALID_LINES[index]])
    typed, plain = _read_batch_both_ways(path, monkeypatch)
    assert isinstance(plain, tuple) and "line 2 of" in plain[1]
    assert typed == plain
