"""The ``sksketch`` command line, called through ``main`` (and once as a process)."""

import csv
import json
import os
import subprocess
import sys
import types

import joblib
import numpy as np
import pytest

from sksketch import (
    RecursiveSketcher,
    SketchAttributeRecoverer,
    cli,
    make_activation_records,
    write_records,
)
from sksketch.cli import main

# Large enough for these records to decode exactly (no OutOfStructureWarning).
D = 256
SEED = 3


@pytest.fixture(scope="module")
def records():
    return make_activation_records(30, random_state=0)[0]


@pytest.fixture
def records_file(records, tmp_path):
    path = tmp_path / "records.jsonl.gz"
    write_records(records, path)
    return path


@pytest.fixture
def small_batches(monkeypatch):
    # Several batches from 30 records: the streamed path is the one tested.
    monkeypatch.setattr(cli, "_BATCH_SIZE", 7)


def sketch(records_file, tmp_path, *extra):
    out, model = tmp_path / "S.npy", tmp_path / "model.joblib"
    status = main(["sketch", str(records_file), "-o", str(out), "--dim", str(D),
                   "--random-state", str(SEED), "--save-model", str(model),
                   *extra])
    assert status == 0
    return out, model


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sksketch: error: "), err
    return err


def read_table(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array(rows[1:], dtype=np.float64)


@pytest.mark.parametrize("save_model", [False, True])
def test_sketch_writes_the_librarys_sketches(records, records_file, tmp_path,
                                             small_batches, save_model):
    out = tmp_path / "S.npy"
    argv = ["sketch", str(records_file), "-o", str(out), "--dim", str(D),
            "--random-state", str(SEED), "--quiet"]
    if save_model:
        argv += ["--save-model", str(tmp_path / "m.joblib")]
    assert main(argv) == 0
    expected = RecursiveSketcher(D, random_state=SEED).fit_transform(records)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", [None, "transpose"])
def test_sketch_decode_round_trip(records, records_file, tmp_path, method,
                                  capsys):
    out, model = sketch(records_file, tmp_path)
    table = tmp_path / "table.csv"
    argv = ["decode", str(out), "--model", str(model), "-o", str(table)]
    if method is not None:
        argv += ["--method", method]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""

    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(D, random_state=SEED),
        method=method or "lstsq").fit(records)
    header, values = read_table(table)
    assert header == list(recoverer.get_feature_names_out())
    # %.17g: the CSV holds the very floats the library decodes.
    np.testing.assert_array_equal(values, recoverer.transform(np.load(out)))
    assert isinstance(joblib.load(model), SketchAttributeRecoverer)


def test_decode_streams_blocks(records, records_file, tmp_path, monkeypatch):
    out, model = sketch(records_file, tmp_path)
    table = tmp_path / "table.csv"
    monkeypatch.setattr(cli, "_BATCH_SIZE", 4)
    assert main(["decode", str(out), "--model", str(model), "-o", str(table)]) == 0
    _, values = read_table(table)
    expected = joblib.load(model).transform(np.load(out))
    # Blocks of 4 change the products' summation order, hence the last bits.
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-12)


