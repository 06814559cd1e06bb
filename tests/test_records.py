import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sksketch import (
    ActivationObject,
    ActivationRecord,
    RecursiveSketcher,
    merge_records,
)

VALID = {"objects": [
    {"id": 0, "module": "edge", "attributes": [0.1, 0.3]},
    {"id": 1, "module": "edge", "attributes": [0.2, 0.4]},
    {"id": 2, "module": "cat", "attributes": [1.0, 0.2, 0.5], "inputs": [1, 0]},
    {"id": 3, "module": "edge", "attributes": [0.0, 0.0], "slot": "left"},
    {"id": "out", "module": "output", "attributes": [0.7], "weight": 0.5,
     "inputs": [2, 3, 0]},
]}


def test_fields_defaults_and_roots():
    record = ActivationRecord.from_dict(VALID)
    assert record.ids == (0, 1, 2, 3, "out")
    assert record.modules == ("edge", "edge", "cat", "edge", "output")
    assert record.roots == ("out",)
    assert record.weights.tolist() == [1, 1, 1, 1, 0.5]
    assert record.inputs[2] == (1, 0) and record.inputs[4] == (2, 3, 0)
    assert record.module_dims == {"cat": 3, "edge": 2, "output": 1}
    # Default slot: ordinal among same-module inputs of the first consumer
    # (object 2 lists 1 then 0); the root is alone in its module.
    assert record.slots == (1, 0, 0, "left", 0)
    np.testing.assert_array_equal(record.attributes[2], [1.0, 0.2, 0.5])


def test_round_trip_through_dict():
    record = ActivationRecord.from_dict(VALID)
    again = ActivationRecord.from_dict(record.to_dict())
    assert again == record
    assert again.slots == record.slots


def test_explicit_outputs_and_tuple_slots():
    record = ActivationRecord(
        [ActivationObject(0, "a", [1.0], slot=[2, 3]),
         ActivationObject(1, "b", [1.0, 2.0], inputs=(0,))],
        outputs=[1, 0])
    assert record.roots == (1, 0)
    assert record.slots[0] == (2, 3)
    data = record.to_dict()
    assert data["outputs"] == [1, 0] and data["objects"][0]["slot"] == [2, 3]
    assert ActivationRecord.from_dict(data) == record


def test_numpy_inputs_are_accepted():
    record = ActivationRecord([{"id": np.int64(4), "module": "m",
                                "attributes": np.arange(3, dtype=np.float32),
                                "weight": np.float32(0.5), "slot": np.int32(2)}])
    assert record.ids == (4,) and record.slots == (2,)
    assert record.attributes[0].dtype == np.float64


def test_merge_records_renumbers_ids():
    a = ActivationRecord.from_dict(VALID)
    merged = merge_records([a, a])
    assert merged.n_objects == 10
    assert len(merged.roots) == 2 and merged.slots == a.slots + a.slots


def _mutated(mutate):
    data = copy.deepcopy(VALID)
    mutate(data["objects"])
    return data


def _set(index, field, value):
    def mutate(objects):
        objects[index][field] = value
    return mutate


def _delete(index, field):
    def mutate(objects):
        del objects[index][field]
    return mutate


def _nested(depth):
    slot = 0
    for _ in range(depth):
        slot = [slot]
    return slot


# (mutation, exception, message fragment): every message names the object
# and the field at fault.
BAD_RECORDS = [
    (_set(2, "inputs", [2]), ValueError, "object 2: field 'inputs' closes a cycle"),
    (_set(0, "inputs", ["out"]), ValueError, "field 'inputs' closes a cycle"),
    (_set(2, "inputs", [7]), ValueError, "object 2: field 'inputs' names id 7"),
    (_set(2, "inputs", [0, 0]), ValueError,
     "object 2: field 'inputs' lists id 0 twice"),
    (_set(2, "inputs", "0"), TypeError, "object 2: field 'inputs' must be a list"),
    (_set(2, "inputs", [1.5]), TypeError, "object 2, field 'inputs': field 'id'"),
    (_set(1, "id", 0), ValueError, "object 0: field 'id' duplicates object #0"),
    (_set(1, "id", 1.0), TypeError, "object #1: field 'id' must be an int or a str"),
    (_set(1, "id", True), TypeError, "object #1: field 'id' must be an int or a str"),
    (_delete(1, "module"), ValueError, "object #1: missing required field 'module'"),
    (_delete(1, "attributes"), ValueError, "missing required field 'attributes'"),
    (_set(1, "module", 3), TypeError, "object 1: field 'module' must be a str"),
    (_set(1, "module", ""), ValueError, "object 1: field 'module' is empty"),
    (_set(1, "module", "edge/cat"), ValueError,
     "object 1: field 'module' must not contain '/'"),
    (_set(1, "attributes", [0.1, float("nan")]), ValueError,
     "object 1: field 'attributes' holds non-finite values"),
    (_set(1, "attributes", [0.1, math.inf]), ValueError, "non-finite"),
    (_set(1, "attributes", [[0.1], [0.2, 0.3]]), ValueError,
     "object 1: field 'attributes' is ragged"),
    (_set(1, "attributes", [[0.1, 0.2]]), ValueError,
     "object 1: field 'attributes' must be 1-D"),
    (_set(1, "attributes", ["0.1", "0.2"]), TypeError,
     "object 1: field 'attributes' must hold real numbers"),
    (_set(1, "attributes", "0.1"), TypeError, "field 'attributes' must be a 1-D"),
    (_set(1, "attributes", [0.1, 0.2, 0.3]), ValueError,
     "object 1: field 'attributes' has dimension 3, but module 'edge' has "
     "dimension 2"),
    (_set(1, "weight", -0.5), ValueError, "object 1: field 'weight' must be finite "
                                          "and >= 0"),
    (_set(1, "weight", float("inf")), ValueError, "field 'weight' must be finite"),
    (_set(1, "weight", "1"), TypeError, "object 1: field 'weight' must be a real"),
    (_set(1, "weight", 10**400), ValueError, "object 1: field 'weight' must be "
                                             "finite and >= 0; got an int of 1329 "
                                             "bits, too large for a float"),
    (_set(1, "attributes", [10**400, 0.0]), ValueError,
     "object 1: field 'attributes' holds an int too large for a float"),
    (_set(1, "slot", np.array(3)), TypeError, "object 1: field 'slot' must be an "
                                              "int, a str or a non-empty sequence "
                                              "of them; got a 0-d array"),
    (_set(1, "slot", _nested(40)), TypeError, "object 1: field 'slot' nests "
                                              "sequences more than 32 levels"),
    (_set(2, "inputs", np.array(0)), TypeError, "object 2: field 'inputs' must be "
                                                "a list of ids; got a 0-d array"),
    (_set(1, "slot", 1.5), TypeError, "object 1: field 'slot' must be an int"),
    (_set(1, "slot", []), TypeError, "object 1: field 'slot'"),
    (_set(1, "slot", True), TypeError, "object 1: field 'slot'"),
    (_set(1, "weigth", 1.0), ValueError, "object #1: unknown field(s) ['weigth']"),
    (lambda objects: objects.append(3), TypeError, "object #5: an object must be a "
                                                   "mapping"),
]


