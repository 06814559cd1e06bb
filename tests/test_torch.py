import subprocess
import sys

import numpy as np
import pytest

from sksketch import (
    RecordBatch,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    suggest_sketch_dim,
)

from .conftest import path_statistics

torch = pytest.importorskip("torch")
nn = torch.nn

from sksketch.torch import ActivationRecorder, receptive_fields  # noqa: E402


def _tiny_cnn():
    """conv1 (2x2, 2 channels) -> ReLU -> MaxPool(2, stride 1) -> conv2 (1x1)
    -> Flatten -> fc, with hand-set weights."""
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 2, 2, bias=False))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.MaxPool2d(2, stride=1))
    model.add_module("conv2", nn.Conv2d(2, 1, 1, bias=False))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model.conv1.weight[0, 0] = 1.0                       # the 2x2 patch sum
        model.conv1.weight[1, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        model.conv2.weight[0, :, 0, 0] = torch.tensor([1.0, -2.0])
        model.fc.weight[:] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 1.0, 0]])
    return model.eval()


def _by_key(record):
    """{(module, slot): object} and the edges as ((module, slot), (module, slot))."""
    objects = {obj.id: obj for obj in record.objects}
    key = {i: (o.module, o.slot) for i, o in objects.items()}
    edges = {(key[o.id], key[c]) for o in record.objects for c in o.inputs}
    return {key[i]: o for i, o in objects.items()}, edges


