import numpy as np
import pytest

from sksketch import make_activation_records


def test_network_structure_and_labels():
    records, labels, network = make_activation_records(
        60, n_modules=8, depth=3, fan_in=2, attribute_dim=[1, 2, 3, 4, 5, 6, 7, 8],
        n_classes=4, random_state=0, return_network=True)
    assert [len(layer) for layer in network.layers] == [2, 3, 3]
    assert sorted(network.module_dims.values()) == list(range(1, 9))
    assert labels.shape == (60,) and set(labels) <= set(range(4))
    # every module of a lower layer is consumed by some module above it
    consumed = {c for _, c in network.edges}
    assert consumed == set(network.layers[1] + network.layers[2])
    allowed = set(network.edges)
    for record, label in zip(records, labels, strict=False):
        roots = {record.modules[record.ids.index(r)] for r in record.roots}
        assert roots <= set(network.class_roots[label])
        modules = dict(zip(record.ids, record.modules, strict=False))
        for obj in record.objects:
            for child in obj.inputs:
                assert (obj.module, modules[child]) in allowed
    paths = network.paths()
    assert all(len(p) <= 3 for p in paths) and ("L0M0",) in paths


def test_chain_records():
    records, _, network = make_activation_records(
        50, n_modules=6, depth=3, n_roots=1, n_children=1, branching="one",
        shared_fraction=0.0, random_state=1, return_network=True)
    leaf_paths = set(p for p in network.paths() if len(p) == 3)
    for record in records:
        assert record.n_objects == 3 and len(record.roots) == 1
        chain = []
        obj = record.objects[record.ids.index(record.roots[0])]
        while True:
            chain.append(obj.module)
            if not obj.inputs:
                break
            obj = record.objects[record.ids.index(obj.inputs[0])]
        assert tuple(chain) in leaf_paths


def test_reproducible():
    a, la = make_activation_records(10, random_state=3, weights="random")
    b, lb = make_activation_records(10, random_state=3, weights="random")
    assert a == b and np.array_equal(la, lb)


@pytest.mark.parametrize("params, match", [
    ({"n_modules": 2, "depth": 3}, "must be >= depth"),
    ({"n_roots": (2, 1)}, "n_roots"),
    ({"n_roots": 0}, "n_roots"),
    ({"branching": "some"}, "branching"),
])
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        make_activation_records(5, **params)
