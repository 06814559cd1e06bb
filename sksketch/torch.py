"""Module-activation records from PyTorch models (the ``sksketch[torch]`` extra).

:class:`ActivationRecorder` hooks the submodules a user names and turns what
they output for a batch of inputs into a :class:`~sksketch.RecordBatch`,
straight from the tensors: a convolutional output gives one object per
spatial position (its channel vector), a flat output one object, and each
object consumes the recorded objects of the previous recorded layer inside
its receptive field.

PyTorch is imported when a recorder is made, never by ``import sksketch``.
"""

import functools
import math
import numbers
import operator
from collections.abc import Mapping

import numpy as np

from ._batch import RecordBatch
from ._optional import import_optional

__all__ = ["ActivationRecorder", "receptive_fields"]


def _require_torch():
    import_optional("torch.fx", "torch", "sksketch.torch")
    return import_optional("torch", "torch", "sksketch.torch")


# -- receptive-field geometry ----------------------------------------------
# A field says which positions of the previous recorded layer's output an
# output position ``o`` depends on: per spatial dimension, the interval
# ``[stride * o + first, stride * o + last]``. ``_ALL`` means every position
# (after a flatten, a linear layer or a global pooling).
_ALL = "all"


class _Field:
    __slots__ = ("stride", "first", "last")

    def __init__(self, stride, first, last):
        self.stride, self.first, self.last = tuple(stride), tuple(first), tuple(last)

    @classmethod
    def identity(cls, ndim):
        return cls((1,) * ndim, (0,) * ndim, (0,) * ndim)

    @property
    def ndim(self):
        return len(self.stride)

    def window(self, kernel, stride, padding, dilation):
        """This field seen through a sliding window (conv or pooling)."""
        S, lo, hi = self.stride, self.first, self.last
        return _Field([S[i] * stride[i] for i in range(self.ndim)],
                      [lo[i] - S[i] * padding[i] for i in range(self.ndim)],
                      [S[i] * (dilation[i] * (kernel[i] - 1) - padding[i]) + hi[i]
                       for i in range(self.ndim)])

    def __repr__(self):
        return f"_Field(stride={self.stride}, first={self.first}, last={self.last})"


def _hull(fields, where):
    """The smallest field holding every field (a sum or concatenation)."""
    fields = [f for f in fields if f is not None]
    if not fields:
        return None
    if any(f is _ALL for f in fields):
        return _ALL
    strides = {f.stride for f in fields}
    if len(strides) > 1:
        raise ValueError(f"{where}: combines tensors whose positions have "
                         f"different strides {sorted(strides)}")
    ndim = fields[0].ndim
    return _Field(fields[0].stride,
                  [min(f.first[i] for f in fields) for i in range(ndim)],
                  [max(f.last[i] for f in fields) for i in range(ndim)])


def _ntuple(value, ndim):
    if isinstance(value, numbers.Integral):
        return (int(value),) * ndim
    value = tuple(int(v) for v in value)
    return value * ndim if len(value) == 1 else value


def _window_params(module, ndim):
    """(kernel, stride, padding, dilation) of a conv or pooling module."""
    kernel = _ntuple(module.kernel_size, ndim)
    stride = _ntuple(module.stride if module.stride is not None else kernel, ndim)
    dilation = _ntuple(getattr(module, "dilation", 1), ndim)
    padding = module.padding
    if padding == "valid":
        padding = (0,) * ndim
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return kernel, stride, _ntuple(padding, ndim), dilation


def _module_kinds():
    nn = _require_torch().nn
    window = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d,
              nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
    pointwise = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU,
                 nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
                 nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
                 nn.Hardswish, nn.Hardsigmoid, nn.PReLU, nn.Softplus,
                 nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                 nn.AlphaDropout, nn.Identity)
    adaptive = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
    flat = (nn.Flatten, nn.Linear)
    return window, pointwise, adaptive, flat


