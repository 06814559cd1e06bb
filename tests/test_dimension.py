import numpy as np
import pytest

from sksketch import (
    RecursiveSketcher,
    SketchAttributeRecoverer,
    make_activation_records,
    merge_records,
    suggest_sketch_dim,
)

from .conftest import path_statistics


@pytest.fixture(scope="module")
def records():
    return make_activation_records(60, n_modules=6, depth=3, shared_fraction=0.3,
                                   random_state=0)[0]


def _max_error(records, sketch_dim, method="lstsq"):
    recoverer = SketchAttributeRecoverer(RecursiveSketcher(sketch_dim, random_state=0),
                                         method=method).fit(records)
    sketches = recoverer.sketcher_.transform(records)
    counts = recoverer.transform(sketches)[:, [n.endswith(":count") for n in
                                              recoverer.get_feature_names_out()]]
    truth = np.array([[path_statistics(r)[0].get(p, 0.0) for p in recoverer.paths_]
                      for r in records])
    return np.abs(counts - truth).max()


def test_lstsq_suggestion_is_exact_and_not_wasteful(records):
    sketch_dim = suggest_sketch_dim(records)
    assert _max_error(records, sketch_dim) < 1e-8  # not optimistic
    # Not wasteful: a record that activates every unknown cannot be decoded
    # once d is below the number of unknowns, about half the suggestion.
    everything = [merge_records(records)]
    n_unknowns = sketch_dim // 2
    assert _max_error(records + everything, n_unknowns - 1) > 1e-3


@pytest.mark.parametrize("wrapper", ["half_identity", "none"])
def test_transpose_suggestion_meets_the_error_and_not_wasteful(records, wrapper):
    target = 0.5
    sketch_dim = suggest_sketch_dim(records, method="transpose", error=target,
                                    wrapper=wrapper)

    def mean_relative_error(d):
        recoverer = SketchAttributeRecoverer(
            RecursiveSketcher(d, wrapper=wrapper, random_state=0),
            method="transpose").fit(records)
        sketches = recoverer.sketcher_.transform(records)
        errors = []
        for record, sketch in zip(records, sketches):
            _, slot_sum = path_statistics(record)
            for (path, slot), value in slot_sum.items():
                if len(path) == 3:
                    query = [(m, 0) for m in path[:-1]] + [(path[-1], slot)]
                    estimate = recoverer.recover(sketch[None], query)[0]
                    errors.append(np.linalg.norm(estimate - value)
                                  / np.linalg.norm(sketch))
        return np.mean(errors)

    assert mean_relative_error(sketch_dim) <= target  # not optimistic
    assert mean_relative_error(sketch_dim // 4) > target  # not 4x wasteful


def test_invalid_input():
    with pytest.raises(ValueError, match="no objects"):
        suggest_sketch_dim([{"objects": []}])
    with pytest.raises(ValueError, match="method"):
        suggest_sketch_dim([{"objects": []}], method="magic")