def test_tiny_cnn_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.permutation(32).reshape(2, 1, 4, 4).astype(np.float64)
    recorder = ActivationRecorder(_tiny_cnn(), ["conv1", "conv2", "fc"],
                                  top_k={"conv1": 4})
    batch = recorder.record(torch.tensor(x, dtype=torch.float32))
    assert batch.n_records == 2
    assert batch.module_dims == {"conv1": 2, "conv2": 1, "fc": 2}
    # conv2 reads pool positions (a, b), which read conv1's 2x2 windows.
    assert recorder.fields_ == [((1, 0, 1), (1, 0, 1)), "all"]
    for n, record in enumerate(batch.to_records()):
        img = x[n, 0]
        conv1 = np.zeros((2, 3, 3))
        for i in range(3):
            for j in range(3):
                conv1[0, i, j] = img[i:i + 2, j:j + 2].sum()
                conv1[1, i, j] = img[i, j]
        norm1 = np.sqrt((conv1 ** 2).sum(axis=0)).ravel()
        ranked = np.sort(norm1)[::-1]
        assert ranked[3] > ranked[4]  # no tie at the top-4 boundary
        kept1 = sorted(np.argsort(-norm1)[:4].tolist())
        pooled = np.zeros((2, 2, 2))
        for a in range(2):
            for b in range(2):
                pooled[:, a, b] = np.maximum(conv1, 0)[:, a:a + 2, b:b + 2].max(
                    axis=(1, 2))
        conv2 = pooled[0] - 2 * pooled[1]
        fc = np.array([conv2[0, 0], conv2[0, 1] + conv2[1, 0]])

        objects, edges = _by_key(record)
        expected = {("conv1", p): conv1[:, p // 3, p % 3] for p in kept1}
        expected |= {("conv2", p): conv2.ravel()[p:p + 1] for p in range(4)}
        expected[("fc", 0)] = fc
        assert set(objects) == set(expected)
        for key, attributes in expected.items():
            np.testing.assert_allclose(objects[key].attributes, attributes,
                                       rtol=1e-6, err_msg=str(key))
            np.testing.assert_allclose(objects[key].weight,
                                       np.linalg.norm(attributes), rtol=1e-6)
        expected_edges = {(("fc", 0), ("conv2", p)) for p in range(4)}
        for a in range(2):
            for b in range(2):
                expected_edges |= {(("conv2", 2 * a + b), ("conv1", p))
                                   for p in kept1
                                   if a <= p // 3 <= a + 1 and b <= p % 3 <= b + 1}
        assert edges == expected_edges
        assert record.roots == (objects[("fc", 0)].id,)


def test_threshold_weight_one_and_callable_weight():
    x = torch.arange(32, dtype=torch.float32).reshape(2, 1, 4, 4) / 10
    model = _tiny_cnn()
    batch = ActivationRecorder(model, ["conv1", "fc"], threshold=2.0,
                               weight="one").record(x)
    conv1 = model.conv1(x).detach().numpy()
    norms = np.sqrt((conv1 ** 2).sum(axis=1)).reshape(2, -1)
    assert batch.n_objects == (norms > 2.0).sum() + 2
    assert np.all(batch._weight == 1.0)
    batch = ActivationRecorder(
        model, ["conv1", "fc"],
        weight=lambda layer, a: np.abs(a[:, 0]) + (layer == "fc")).record(x)
    record = batch.to_records()[0]
    for obj in record.objects:
        assert obj.weight == pytest.approx(abs(obj.attributes[0])
                                           + (obj.module == "fc"), rel=1e-6)
    with pytest.raises(ValueError, match="layer 'conv1', record 0: field 'weight'"):
        ActivationRecorder(model, ["conv1"],
                           weight=lambda layer, a: -np.ones(len(a))).record(x)


def _demo_like_cnn():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 4, 3, padding=1))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(4, 3, 3, padding=1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(3 * 16, 5))
    return model.eval()


@pytest.mark.parametrize("options", [
    {"top_k": {"conv1": 5, "conv2": 3}}, {}, {"threshold": 0.3},
    {"top_k": 4, "threshold": 0.2, "weight": "one", "dtype": np.float32}])
def test_recorded_batch_is_the_one_the_validating_constructor_builds(options):
    # The recorder skips RecordBatch's checks; given the same arrays, the
    # checking constructor must build the very same batch.
    batch = ActivationRecorder(_demo_like_cnn(), ["conv1", "conv2", "fc"],
                               **options).record(torch.randn(7, 1, 8, 8))
    names = np.asarray(batch._module_names)[batch._module_codes]
    checked = RecordBatch(
        module=names, attributes=dict(zip(batch._module_names, batch._attributes)),
        record=batch._record, n_records=batch.n_records, weight=batch._weight,
        slot=np.asarray(batch._slot_keys, np.intp)[batch._slot_codes],
        edges=np.stack((batch._parent, batch._child), axis=1), dtype=batch.dtype)
    _same_batch(checked, batch)


@pytest.mark.parametrize("variant", ["float32", "channels_last", "bfloat16"])
def test_attributes_are_the_outputs_at_the_kept_positions(variant):
    # Gathered from the output's NumPy view (float32, whatever its memory
    # layout) or from its conversion (bfloat16, which NumPy lacks), each
    # kept position's channel vector, converted exactly.
    model = _demo_like_cnn()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    elif variant == "bfloat16":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    layers = ["conv1", "conv2", "fc"]
    outputs = {}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda module, inputs, output, name=name: outputs.update({name: output}))
        for name in layers]
    batch = ActivationRecorder(model, layers, top_k=3).record(x)
    for hook in hooks:
        hook.remove()
    slots = np.asarray(batch._slot_keys)[batch._slot_codes]
    for code, name in enumerate(batch._module_names):
        members = np.flatnonzero(batch._module_codes == code)
        out = outputs[name].to(torch.float64).reshape(6, outputs[name].shape[1], -1)
        expected = out[batch._record[members], :, slots[members]].numpy()
        assert members.size and np.array_equal(
            batch._attributes[code][batch._rows[members]], expected), name


def test_a_layer_keeping_no_object_and_non_finite_activations():
    model = _demo_like_cnn()
    batch = ActivationRecorder(model, ["conv1", "conv2", "fc"],
                               threshold=1e6).record(torch.randn(3, 1, 8, 8))
    assert batch.n_objects == 0 and batch.n_records == 3
    assert batch.module_dims == {"conv1": 4, "conv2": 3, "fc": 5}
    S = RecursiveSketcher(16, random_state=0).fit_transform(batch)
    assert S.shape == (3, 16) and not S.any()
    x = torch.randn(3, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="record 1, object .*: field 'attributes' "
                                         "holds non-finite values"):
        ActivationRecorder(model, ["conv1", "fc"]).record(x)