def _module_field(module, name, field, where):
    """The field of ``module``'s output, given the field of its input."""
    if field is None:
        return None
    window, pointwise, adaptive, flat = _module_kinds()
    if isinstance(module, pointwise):
        return field
    if isinstance(module, flat):
        return _ALL
    if isinstance(module, adaptive):
        size = module.output_size
        sizes = [size] if isinstance(size, numbers.Integral | type(None)) else size
        if all(s == 1 for s in sizes):
            return _ALL
    elif isinstance(module, window):
        if field is _ALL:
            return _ALL
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"{where}: layer {name!r} pads with "
                             f"{module.padding_mode!r}, which wraps the "
                             f"receptive field; pass wiring= a callable")
        return field.window(*_window_params(module, field.ndim))
    elif _is_container(module):
        # A container or a user module: follow the graph of its forward.
        return _graph_field(module, name, field, where)
    raise ValueError(f"{where}: cannot derive the receptive field of layer "
                     f"{name!r} ({type(module).__name__}); pass wiring= a "
                     f"callable")


def _is_container(module):
    """Whether ``module`` is to be traced into rather than known as a leaf."""
    nn = _require_torch().nn
    return (isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict)
            or not type(module).__module__.startswith("torch.nn.modules"))


# Functions and methods that act position by position (or keep positions).
_POINTWISE_NAMES = {
    "add", "iadd", "sub", "isub", "mul", "imul", "truediv", "itruediv", "neg",
    "relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu",
    "silu", "mish", "sigmoid", "tanh", "hardtanh", "hardswish", "hardsigmoid",
    "softplus", "dropout", "dropout1d", "dropout2d", "dropout3d", "batch_norm",
    "contiguous", "clone", "detach", "to", "float", "double", "half", "type_as",
    "abs", "clamp", "clamp_min", "clamp_max", "pow", "sqrt", "exp",
}
# Outputs that are not tensors of positions: no field flows through them.
_SHAPE_NAMES = {"size", "dim", "shape", "getattr", "numel"}
# Reshapes and reductions that mix all positions.
_GLOBAL_NAMES = {"flatten", "view", "reshape", "mean", "sum", "amax", "max",
                 "linear", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                 "adaptive_avg_pool3d", "adaptive_max_pool2d", "squeeze"}


def _target_name(node):
    target = node.target
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target)).lstrip("_")


def _trace(module, leaves=()):
    """``torch.fx`` graph of ``module``, the names in ``leaves`` kept whole."""
    torch = _require_torch()
    leaves = frozenset(leaves)

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualified_name):
            return qualified_name in leaves or (
                not _is_container(m) and super().is_leaf_module(m, qualified_name))

    tracer = Tracer()
    try:
        graph = tracer.trace(module)
    except Exception as exc:
        raise ValueError(
            f"cannot trace {type(module).__name__} with torch.fx to derive "
            f"receptive fields ({type(exc).__name__}: {exc}); pass wiring= a "
            f"callable") from None
    return graph


def _propagate(graph, root, start_node, start_field, stop_node, where):
    """Fields of every node from ``start_node`` (given its field) down."""
    fields = {start_node: start_field}
    for node in graph.nodes:
        if node in fields:
            continue
        inputs = [fields.get(a) for a in node.all_input_nodes]
        if all(f is None for f in inputs):
            continue
        here = f"{where}, at {node.op} {_target_name(node)!r}"
        if node.op == "call_module":
            sub = root.get_submodule(node.target)
            fields[node] = _module_field(sub, node.target, _hull(inputs, here),
                                         where)
        elif node.op == "output":
            fields[node] = _hull(inputs, here)
        else:
            name = _target_name(node)
            if name in _SHAPE_NAMES:
                continue
            if name in _POINTWISE_NAMES or node.target in (operator.add,
                                                           operator.mul):
                fields[node] = _hull(inputs, here)
            elif name == "cat":
                fields[node] = _hull(inputs, here)
            elif name in _GLOBAL_NAMES:
                fields[node] = _ALL
            else:
                raise ValueError(f"{here}: cannot derive the receptive field "
                                 f"through {name!r}; pass wiring= a callable")
        if node is stop_node:
            break
    return fields


def _graph_field(module, name, field, where):
    """Field of a traced module's output, given the field of its input."""
    graph = _trace(module)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"{where}: layer {name!r} takes {len(placeholders)} "
                         f"inputs; pass wiring= a callable")
    output = next(n for n in graph.nodes if n.op == "output")
    return _propagate(graph, module, placeholders[0], field, None,
                      where).get(output)