@pytest.mark.parametrize("mutate, error, fragment", BAD_RECORDS)
def test_bad_records_are_rejected_with_a_clear_message(mutate, error, fragment):
    data = _mutated(mutate)
    with pytest.raises(error, match=r"^record 4, " + _escape(fragment)):
        ActivationRecord.from_dict(data, index=4)
    # The estimator names the record's position in X.
    with pytest.raises(error, match=r"^record 1, " + _escape(fragment)):
        RecursiveSketcher(8).fit([VALID, data])


def _escape(fragment):
    import re

    return ".*" + re.escape(fragment)


@pytest.mark.parametrize("data, error, fragment", [
    ([], TypeError, "record 0: expected a mapping with key 'objects'"),
    ({}, ValueError, "record 0: missing required field 'objects'"),
    ({"objects": {}}, TypeError, "record 0: field 'objects' must be a list"),
    ({"objects": [], "extra": 1}, ValueError, "record 0: unknown field(s) ['extra']"),
    ({"objects": [], "outputs": [3]}, ValueError, "record 0: field 'outputs' names "
                                                  "id 3"),
    ({"objects": [{"id": 1, "module": "a", "attributes": []}], "outputs": [1, 1]},
     ValueError, "record 0: field 'outputs' lists an id twice"),
    ({"objects": [{"id": 0, "module": "a", "attributes": []}],
      "outputs": np.array(0)}, TypeError, "record 0: field 'outputs' must be a "
                                          "list of ids; got a 0-d array"),
])
def test_bad_record_containers(data, error, fragment):
    with pytest.raises(error, match=_escape(fragment)):
        RecursiveSketcher(8).fit([data])


# Property-based: any mutation of a valid record, and arbitrary JSON-like
# garbage, gives ValueError or TypeError -- never another exception and never
# a sketch.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.floats(allow_nan=True)
    | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["id", "module", "attributes", "weight",
                                       "slot", "inputs", "x"]), children,
                      max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, 4),
       field=st.sampled_from(["id", "module", "attributes", "weight", "slot",
                              "inputs", "bogus"]),
       value=json_values)
def test_any_single_field_corruption_is_handled(index, field, value):
    data = copy.deepcopy(VALID)
    data["objects"][index][field] = value
    try:
        record = ActivationRecord.from_dict(data)
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith("record")
        return
    # Accepted: then it must be a genuinely valid record that sketches.
    sketch = RecursiveSketcher(8, random_state=0).fit_transform([record])
    assert np.all(np.isfinite(sketch))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=json_values)
def test_arbitrary_json_is_rejected_cleanly(data):
    try:
        RecursiveSketcher(8, random_state=0).fit_transform([data])
    except (ValueError, TypeError):
        return
    # Only a well-formed record may get through.
    ActivationRecord.from_dict(data)


def test_big_ints_are_real_attributes_and_deep_slots_are_fine_up_to_32():
    record = ActivationRecord([
        {"id": 0, "module": "a", "attributes": [10**30, 1], "slot": _nested(32)}])
    assert record.attributes[0].tolist() == [1e30, 1.0]
    assert record.module_dims == {"a": 2}


def test_module_names_with_a_slash_would_collide_in_feature_names():
    # "a" consuming "b" has the path a/b, as would a module named "a/b".
    objects = [{"id": 0, "module": "a", "attributes": [1.0], "inputs": [1]},
               {"id": 1, "module": "b", "attributes": [1.0]},
               {"id": 2, "module": "a/b", "attributes": [1.0]}]
    with pytest.raises(ValueError, match=r"^record, object 2: field 'module' "
                                         r"must not contain '/'"):
        ActivationRecord(objects)