def test_recorder_leaves_the_model_as_it_was():
    model = _tiny_cnn().train()
    x = torch.ones(1, 1, 4, 4, requires_grad=True)
    recorder = ActivationRecorder(model, ["conv1", "fc"])
    batch = recorder.record(x)
    assert model.training  # mode untouched
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    assert batch._attributes[0].dtype == np.float64
    with recorder:
        assert len(model.conv1._forward_hooks) == 1
        batches = list(recorder.iter_batches([(x, 0), (x, 1)]))
    assert [b.n_records for b in batches] == [1, 1]
    assert not model.conv1._forward_hooks


def test_bad_arguments_name_the_layer():
    model = _tiny_cnn()
    with pytest.raises(ValueError, match="layer 'conv9' is not a submodule"):
        ActivationRecorder(model, ["conv1", "conv9"])
    with pytest.raises(ValueError, match="'top_k' for layer 'conv1'"):
        ActivationRecorder(model, ["conv1"], top_k={"conv1": 0})
    with pytest.raises(ValueError, match=r"'top_k' names layers \['pool'\]"):
        ActivationRecorder(model, ["conv1"], top_k={"pool": 2})
    with pytest.raises(ValueError, match="'weight' must be"):
        ActivationRecorder(model, ["conv1"], weight="max")
    with pytest.raises(TypeError, match="'model' must be a torch.nn.Module"):
        ActivationRecorder(lambda x: x, ["conv1"])


def test_underivable_layer_raises_unless_wiring_is_given():
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 2, 3, padding=1))
    model.add_module("up", nn.Upsample(scale_factor=2))
    model.add_module("conv2", nn.Conv2d(2, 2, 3, padding=1))
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="receptive field of layer 'up'"):
        ActivationRecorder(model, ["conv1", "conv2"]).record(x)
    # Upsampling by 2 then a 3x3 conv: output o reads conv1 positions
    # (o - 1) // 2 .. (o + 1) // 2, inside [o/2 - 1, o/2 + 1] -- as a field
    # in the previous layer's positions, stride 1/2 is not an integer, so
    # the user says "all" instead.
    recorder = ActivationRecorder(model, ["conv1", "conv2"],
                                  wiring=lambda layer, previous: "all")
    batch = recorder.record(x)
    assert batch.n_objects == 2 * (16 + 64)
    assert batch._parent.size == 2 * 64 * 16