def receptive_fields(model, layers, *, ndim=2):
    """Receptive field of each recorded layer in the previous one's positions.

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str
        Names of submodules, as in ``model.named_modules()``, in the order
        they run.
    ndim : int, default=2
        Number of spatial dimensions (2 for images).

    Returns
    -------
    fields : list
        For each layer after the first, ``"all"`` (it depends on every
        position of the previous layer) or a tuple of ``(stride, first,
        last)`` per spatial dimension: output position ``o`` depends on the
        previous layer's positions ``stride * o + first .. stride * o + last``.

    Examples
    --------
    >>> import torch
    >>> from sksketch.torch import receptive_fields
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 8, 3, padding=1),
    ...     torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10))
    >>> receptive_fields(model, ["0", "3", "5"])
    [((2, -2, 3), (2, -2, 3)), 'all']
    """
    graph = _trace(model, leaves=layers)
    by_target = {n.target: n for n in graph.nodes if n.op == "call_module"}
    result = []
    for previous, layer in zip(layers, layers[1:]):
        where = f"layer {layer!r} (previous recorded layer {previous!r})"
        for name in (previous, layer):
            if name not in by_target:
                raise ValueError(f"layer {name!r} is not called as a module in "
                                 f"{type(model).__name__}.forward; pass wiring= "
                                 f"a callable")
        start, stop = by_target[previous], by_target[layer]
        # The layer's own input field, then the layer itself.
        fields = _propagate(graph, model, start, _Field.identity(ndim), stop, where)
        field = fields.get(stop)
        if field is None:
            raise ValueError(f"{where}: layer {layer!r} does not consume the "
                             f"output of {previous!r}; list layers in the order "
                             f"they run")
        result.append(field if field is _ALL else
                      tuple(zip(field.stride, field.first, field.last)))
    return result


def _fix_ndim(field, ndim):
    """Fields are derived for 2 spatial dims; keep the ones the layer has."""
    if field == _ALL:
        return _ALL
    field = tuple(tuple(int(v) for v in dim) for dim in field)
    if len(field) < ndim:
        raise ValueError(f"the receptive field {field} has {len(field)} "
                         f"dimensions, the layer {ndim}")
    return field[:ndim]