def test_decode_warns_once_about_foreign_sketches(records_file, tmp_path, capsys):
    out, model = sketch(records_file, tmp_path)
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).normal(size=(5, D)))
    assert main(["decode", str(noise), "--model", str(model), "-o",
                 str(tmp_path / "t.csv")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sksketch: warning: 5 of 5")


def test_info_records(records, records_file, small_batches, capsys):
    assert main(["info", str(records_file)]) == 0
    out = capsys.readouterr().out
    dims = {}
    for record in records:
        dims.update(record.module_dims)
    assert f"records: {len(records)}\n" in out
    assert f"objects: {sum(r.n_objects for r in records)}\n" in out
    assert f"modules: {len(dims)}\n" in out
    for name, dim in dims.items():
        n = sum(r.modules.count(name) for r in records)
        assert f"  {name}: dim {dim}, {n} objects\n" in out


def test_info_sketches_and_model(records, records_file, tmp_path, capsys):
    out, model = sketch(records_file, tmp_path)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    norms = np.linalg.norm(np.load(out), axis=1)
    assert f"shape: ({len(records)}, {D})" in text and "dtype: float64" in text
    assert f"max {norms.max():.4g}" in text and f"min {norms.min():.4g}" in text

    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    recoverer = joblib.load(model)
    assert "SketchAttributeRecoverer" in text and f"sketch_dim: {D}\n" in text
    assert f"paths: {len(recoverer.paths_)}\n" in text
    for name, dim in recoverer.sketcher_.modules_.items():
        assert f"  {name}: dim {dim}\n" in text
    assert "  " + "/".join(recoverer.paths_[-1]) + "\n" in text


BAD_LINE = '{"objects": [{"id": 7, "module": "L0M0", "attributes": "oops"}]}\n'


@pytest.mark.parametrize("command", ["sketch", "info"])
def test_bad_record_is_one_line_naming_line_object_and_field(
        records, tmp_path, small_batches, capsys, command):
    path = tmp_path / "bad.jsonl"
    write_records(records[:9], path)
    with open(path, "a") as handle:
        handle.write(BAD_LINE)
    argv = ["info", str(path)]
    if command == "sketch":
        argv = ["sketch", str(path), "-o", str(tmp_path / "S.npy"), "--dim", "8"]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert "line 10" in err and str(path) in err
    assert "object" in err and "'attributes'" in err
    assert not (tmp_path / "S.npy").exists()


def test_dimension_change_across_batches_names_both_lines(records, tmp_path,
                                                          small_batches, capsys):
    path = tmp_path / "mixed.jsonl"
    write_records(records[:9], path)  # line 8 starts the second batch of 7
    module = records[0].modules[0]
    dim = records[0].module_dims[module]
    with open(path, "a") as handle:
        handle.write(json.dumps({"objects": [
            {"id": 5, "module": module, "attributes": [0.5] * (dim + 1)}]}) + "\n")
    assert main(["info", str(path)]) == 2
    err = one_error_line(capsys)
    assert "line 10" in err and "line 1 " in err and "object 5" in err


def test_missing_and_wrong_files_are_one_line(records_file, tmp_path, capsys):
    out, model = sketch(records_file, tmp_path)
    table = str(tmp_path / "t.csv")
    for argv in (["info", str(tmp_path / "absent.jsonl")],
                 ["decode", str(out), "--model", str(records_file), "-o", table],
                 ["decode", str(model), "--model", str(model), "-o", table],
                 ["decode", str(out), "--model", str(out), "-o", table]):
        assert main(argv) == 2, argv
        one_error_line(capsys)
    assert not os.path.exists(table)


def test_output_folder_must_exist(records_file, tmp_path, capsys):
    out = tmp_path / "absent" / "S.npy"
    assert main(["sketch", str(records_file), "-o", str(out), "--dim", "8"]) == 2
    assert "no folder" in one_error_line(capsys) and not out.parent.exists()


def test_empty_records_file(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert main(["sketch", str(path), "-o", str(tmp_path / "S.npy"),
                 "--dim", "8"]) == 2
    assert "no records" in one_error_line(capsys)


def test_no_overwrite_without_force(records_file, tmp_path, capsys):
    out, model = sketch(records_file, tmp_path)
    before = out.read_bytes()
    out.write_bytes(b"keep me")
    argv = ["sketch", str(records_file), "-o", str(out), "--dim", str(D),
            "--random-state", str(SEED)]
    assert main(argv) == 2
    assert "--force" in one_error_line(capsys)
    assert out.read_bytes() == b"keep me"
    assert main([*argv, "--force"]) == 0
    assert out.read_bytes() == before

    table = tmp_path / "t.csv"
    table.write_text("keep me")
    assert main(["decode", str(out), "--model", str(model), "-o", str(table)]) == 2
    one_error_line(capsys)
    assert table.read_text() == "keep me"
    # The model counts as an output of sketch too.
    out.unlink()
    assert main([*argv, "--save-model", str(model)]) == 2
    assert "model.joblib" in one_error_line(capsys) and not out.exists()


def test_failing_run_leaves_outputs_intact(records, records_file, tmp_path, capsys):
    out, model = sketch(records_file, tmp_path)
    bad = tmp_path / "bad.jsonl"
    write_records(records[:3], bad)
    with open(bad, "a") as handle:
        handle.write(BAD_LINE)
    sketches, saved = out.read_bytes(), model.read_bytes()
    assert main(["sketch", str(bad), "-o", str(out), "--dim", str(D),
                 "--save-model", str(model), "--force"]) == 2
    one_error_line(capsys)
    assert out.read_bytes() == sketches and model.read_bytes() == saved

    table = tmp_path / "t.csv"
    table.write_text("keep me")
    short = tmp_path / "short.npy"
    np.save(short, np.ones((2, D + 1)))  # more coordinates than the model's d
    assert main(["decode", str(short), "--model", str(model), "-o", str(table),
                 "--force"]) == 2
    one_error_line(capsys)
    assert table.read_text() == "keep me"
    # No temporary file is left beside the outputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["S.npy", "model.joblib", "bad.jsonl", "t.csv", "short.npy",
         records_file.name])


class FakeBar:
    """Stands in for tqdm: records what the command reports."""

    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.n = kwargs, 0
        FakeBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_counts_records_unless_quiet(records, records_file, tmp_path,
                                                  small_batches, monkeypatch,
                                                  quiet):
    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    monkeypatch.setattr(FakeBar, "made", [])
    argv = ["sketch", str(records_file), "-o", str(tmp_path / "S.npy"),
            "--dim", "8"] + (["--quiet"] if quiet else [])
    assert main(argv) == 0
    if quiet:
        assert FakeBar.made == []
    else:
        (bar,) = FakeBar.made
        assert bar.n == len(records) and bar.kwargs["file"] is sys.stderr


def test_no_tqdm_no_bar(records_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import raises
    sketch(records_file, tmp_path)


def test_demo_passes_its_arguments(tmp_path, monkeypatch, capsys):
    script = tmp_path / "demo.py"
    script.write_text("def main(argv):\n    print(' '.join(argv))\n")
    monkeypatch.setattr(cli, "_DEMO", script)
    assert main(["demo", "--fast", "--out", "plots"]) == 0
    assert capsys.readouterr().out == "--out plots --fast\n"


def test_demo_without_source_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_DEMO", tmp_path / "absent.py")
    assert main(["demo"]) == 2
    assert "make demo" in one_error_line(capsys)


@pytest.mark.parametrize("command", ["demo", "sketch", "decode", "info"])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: sksketch {command}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["sketch", "x.jsonl", "-o", "S.npy", "--dim", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    capsys.readouterr()


def test_python_m_sksketch_help():
    result = subprocess.run([sys.executable, "-m", "sksketch", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("demo", "sketch", "decode", "info"):
        assert command in result.stdout
