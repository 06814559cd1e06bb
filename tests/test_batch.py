import numpy as np
import pytest

from sksketch import RecordBatch, RecursiveSketcher

from .conftest import random_dag_record


def _direct_batch(records):
    """Build the same batch from arrays, as a recorder would."""
    module, record_of, weight, slot, ids, edges, roots = [], [], [], [], [], [], []
    attributes = {}
    offset = 0
    for r, record in enumerate(records):
        position = {obj_id: offset + i for i, obj_id in enumerate(record.ids)}
        for obj in record.objects:
            module.append(obj.module)
            record_of.append(r)
            weight.append(obj.weight)
            slot.append(obj.slot)
            ids.append(obj.id)
            attributes.setdefault(obj.module, []).append(obj.attributes)
            edges += [(position[obj.id], position[c]) for c in obj.inputs]
        roots += [position[root] for root in record.roots]
        offset += record.n_objects
    attributes = {m: np.array(rows).reshape(len(rows), -1)
                  for m, rows in attributes.items()}
    return RecordBatch(module=module, attributes=attributes, record=record_of,
                       n_records=len(records), weight=weight, slot=slot,
                       edges=np.array(edges).reshape(-1, 2), roots=roots,
                       object_ids=ids)


def test_direct_construction_matches_from_records(dag_records):
    sketcher = RecursiveSketcher(32, random_state=0).fit(dag_records)
    direct = _direct_batch(dag_records)
    assert direct.n_records == len(dag_records)
    assert direct.module_dims == RecordBatch.from_records(dag_records).module_dims
    np.testing.assert_allclose(sketcher.transform(direct),
                               sketcher.transform(dag_records), rtol=0, atol=1e-12)


def test_direct_construction_default_slots_match_records():
    # No slots given: the defaults follow the same rule as ActivationRecord's.
    records = [random_dag_record(np.random.default_rng(s), explicit_slot_prob=0)
               for s in range(5)]
    direct = _direct_batch(records)
    defaulted = RecordBatch(module=[m for r in records for m in r.modules],
                            attributes={m: direct._attributes[i] for i, m in
                                        enumerate(direct._module_names)},
                            record=direct._record, n_records=len(records),
                            weight=direct._weight,
                            edges=np.stack((direct._parent, direct._child), 1),
                            roots=direct._roots)
    expected = [s for r in records for s in r.slots]
    got = [defaulted._slot_keys[c] for c in defaulted._slot_codes]
    assert got == expected