# -- the recorder ----------------------------------------------------------
class ActivationRecorder:
    """Record module-activation records from a PyTorch model.

    Forward hooks on the named submodules collect their outputs for a batch
    of inputs (detached, under ``torch.no_grad()``, the model's train/eval
    mode left as it is) and turn them into a :class:`~sksketch.RecordBatch`,
    one record per input, built from arrays without a Python object per
    activation. Each output is read as its layer returns it (before a later
    in-place operation, such as ``ReLU(inplace=True)``, can change it) and
    not kept: the forward pass frees its memory as it would without hooks.

    - An output of shape ``(N, C, *spatial)`` (a convolution, a pooling)
      gives one object per spatial position: ``slot`` is the position's
      row-major flat index, the attributes are the ``C`` channel values there.
      ``top_k`` and ``threshold`` keep the strongest positions (the largest
      Euclidean norm of the channel vector): the detected objects.
    - An output of shape ``(N, F)`` (a linear layer) gives one object, slot
      0, whose inputs are all the recorded objects of the previous layer.
    - A position consumes the recorded objects of the previous recorded layer
      inside its receptive field, derived from the kernel, stride, padding and
      dilation of the layers between them (convolutions, pooling, batch
      normalization, activations, dropout, flatten, residual sums and
      concatenations), by tracing the model with ``torch.fx``.
    - The roots are the last layer's objects, and the objects that no object
      of the next recorded layer consumes (outside every kept position's
      receptive field): every recorded object enters the sketch.

    Parameters
    ----------
    model : torch.nn.Module
        The model; it is never modified (hooks are removed after use).
    layers : sequence of str
        Names of the submodules to record, as in ``model.named_modules()``,
        in the order they run. The first layer's objects are the leaves; the
        last layer's objects are the roots.
    top_k : int, dict of str to int, or None, default=None
        Keep at most this many positions per input: one int for every
        convolutional layer, or a dict by layer name (layers absent from it
        keep all). None keeps all.
    threshold : float, default=None
        Keep only positions whose channel-vector norm exceeds it.
    weight : {"norm", "one"} or callable, default="norm"
        Weight of each object: the norm of its channel vector, 1, or
        ``weight(layer, attributes)`` returning ``n_objects`` non-negative
        numbers for an ``(n_objects, C)`` array of one layer's attributes.
    wiring : "receptive_field" or callable, default="receptive_field"
        How positions consume the previous layer's objects. A callable,
        ``wiring(layer, previous)``, returns ``"all"`` or one
        ``(stride, first, last)`` per spatial dimension (position ``o``
        consumes positions ``stride * o + first .. stride * o + last``); use
        it for models that cannot be traced or whose layers have no derivable
        geometry.
    dtype : {np.float64, np.float32}, default=np.float64
        Floating type of the batch.

    Attributes
    ----------
    fields_ : list
        After the first recording: the receptive field of each layer after
        the first, in the previous layer's positions (see
        :func:`receptive_fields`).
    shapes_ : dict of str to tuple
        After the first recording: each layer's output shape, without the
        batch dimension.

    Examples
    --------
    >>> import torch
    >>> from sksketch import RecursiveSketcher
    >>> from sksketch.torch import ActivationRecorder
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 8, 3, padding=1),
    ...     torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10)).eval()
    >>> recorder = ActivationRecorder(model, ["0", "3", "5"], top_k=5)
    >>> batch = recorder.record(torch.randn(3, 1, 8, 8))
    >>> batch
    RecordBatch(n_records=3, n_objects=33, modules={'0': 4, '3': 8, '5': 10})
    >>> RecursiveSketcher(64, random_state=0).fit_transform(batch).shape
    (3, 64)

    As a context manager, the hooks stay on while it is open:

    >>> with ActivationRecorder(model, ["3", "5"]) as recorder:
    ...     batches = list(recorder.iter_batches([torch.randn(2, 1, 8, 8)] * 2))
    >>> [b.n_records for b in batches]
    [2, 2]
    """

    def __init__(self, model, layers, *, top_k=None, threshold=None,
                 weight="norm", wiring="receptive_field", dtype=np.float64):
        torch = _require_torch()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"ActivationRecorder: 'model' must be a "
                            f"torch.nn.Module; got {type(model).__name__}")
        if isinstance(layers, str) or not layers:
            raise TypeError("ActivationRecorder: 'layers' must be a non-empty "
                            "list of submodule names")
        layers = list(layers)
        modules = dict(model.named_modules())
        for name in layers:
            if not isinstance(name, str) or name not in modules:
                raise ValueError(f"ActivationRecorder: layer {name!r} is not a "
                                 f"submodule of {type(model).__name__} (names as "
                                 f"in model.named_modules())")
            if not name or "/" in name:
                raise ValueError(f"ActivationRecorder: layer {name!r} cannot "
                                 f"name a module (empty, or holds '/')")
        if len(set(layers)) != len(layers):
            raise ValueError(f"ActivationRecorder: 'layers' lists a layer "
                             f"twice: {layers}")
        self._top_k = {name: self._check_top_k(top_k, name) for name in layers}
        if isinstance(top_k, Mapping):
            unknown = sorted(set(top_k) - set(layers))
            if unknown:
                raise ValueError(f"ActivationRecorder: 'top_k' names layers "
                                 f"{unknown} that are not recorded")
        if threshold is not None and (not isinstance(threshold, numbers.Real)
                                      or not math.isfinite(threshold)):
            raise TypeError(f"ActivationRecorder: 'threshold' must be a finite "
                            f"number or None; got {threshold!r}")
        if not (callable(weight) or weight in ("norm", "one")):
            raise ValueError(f"ActivationRecorder: 'weight' must be 'norm', "
                             f"'one' or a callable; got {weight!r}")
        if not (callable(wiring) or wiring == "receptive_field"):
            raise ValueError(f"ActivationRecorder: 'wiring' must be "
                             f"'receptive_field' or a callable; got {wiring!r}")
        self.model, self.layers = model, layers
        self.top_k, self.threshold = top_k, threshold
        self.weight, self.wiring = weight, wiring
        self.dtype = np.dtype(dtype)
        self._handles = []
        self._outputs = {}

    @staticmethod
    def _check_top_k(top_k, name):
        k = top_k.get(name) if isinstance(top_k, Mapping) else top_k
        if k is None:
            return None
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"ActivationRecorder: 'top_k' for layer {name!r} "
                             f"must be an int >= 1 or None; got {k!r}")
        return int(k)

    # -- hooks ---------------------------------------------------------------
    def __enter__(self):
        self._attach()
        return self

    def __exit__(self, *exc):
        self._detach()

    def _attach(self):
        if self._handles:
            return False
        modules = dict(self.model.named_modules())
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(
                self._hook(name)))
        return True

    def _detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name):
        torch = _require_torch()

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"ActivationRecorder: layer {name!r} returned "
                                f"{type(output).__name__}, not a tensor")
            if name in self._outputs:
                raise ValueError(f"ActivationRecorder: layer {name!r} ran twice "
                                 f"in one forward pass; record one call of it")
            # Selected at once, while the output is in the cache and before a
            # later in-place operation can change it; the tensor is not kept,
            # so the forward pass frees and reuses its memory as without hooks.
            self._outputs[name] = self._selected(name, output.detach(), torch)
        return hook

    def _selected(self, name, tensor, torch):
        """(output shape, kept objects) of one layer's output (``_select``)."""
        if tensor.ndim < 2:
            raise ValueError(f"ActivationRecorder: layer {name!r} output has "
                             f"shape {tuple(tensor.shape)}; expected (N, C, ...) "
                             f"or (N, F)")
        out = _as_numpy(tensor, self.dtype, torch)
        shape = out.shape
        if out.ndim == 2:
            out = out[:, :, None]  # one position
        return shape, self._select(name, out, tensor)

    # -- recording -----------------------------------------------------------
    def record(self, inputs):
        """Run the model on a batch of inputs and return their records.

        Parameters
        ----------
        inputs : torch.Tensor, or tuple of them
            One batch, as the model's forward takes it (a tuple is unpacked).

        Returns
        -------
        batch : RecordBatch
            One record per input (the first dimension).
        """
        torch = _require_torch()
        attached = self._attach()
        self._outputs = {}
        try:
            with torch.no_grad():
                if isinstance(inputs, tuple | list):
                    self.model(*inputs)
                else:
                    self.model(inputs)
            outputs = self._outputs
        finally:
            self._outputs = {}
            if attached:
                self._detach()
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise ValueError(f"ActivationRecorder: layers {missing} did not run "
                             f"in the forward pass")
        if not hasattr(self, "fields_"):
            self.shapes_ = {name: outputs[name][0][1:] for name in self.layers}
            self.fields_ = self._fields()
        return self._build(outputs)

    def iter_batches(self, loader):
        """Record every batch of ``loader``, one RecordBatch at a time.

        Parameters
        ----------
        loader : iterable
            Batches of inputs, such as a ``torch.utils.data.DataLoader``; a
            batch that is a tuple or list, such as ``(inputs, labels)``,
            contributes its first element.

        Yields
        ------
        batch : RecordBatch
        """
        attached = self._attach()
        try:
            for item in loader:
                yield self.record(item[0] if isinstance(item, tuple | list)
                                  else item)
        finally:
            if attached:
                self._detach()

    def _fields(self):
        if callable(self.wiring):
            fields = [self.wiring(layer, previous) for previous, layer
                      in zip(self.layers, self.layers[1:])]
        else:
            ndim = max(max(len(s) - 1 for s in self.shapes_.values()), 1)
            fields = receptive_fields(self.model, self.layers, ndim=ndim)
        checked = []
        for layer, field in zip(self.layers[1:], fields):
            spatial = len(self.shapes_[layer]) - 1
            if field == _ALL or spatial == 0:
                checked.append(_ALL)
                continue
            try:
                checked.append(_fix_ndim(field, spatial))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"ActivationRecorder: wiring of layer "
                                 f"{layer!r}: {exc}") from None
        return checked

    def _select(self, name, out, tensor):
        """Kept objects of one layer: (record, flat position, attributes).

        ``out``: the layer's output as a NumPy array (``_as_numpy``);
        ``tensor``: the same output as the layer gave it.
        """
        n, c = out.shape[:2]
        positions = out.reshape(n, c, -1)
        p = positions.shape[2]
        strength = np.sqrt(_squared_norms(positions, self.dtype))
        k = self._top_k[name]
        if k is not None and k < p and self.threshold is None:
            # Exactly k per record: the k strongest, in position order.
            position = _strongest(strength, k)
            record = np.repeat(np.arange(n), k)
        else:
            keep = np.ones(strength.shape, bool)
            if self.threshold is not None:
                keep &= strength > self.threshold
            if k is not None and k < p:
                # Rank the positions a threshold dropped below every kept one.
                ranked = np.where(keep, strength, -np.inf)
                mask = np.zeros_like(keep)
                mask[np.repeat(np.arange(n), k), _strongest(ranked, k)] = True
                keep &= mask
            record, position = np.nonzero(keep)  # row-major: by record, position
        # Channel vectors gathered, then converted: conversion is exact or
        # rounds each value alike, so gathering from ``out`` (on the CPU, the
        # tensor's NumPy view or its conversion) or from the tensor on its
        # device (only the kept vectors cross to the host) gives the same.
        if tensor.device.type == "cpu":
            attributes = positions[record, :, position].astype(self.dtype,
                                                               copy=False)
        else:
            torch = _require_torch()
            index = [torch.as_tensor(i, device=tensor.device)
                     for i in (record, position)]
            attributes = tensor.reshape(n, c, p)[index[0], :, index[1]].to(
                "cpu", torch.float64 if self.dtype == np.float64 else torch.float32
            ).numpy()
        return (record, position, attributes,
                np.take(strength.reshape(-1), record * p + position))

    def _build(self, selected):
        """The batch from every layer's (output shape, kept objects)."""
        n = selected[self.layers[0]][0][0]
        layers, parent, child = [], [], []
        previous = None  # (object ids, record, position, spatial shape)
        offset = 0
        for index, name in enumerate(self.layers):
            shape, (record, position, attrs, strength) = selected[name]
            ids = offset + np.arange(record.size)
            offset += record.size
            if self.weight == "norm":
                w = strength
            elif self.weight == "one":
                w = np.ones(record.size)
            else:
                w = np.asarray(self.weight(name, attrs), dtype=float)
                if w.shape != (record.size,):
                    raise ValueError(f"ActivationRecorder: weight({name!r}, ...) "
                                     f"returned shape {w.shape}; expected "
                                     f"({record.size},)")
                bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
                if bad.size:
                    raise ValueError(f"ActivationRecorder: layer {name!r}, "
                                     f"record {record[bad[0]]}: field 'weight' "
                                     f"must be finite and >= 0; got {w[bad[0]]}")
            layers.append((name, record, position, w, attrs))
            spatial = shape[2:]
            if previous is not None:
                p, c = _edges(ids, record, position, spatial, previous,
                              self.fields_[index - 1], n)
                parent.append(p)
                child.append(c)
            previous = (ids, record, position, spatial)
        empty = np.zeros(0, np.intp)
        # Built by construction as the batch requires (distinct valid names,
        # integer slots, edges from a layer to the one before it, each once):
        # the trusted constructor skips the checks of arbitrary arrays.
        return RecordBatch._from_layers(
            layers, n_records=n,
            parent=np.concatenate(parent) if parent else empty,
            child=np.concatenate(child) if child else empty, dtype=self.dtype)


