"""The ``verbose`` parameter: silent at 0, progress lines on stdout above."""

import numpy as np
import pytest

from sksketch import (
    NetworkRecoveryDictionaryLearner,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    make_activation_records,
)


@pytest.fixture(scope="module")
def records():
    return make_activation_records(20, random_state=0)[0]


def test_sketcher_verbose_prints_progress_and_never_changes_sketches(records, capsys):
    quiet = RecursiveSketcher(32, random_state=0).fit(records).transform(records)
    assert capsys.readouterr().out == ""
    for engine in ("unrolled", "levelwise"):
        sketcher = RecursiveSketcher(32, engine=engine, random_state=0, verbose=2)
        loud = sketcher.fit(records).transform(records)
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(line.startswith("[RecursiveSketcher] ") for line in lines)
        assert any("20 records" in line for line in lines)
        expected = RecursiveSketcher(32, engine=engine, random_state=0).fit(
            records).transform(records)
        np.testing.assert_array_equal(loud, expected)
    assert capsys.readouterr().out == ""
    assert quiet.shape == (20, 32)


def test_recoverer_verbose(records, capsys):
    SketchAttributeRecoverer(RecursiveSketcher(32, random_state=0)).fit(records)
    assert capsys.readouterr().out == ""
    SketchAttributeRecoverer(RecursiveSketcher(32, random_state=0),
                             verbose=1).fit(records)
    out = capsys.readouterr().out
    assert "[SketchAttributeRecoverer] " in out and "module paths" in out


def test_network_learner_verbose(capsys):
    records, _, network = make_activation_records(
        60, n_modules=4, connectivity="dense", weights="random", random_state=0,
        return_network=True)
    S = RecursiveSketcher(64, random_state=0).fit_transform(records)
    capsys.readouterr()
    layers = network.layers[::-1]
    NetworkRecoveryDictionaryLearner(layers=layers).fit(S, records)
    assert capsys.readouterr().out == ""
    NetworkRecoveryDictionaryLearner(layers=layers, verbose=1).fit(S, records)
    out = capsys.readouterr().out
    assert "[NetworkRecoveryDictionaryLearner] " in out and "path blocks" in out


@pytest.mark.parametrize("estimator", [RecursiveSketcher, SketchAttributeRecoverer,
                                       NetworkRecoveryDictionaryLearner])
def test_verbose_is_validated(estimator):
    with pytest.raises(ValueError, match="verbose"):
        estimator(verbose="loud").fit(np.zeros((3, 4)))