def test_take_and_indexing(dag_records):
    batch = RecordBatch.from_records(dag_records)
    sketcher = RecursiveSketcher(32, random_state=0).fit(batch)
    whole = sketcher.transform(batch)
    picks = [3, 0, 3, 7]  # repeats, as in a bootstrap
    np.testing.assert_allclose(sketcher.transform(batch.take(picks)), whole[picks],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(sketcher.transform(batch[2:5]), whole[2:5], rtol=0,
                               atol=1e-12)
    assert batch[4] == dag_records[4]
    assert len(batch.take(np.zeros(len(batch), bool))) == 0
    with pytest.raises(IndexError):
        batch.take([len(batch)])


def test_to_records_round_trip(dag_records):
    assert RecordBatch.from_records(dag_records).to_records() == dag_records


def _arrays(**overrides):
    arrays = dict(module=["a", "a", "b"], attributes={"a": [[1.0], [2.0]],
                                                      "b": [[0.0, 1.0]]},
                  record=[0, 0, 1], edges=[[0, 1]], object_ids=["x", "y", "z"])
    arrays.update(overrides)
    return arrays


@pytest.mark.parametrize("overrides, error, match", [
    ({"edges": [[0, 1], [1, 0]]}, ValueError, "record 0, object '(x|y)': field "
                                              "'inputs' closes a cycle"),
    ({"edges": [[0, 2]]}, ValueError, "record 0, object 'x': field 'inputs' names "
                                      "an object of another record"),
    ({"edges": [[0, 1], [0, 1]]}, ValueError, "lists an edge twice"),
    ({"edges": [[0, 5]]}, ValueError, "'edges' must index objects"),
    ({"weight": [1.0, -1.0, 1.0]}, ValueError, "record 0, object 'y': field "
                                               "'weight' must be finite"),
    ({"attributes": {"a": [[1.0], [np.nan]], "b": [[0.0, 1.0]]}}, ValueError,
     "record 0, object 'y': field 'attributes' holds non-finite"),
    ({"attributes": {"a": [[1.0]], "b": [[0.0, 1.0]]}}, ValueError,
     "module 'a' has 2 objects but 1 attribute rows"),
    ({"attributes": {"a": [[1.0], [2.0]]}}, ValueError, "lacks module 'b'"),
    ({"attributes": {"a": [["u"], ["v"]], "b": [[0.0, 1.0]]}}, TypeError,
     "must be a 2-D array of real numbers"),
    ({"record": [0, 0, 3], "n_records": 2}, ValueError, "'record' must lie in"),
    ({"record": [0.0, 0.0, 1.0]}, TypeError, "'record' must hold integers"),
    ({"slot": [0, 1.5, 0]}, TypeError, "record 0, object 'y': field 'slot'"),
    ({"module": ["a", None, "b"]}, TypeError, "record 0, object 'y': field "
                                              "'module' must be a str; got NoneType"),
    ({"module": ["a", "", "b"]}, ValueError, "record 0, object 'y': field 'module' "
                                             "is empty"),
    ({"module": ["a", "a", "b/c"], "attributes": {"a": [[1.0], [2.0]],
                                                  "b/c": [[0.0]]}},
     ValueError, "record 1, object 'z': field 'module' must not contain '/'"),
    ({"n_records": 2.7}, TypeError, "'n_records' must be an int; got float 2.7"),
    ({"n_records": np.True_}, TypeError, "'n_records' must be an int"),
    ({"n_records": -1}, ValueError, "'n_records' must be >= 0; got -1"),
    ({"object_ids": ["x", "y"]}, ValueError, "'object_ids' must have length 3; "
                                             "got 2"),
    # The wrong length is reported, not an IndexError while naming object 2.
    ({"object_ids": ["x"], "weight": [1.0, 1.0, -1.0]}, ValueError,
     "'object_ids' must have length 3"),
])
def test_direct_construction_validates(overrides, error, match):
    with pytest.raises(error, match=match):
        RecordBatch(**_arrays(**overrides))


def test_adjacency_is_the_inputs(dag_records):
    batch = RecordBatch.from_records(dag_records[:3])
    adjacency = batch.adjacency.toarray()
    offset = 0
    for record in dag_records[:3]:
        position = {obj_id: offset + i for i, obj_id in enumerate(record.ids)}
        for obj in record.objects:
            expected = sorted(position[c] for c in obj.inputs)
            assert np.flatnonzero(adjacency[position[obj.id]]).tolist() == expected
        offset += record.n_objects


def test_empty_batch_refuses_negative_n_records():
    with pytest.raises(ValueError, match="'n_records' must be >= 0"):
        RecordBatch(module=[], attributes={}, n_records=-1)
    assert len(RecordBatch(module=[], attributes={}, n_records=2)) == 2


def test_slash_module_cannot_collide_with_a_path():
    # Modules a, b (a consumes b) and a/b would both give "a/b:count".
    with pytest.raises(ValueError, match=r"record 0, object 2: field 'module' "
                                         r"must not contain '/'"):
        RecordBatch(module=["a", "b", "a/b"], edges=[[0, 1]],
                    attributes={"a": [[1.0]], "b": [[1.0]], "a/b": [[1.0]]})


def test_take_refuses_float_indices_and_masks_of_another_length(dag_records):
    batch = RecordBatch.from_records(dag_records[:4])
    with pytest.raises(TypeError, match="indices must be integers or booleans; "
                                        "got dtype float64"):
        batch.take([1.7, 2.2])
    with pytest.raises(IndexError, match=r"boolean index of shape \(3,\) for 4"):
        batch.take([True, False, True])
    assert len(batch.take([])) == 0
    assert batch.take(np.array([True, False, True, False])).to_records() == [
        dag_records[0], dag_records[2]]


def test_integer_slot_array_matches_slot_list():
    # A recorder passes flat positions as an int array: the vectorized path
    # must give the same slots, hence the same sketches, as a list of ints.
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 5, size=6)
    arrays = dict(module=["a", "a", "b", "b", "b", "c"], record=[0, 0, 0, 1, 1, 1],
                  attributes={"a": rng.standard_normal((2, 2)),
                              "b": rng.standard_normal((3, 1)),
                              "c": rng.standard_normal((1, 3))},
                  edges=[[0, 2], [5, 3], [5, 4]])
    from_array = RecordBatch(slot=slots, **arrays)
    from_list = RecordBatch(slot=slots.tolist(), **arrays)
    assert [r.slots for r in from_array.to_records()] == [
        r.slots for r in from_list.to_records()]
    assert all(type(k) is int for k in from_array._slot_keys)
    sketcher = RecursiveSketcher(16, random_state=0).fit(from_list)
    # Slot codes may be numbered in another order: the same sums, up to the
    # last bits of their order.
    np.testing.assert_allclose(sketcher.transform(from_array),
                               sketcher.transform(from_list), rtol=1e-12)
    with pytest.raises(ValueError, match="'slot' must have length 6"):
        RecordBatch(slot=slots[:3], **arrays)