def _residual_net(relu=True):
    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
            self.act = nn.ReLU() if relu else nn.Identity()
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
            self.down = (nn.Conv2d(c_in, c_out, 1, stride) if stride > 1
                         else nn.Identity())

        def forward(self, x):
            return self.act(self.conv2(self.act(self.conv1(x))) + self.down(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.layer1 = Block(4, 4, 1)
            self.layer2 = Block(4, 6, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(0)
    return Net().eval()


def _support(model, previous, layer, x, position):
    """Positions of ``previous``'s output that ``layer``'s output at
    ``position`` depends on, by the gradient."""
    modules = dict(model.named_modules())
    saved = {}

    def keep(module, inputs, output):
        output = output.detach().requires_grad_()
        saved["previous"] = output
        return output

    def grab(module, inputs, output):
        saved["layer"] = output

    handles = [modules[previous].register_forward_hook(keep),
               modules[layer].register_forward_hook(grab)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    out = saved["layer"]
    out[(0, slice(None)) + position].sum().backward()
    grad = saved["previous"].grad[0].abs().sum(dim=0)
    return np.argwhere(grad.numpy() > 0)


@pytest.mark.parametrize("relu", [False, True])
def test_receptive_fields_of_a_residual_net_match_the_gradient(relu):
    model = _residual_net(relu)
    with torch.no_grad():  # positive weights: no cancellation in the gradient
        for p in model.parameters():
            p.abs_()
    x = torch.rand(1, 3, 8, 8)
    layers = ["stem", "layer1", "layer2", "fc"]
    fields = receptive_fields(model, layers)
    # layer1: two 3x3 convs (+ identity skip); layer2: stride 2, the 1x1
    # downsample inside the hull of the 3x3 path.
    assert fields == [((1, -2, 2), (1, -2, 2)), ((2, -3, 3), (2, -3, 3)), "all"]
    sizes = {"stem": 8, "layer1": 8, "layer2": 4}
    for (previous, layer), field in zip(zip(layers, layers[1:-1]), fields):
        for o in [(0, 0), (1, 2), (sizes[layer] - 1, sizes[layer] - 1)]:
            support = _support(model, previous, layer, x, o)
            lo = [max(s * c + f, 0) for c, (s, f, _) in zip(o, field)]
            hi = [min(s * c + t, sizes[previous] - 1)
                  for c, (s, _, t) in zip(o, field)]
            assert support.size
            assert (support >= lo).all() and (support <= hi).all()
            if not relu:  # linear and positive: the support fills the box
                np.testing.assert_array_equal(support.min(0), lo)
                np.testing.assert_array_equal(support.max(0), hi)


def test_residual_net_records_respect_receptive_fields():
    model = _residual_net()
    recorder = ActivationRecorder(model, ["stem", "layer1", "layer2", "fc"],
                                  top_k=5)
    batch = recorder.record(torch.randn(3, 3, 8, 8))
    _check_edges_in_fields(batch, recorder)
    S = RecursiveSketcher(64, random_state=0).fit_transform(batch)
    assert S.shape == (3, 64) and np.isfinite(S).all()


def _check_edges_in_fields(batch, recorder):
    names = batch._module_names
    module = np.array([names[c] for c in batch._module_codes])
    slot = np.array([batch._slot_keys[c] for c in batch._slot_codes])
    assert (batch._record[batch._parent] == batch._record[batch._child]).all()
    for previous, layer, field in zip(recorder.layers, recorder.layers[1:],
                                      recorder.fields_):
        mask = module[batch._parent] == layer
        assert (module[batch._child[mask]] == previous).all()
        parents = batch._parent[mask]
        if field == "all":
            # every previous object of the record
            for p in np.unique(parents):
                same = ((batch._record == batch._record[p])
                        & (module == previous)).sum()
                assert (parents == p).sum() == same
            continue
        shape = recorder.shapes_[layer][1:]
        prev_shape = recorder.shapes_[previous][1:]
        o = np.unravel_index(slot[parents], shape)
        c = np.unravel_index(slot[batch._child[mask]], prev_shape)
        for dim, (s, first, last) in enumerate(field):
            assert ((c[dim] >= s * o[dim] + first)
                    & (c[dim] <= s * o[dim] + last)).all()


def test_torchvision_resnet18_records_and_sketches():
    try:
        import torchvision
    except Exception as exc:  # an ImportError, or a build for another torch
        pytest.skip(f"torchvision does not import: {exc}")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    layers = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    recorder = ActivationRecorder(model, layers, top_k=6)
    batch = recorder.record(torch.randn(2, 3, 64, 64))
    assert batch.module_dims == {"conv1": 64, "fc": 1000, "layer1": 64,
                                 "layer2": 128, "layer3": 256, "layer4": 512}
    _check_edges_in_fields(batch, recorder)
    S = RecursiveSketcher(128, random_state=0).fit_transform(batch)
    assert S.shape == (2, 128) and np.isfinite(S).all()


def test_top_k_counts_decode_exactly_with_lstsq():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 3, 3, padding=1))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(3, 2, 3, padding=1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(2 * 9, 2))
    model.eval()
    recorder = ActivationRecorder(model, ["conv1", "conv2", "fc"],
                                  top_k={"conv1": 4, "conv2": 2}, weight="one")
    batch = recorder.record(torch.randn(30, 1, 6, 6))
    d = suggest_sketch_dim(batch)
    recoverer = SketchAttributeRecoverer(
        RecursiveSketcher(d, random_state=0), method="lstsq").fit(batch)
    S = recoverer.sketcher_.transform(batch)
    truth = [path_statistics(r)[0] for r in batch.to_records()]
    for module in ["fc", "conv2", "conv1"]:
        # Over every path ending in the module: conv1 objects outside every
        # kept conv2 position's field are roots of their own.
        decoded = recoverer.statistics(S, module).count
        expected = np.array([sum(c for p, c in t.items() if p[-1] == module)
                             for t in truth])
        np.testing.assert_allclose(decoded, expected, atol=1e-6)
    assert any(("conv1",) in t for t in truth)
    # The top-k objects directly under the root: exactly k per record.
    np.testing.assert_allclose(recoverer.statistics(S, "conv2").count, 2,
                               atol=1e-6)


def test_import_sksketch_does_not_import_torch():
    code = ("import sys, sksketch, sksketch.torch; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"


def test_strongest_positions_are_the_index_partitions_even_with_ties():
    # The values' partition finds the k strongest; rows tied at the k-th
    # strength (zeros after a ReLU, rounded values) and NaN rows take the
    # index partition, so the recorder keeps the positions it always kept.
    from sksketch.torch import _strongest

    rng = np.random.default_rng(0)
    n_tied = 0
    for trial in range(60):
        n, p = int(rng.integers(1, 30)), int(rng.integers(2, 70))
        k = int(rng.integers(1, p))
        strength = rng.random((n, p))
        if trial % 3 == 0:
            strength[rng.random((n, p)) < 0.7] = 0.0
        elif trial % 3 == 1:
            strength = np.round(strength * 3) / 3
        if trial % 5 == 0:
            strength[0, 0] = np.nan
        kth = -np.sort(-strength, axis=1)[:, k - 1:k]
        n_tied += int(((strength == kth).sum(axis=1) > 1).sum())
        expected = np.sort(np.argpartition(-strength, k - 1, axis=1)[:, :k], axis=1)
        assert np.array_equal(_strongest(strength, k), expected.reshape(-1))
    assert n_tied > 50  # the ties were there


def _same_batch(a, b):
    assert set(vars(a)) == set(vars(b))
    for name, value in vars(a).items():
        other = getattr(b, name)
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and np.array_equal(value, other), name
        elif name == "_attributes":
            assert all(x.dtype == y.dtype and np.array_equal(x, y)
                       for x, y in zip(value, other, strict=True))
        else:
            assert value == other, name


def test_one_recorder_follows_inputs_of_changing_sizes():
    # Window cells are kept per layer geometry: a recorder seeing images of
    # another size must wire them as a fresh recorder does with none kept.
    from sksketch.torch import _window_cells

    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 4, 3, padding=1))
    model.add_module("pool", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(4, 3, 3, padding=1))
    model.add_module("gap", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(3, 5))
    model.eval()
    layers = ["conv1", "conv2", "fc"]
    recorder = ActivationRecorder(model, layers, top_k=4)
    generator = torch.Generator().manual_seed(0)
    n_edges = set()
    for size in (8, 12, 8, 6):
        x = torch.randn(5, 1, size, size, generator=generator)
        batch = recorder.record(x)
        _window_cells.cache_clear()
        _same_batch(batch, ActivationRecorder(model, layers, top_k=4).record(x))
        n_edges.add(batch._parent.size)
    assert len(n_edges) > 1  # the sizes wired differently


@pytest.mark.parametrize("shape", [(37, 5, 9), (11, 300, 1), (3, 2, 700)])
def test_norms_of_a_float32_output_are_those_of_its_float64_copy(shape,
                                                                 monkeypatch):
    # Converted a few records at a time (here 1 to 40 per chunk), the sums
    # of squares must be the bits of the same sums over a converted copy.
    from sksketch import torch as recorder_module

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 10, shape)).astype(np.float32)
    copy = x.astype(np.float64)
    expected = np.einsum("ncp,ncp->np", copy, copy)
    monkeypatch.setattr(recorder_module, "_NORM_CHUNK_VALUES", 200)
    got = recorder_module._squared_norms(x, np.dtype(np.float64))
    assert got.dtype == np.float64 and np.array_equal(got, expected)


def test_outputs_are_read_before_a_later_in_place_operation():
    # An in-place ReLU after conv1 rewrites conv1's output tensor: the
    # recorder must keep what conv1 gave (negative values included).
    model = _demo_like_cnn()
    model.relu = nn.ReLU(inplace=True)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = ActivationRecorder(model, ["conv1", "conv2", "fc"]).record(x)
    with torch.no_grad():
        conv1 = model.conv1(x).to(torch.float64).reshape(4, 4, -1).numpy()
    code = batch._module_names.index("conv1")
    members = np.flatnonzero(batch._module_codes == code)
    slots = np.asarray(batch._slot_keys)[batch._slot_codes[members]]
    attributes = batch._attributes[code][batch._rows[members]]
    assert (attributes < 0).any()
    assert np.array_equal(attributes, conv1[batch._record[members], :, slots])