def _as_numpy(tensor, dtype, torch):
    """A layer's output as a NumPy array for the norms of its positions.

    In the recorder's ``dtype``, except a float32 CPU output of spatial
    positions recorded in float64: its NumPy view, unconverted. The norms
    (``_squared_norms``) and the kept channel vectors are converted alone,
    without a float64 copy of the whole output (fresh memory: a page fault
    every 512 values).
    """
    if (dtype == np.float64 and tensor.dtype == torch.float32
            and tensor.device.type == "cpu" and tensor.ndim > 2):
        return tensor.numpy()
    return tensor.to("cpu", torch.float64 if dtype == np.float64
                     else torch.float32).numpy()


# Values converted at a time for the norms (float64: 1 MiB, in the L2 cache).
_NORM_CHUNK_VALUES = 2**17


def _squared_norms(positions, dtype):
    """Sums of squares over the channels of an (n, c, p) array, in ``dtype``.

    An array of another dtype is converted a few records at a time into a
    cache-sized buffer (no copy of the whole output), each chunk summed by
    the same einsum as a converted copy: the sums of a record depend only
    on its own values, so the bits are the same.
    """
    if positions.dtype == dtype:
        return np.einsum("ncp,ncp->np", positions, positions)
    n, c, p = positions.shape
    step = max(1, _NORM_CHUNK_VALUES // max(c * p, 1))
    buffer = np.empty((min(step, n), c, p), dtype)
    sums = np.empty((n, p), dtype)
    for lo in range(0, n, step):
        chunk = buffer[:min(step, n - lo)]
        chunk[...] = positions[lo:lo + step]
        np.einsum("ncp,ncp->np", chunk, chunk, out=sums[lo:lo + step])
    return sums


def _strongest(strength, k):
    """Positions of the ``k`` largest strengths of every row, row by row.

    Without a tie at a row's ``k``-th largest strength, its ``k`` strongest
    positions are those at least as strong: a partition of the values finds
    that strength several times faster than one of their indices. Rows with
    such a tie (or a NaN) take the index partition, row by row the choice
    among tied positions the recorder has always made.
    """
    p = strength.shape[1]
    kth = np.partition(strength, p - k, axis=1)[:, p - k]
    keep = strength >= kth[:, None]
    tied = np.flatnonzero(np.count_nonzero(keep, axis=1) != k)
    if tied.size:
        keep[tied] = False
        chosen = np.argpartition(-strength[tied], k - 1, axis=1)[:, :k]
        keep[tied[:, None], chosen] = True
    return np.nonzero(keep)[1]  # row-major: by row, then position


def _edges(ids, record, position, spatial, previous, field, n_records):
    """(parent, child) pairs: each object and the previous objects it reads."""
    prev_ids, prev_record, prev_position, prev_spatial = previous
    if not (ids.size and prev_ids.size):  # a layer kept no object
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    if field == _ALL:
        # Every object consumes every previous object of its record.
        order = np.argsort(prev_record, kind="stable")
        counts = np.bincount(prev_record, minlength=n_records)
        starts = np.concatenate(([0], np.cumsum(counts)))[:-1]
        repeat = counts[record]
        parent = np.repeat(ids, repeat)
        within = np.arange(parent.size) - np.repeat(
            np.cumsum(repeat) - repeat, repeat)
        child = prev_ids[order[np.repeat(starts[record], repeat) + within]]
        return parent, child
    # A dense map from (record, previous position) to object id, with a last
    # column of -1 that the cells outside the previous layer point to.
    n_prev = math.prod(prev_spatial)
    # (Ids in 32 bits where they fit: half the bytes to gather.)
    small = int(prev_ids.max()) < 2**31
    lookup = np.full((n_records, n_prev + 1), -1, np.int32 if small else np.intp)
    lookup[prev_record, prev_position] = prev_ids
    cells = _window_cells(tuple(spatial), tuple(prev_spatial), field, n_prev)
    index = np.take(cells, position, axis=0)
    index += (record * (n_prev + 1))[:, None]
    found = np.take(lookup.reshape(-1), index.reshape(-1))
    hits = np.flatnonzero(found >= 0)  # by object, then window cell
    return ids[hits // cells.shape[1]], found[hits].astype(np.intp)


@functools.lru_cache(maxsize=64)
def _window_cells(spatial, prev_spatial, field, outside):
    """For every position, the flat previous positions of its window.

    Row-major over the window's cells; a cell past the border is ``outside``.
    The same for every batch of a layer's geometry (its arguments): kept for
    the last 64 geometries, read-only.
    """
    cells = _window_cells_of(spatial, prev_spatial, field, outside)
    cells.flags.writeable = False
    return cells


def _window_cells_of(spatial, prev_spatial, field, outside):
    coords = np.unravel_index(np.arange(math.prod(spatial)), spatial)
    cells = np.zeros((coords[0].size if coords else 1, 1), np.intp)
    valid = np.ones(cells.shape, bool)
    for dim, (stride, first, last) in enumerate(field):
        size = prev_spatial[dim]
        c = stride * coords[dim][:, None] + np.arange(first, last + 1)[None, :]
        inside = (c >= 0) & (c < size)
        cells = (cells[:, :, None] * size + c[:, None, :]).reshape(cells.shape[0], -1)
        valid = (valid[:, :, None] & inside[:, None, :]).reshape(cells.shape[0], -1)
    return np.where(valid, cells, outside)
