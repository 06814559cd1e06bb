import numpy as np
import pytest

from sksketch import ActivationRecord

MODULE_DIMS = {"edge": 2, "part": 3, "cat": 4, "dog": 1, "out": 3, "flag": 0}


def random_dag_record(rng, *, n_objects=12, edge_prob=0.3, zero_weight_prob=0.15,
                      explicit_slot_prob=0.5, modules=MODULE_DIMS, slot_pool=None):
    """A record with an arbitrary DAG: any object may consume any later one.

    Shared children (an object with several parents), several roots, zero
    weights, a module consuming its own module, and slots of every kind (ints,
    strings, tuples, defaults) all occur.
    """
    names = sorted(modules)
    slot_pool = slot_pool or [0, 1, 2, "left", "right", (0, 1), (1, 0)]
    objects = []
    for i in range(n_objects):
        module = names[rng.integers(len(names))]
        obj = {"id": f"o{i}" if i % 2 else i, "module": module,
               "attributes": rng.standard_normal(modules[module]).tolist(),
               "weight": 0.0 if rng.random() < zero_weight_prob
               else float(rng.uniform(0.1, 2.0)),
               "inputs": []}
        if rng.random() < explicit_slot_prob:
            obj["slot"] = slot_pool[rng.integers(len(slot_pool))]
        objects.append(obj)
    # Edges only from lower to higher index: acyclic by construction.
    for i in range(n_objects):
        for j in range(i + 1, n_objects):
            if rng.random() < edge_prob:
                objects[i]["inputs"].append(objects[j]["id"])
    order = rng.permutation(n_objects)  # ids need not come in DAG order
    return ActivationRecord([objects[k] for k in order])


@pytest.fixture
def dag_records():
    rng = np.random.default_rng(0)
    return [random_dag_record(rng, n_objects=int(rng.integers(1, 16)))
            for _ in range(25)]


def path_statistics(record):
    """Ground truth by walking every root-to-object path of a record.

    Returns ``(count, slot_sum)``: the weighted count of every module path,
    and the weighted attribute sum of every (module path, slot), where an
    object's weight along a walk is the product of the weights on it.
    """
    objects = {obj.id: obj for obj in record.objects}
    count, slot_sum = {}, {}

    def walk(obj, prefix, weight):
        path, weight = prefix + (obj.module,), weight * obj.weight
        count[path] = count.get(path, 0.0) + weight
        key = (path, obj.slot)
        slot_sum[key] = slot_sum.get(key, 0.0) + weight * obj.attributes
        for child in obj.inputs:
            walk(objects[child], path, weight)

    for root in record.roots:
        walk(objects[root], (), 1.0)
    return count, slot_sum


def path_sums(slot_sum):
    """Weighted attribute sum of every path, over its slots."""
    sums = {}
    for (path, _), value in slot_sum.items():
        sums[path] = sums.get(path, 0.0) + value
    return sums


@pytest.fixture(scope="session")
def tree_batch():
    """200 records of a layered network (trees with shared children)."""
    from sksketch import RecordBatch, make_activation_records

    records, _ = make_activation_records(200, n_modules=9, depth=3, fan_in=3,
                                         random_state=0)
    return RecordBatch.from_records(records)
