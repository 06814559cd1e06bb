"""Synthetic modular networks and the records they emit, with ground truth."""

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._records import ActivationRecord


@dataclass(frozen=True)
class SyntheticNetwork:
    """Ground truth of a network made by :func:`make_activation_records`.

    Attributes
    ----------
    layers : tuple of tuple of str
        Module names per layer, from the output layer (roots) to the leaves.
    wiring : dict of str to tuple of str
        For each module, the modules of the next layer it consumes from.
    module_dims : dict of str to int
        Attribute dimension of each module.
    class_roots : tuple of tuple of str
        For each class, the root modules its records use.
    class_wiring : tuple of dict
        For each class, the part of ``wiring`` its records use.
    class_means : tuple of dict of str to ndarray
        For each class, the mean attribute vector of every module.
    """

    layers: tuple
    wiring: dict
    module_dims: dict
    class_roots: tuple
    class_wiring: tuple
    class_means: tuple

    @property
    def edges(self):
        """Sorted ``(parent_module, child_module)`` pairs of the wiring."""
        return sorted((p, c) for p, children in self.wiring.items()
                      for c in children)

    def paths(self, max_depth=None):
        """Every module path from an output module along the wiring."""
        found = []
        frontier = [(root,) for root in self.layers[0]]
        while frontier:
            found += frontier
            if max_depth is not None and len(frontier[0]) >= max_depth:
                break
            frontier = [path + (child,) for path in frontier
                        for child in self.wiring.get(path[-1], ())]
        return sorted(found)


def _range_param(value, name):
    low, high = (value, value) if isinstance(value, Integral) else value
    if not 0 <= low <= high:
        raise ValueError(f"The '{name}' parameter must be an int >= 0 or a pair "
                         f"(low, high) with 0 <= low <= high. Got {value!r} instead.")
    return int(low), int(high)


@validate_params(
    {
        "n_records": [Interval(Integral, 0, None, closed="left")],
        "n_modules": [Interval(Integral, 1, None, closed="left")],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "fan_in": [Interval(Integral, 1, None, closed="left")],
        "attribute_dim": [Interval(Integral, 0, None, closed="left"), "array-like"],
        "n_classes": [Interval(Integral, 1, None, closed="left")],
        "n_roots": [Interval(Integral, 1, None, closed="left"), tuple],
        "n_children": [Interval(Integral, 0, None, closed="left"), tuple],
        "branching": [StrOptions({"all", "one", "subset"})],
        "connectivity": [StrOptions({"tree", "dense"})],
        "shared_fraction": [Interval(Real, 0, 1, closed="both")],
        "weights": [StrOptions({"unit", "random"})],
        "class_sep": [Interval(Real, 0, None, closed="left")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "return_network": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def make_activation_records(n_records=100, *, n_modules=6, depth=3, fan_in=2,
                            attribute_dim=4, n_classes=3, n_roots=(1, 2),
                            n_children=(1, 2), branching="all", connectivity="tree",
                            shared_fraction=0.2,
                            weights="unit", class_sep=1.0, noise=0.1,
                            random_state=None, return_network=False):
    """Make records of a synthetic layered modular network.

    The network has ``depth`` layers of modules; each module of a layer
    consumes objects of ``fan_in`` modules of the next layer (the wiring). Each
    record belongs to one of ``n_classes`` classes; a class fixes which output
    modules fire, which part of the wiring is used and every module's mean
    attributes, so records of a class look alike.

    Parameters
    ----------
    n_records : int, default=100
        Number of records.
    n_modules : int, default=6
        Number of modules, spread over the layers (extra ones go to the
        deeper layers). Must be at least ``depth``.
    depth : int, default=3
        Number of layers.
    fan_in : int, default=2
        Number of next-layer modules each module consumes from.
    attribute_dim : int or array-like of int, default=4
        Attribute dimension of every module, or of each module in turn.
    n_classes : int, default=3
        Number of classes (the labels returned).
    n_roots : int or (int, int), default=(1, 2)
        Number (or range) of root objects per record.
    n_children : int or (int, int), default=(1, 2)
        Number (or range) of objects an object consumes per child module.
    branching : {"all", "one", "subset"}, default="all"
        Whether an object consumes from all the child modules its class
        wires, from one of them drawn at random, or from a random non-empty
        subset of them (each with probability 1/2). ``branching="one"`` with
        ``n_roots=1`` and ``n_children=1`` makes every record one chain from
        an output module to a leaf; ``branching="subset"`` makes trees whose
        branches vary from record to record (with ``"all"``, a class and a
        root fix the tree).
    connectivity : {"tree", "dense"}, default="tree"
        ``"tree"``: each object consumes its own children (some shared, see
        ``shared_fraction``). ``"dense"``: every object of a module consumes
        every object of each child module it is wired to in the record, as a
        fully connected layer does; a module path's objects then follow from
        which modules fired, without the edges.
    shared_fraction : float, default=0.2
        With ``connectivity="tree"``: probability that a consumed object is
        one already in the record (a shared child) rather than a new one.
    weights : {"unit", "random"}, default="unit"
        Object weights: all 1, or uniform in [0.1, 1].
    class_sep : float, default=1.0
        Scale of the classes' mean attributes.
    noise : float, default=0.1
        Standard deviation of the attributes around their class mean.
    random_state : int, RandomState instance or None, default=None
        Seeds the network and the records.
    return_network : bool, default=False
        Also return the :class:`SyntheticNetwork` ground truth.

    Returns
    -------
    records : list of ActivationRecord
    labels : ndarray of shape (n_records,)
        Class of each record.
    network : SyntheticNetwork
        Only when ``return_network=True``.

    Examples
    --------
    >>> from sksketch import make_activation_records
    >>> records, labels, network = make_activation_records(
    ...     5, n_modules=6, depth=3, random_state=0, return_network=True)
    >>> network.layers
    (('L0M0', 'L0M1'), ('L1M0', 'L1M1'), ('L2M0', 'L2M1'))
    >>> all(set(r.modules) <= set(network.module_dims) for r in records)
    True
    """
    if n_modules < depth:
        raise ValueError(f"n_modules={n_modules} must be >= depth={depth}")
    n_roots = _range_param(n_roots, "n_roots")
    if n_roots[1] < 1:
        raise ValueError(f"The 'n_roots' parameter must allow at least one root. "
                         f"Got {n_roots!r} instead.")
    n_children = _range_param(n_children, "n_children")
    rng = check_random_state(random_state)

    sizes = [n_modules // depth] * depth
    for extra in range(n_modules % depth):
        sizes[depth - 1 - extra] += 1
    layers = tuple(tuple(f"L{level}M{j}" for j in range(size))
                   for level, size in enumerate(sizes))
    names = [name for layer in layers for name in layer]
    dims = np.broadcast_to(np.asarray(attribute_dim), (n_modules,))
    if dims.dtype.kind not in "iu" or np.any(dims < 0):
        raise ValueError("attribute_dim must hold non-negative integers")
    module_dims = {name: int(dim) for name, dim in zip(names, dims)}

    wiring = {}
    for upper, lower in zip(layers[:-1], layers[1:]):
        for name in upper:
            chosen = rng.choice(len(lower), size=min(fan_in, len(lower)),
                                replace=False)
            wiring[name] = {lower[i] for i in chosen}
        for child in lower:  # every module is consumed by some module
            if not any(child in kids for kids in wiring.values()):
                wiring[upper[rng.randint(len(upper))]].add(child)
    wiring = {name: tuple(sorted(kids)) for name, kids in wiring.items()}

    class_roots, class_wiring, class_means = [], [], []
    for _ in range(n_classes):
        roots = [m for m in layers[0] if rng.rand() < 0.6]
        class_roots.append(tuple(roots) or (layers[0][rng.randint(len(layers[0]))],))
        active = {}
        for name, kids in wiring.items():
            keep = tuple(k for k in kids if rng.rand() < 0.75)
            active[name] = keep or (kids[rng.randint(len(kids))],)
        class_wiring.append(active)
        class_means.append({name: class_sep * rng.standard_normal(dim)
                            for name, dim in module_dims.items()})
    network = SyntheticNetwork(layers, wiring, module_dims, tuple(class_roots),
                               tuple(class_wiring), tuple(class_means))

    labels = rng.randint(n_classes, size=n_records)
    make = _make_record if connectivity == "tree" else _make_dense_record
    records = [make(network, label, n_roots, n_children, branching,
                    shared_fraction, weights, noise, rng)
               for label in labels]
    if return_network:
        return records, labels, network
    return records, labels


def _new_object(objects, network, label, module, slot, weights, noise, rng):
    """Append one object of ``module`` (attributes around its class mean)."""
    dim = network.module_dims[module]
    obj = {"id": len(objects), "module": module, "slot": slot, "inputs": [],
           "attributes": network.class_means[label][module]
           + noise * rng.standard_normal(dim),
           "weight": 1.0 if weights == "unit" else rng.uniform(0.1, 1.0)}
    objects.append(obj)
    return obj


def _branch(child_modules, branching, rng):
    """The child modules one object consumes from."""
    if branching == "all" or not child_modules:
        return child_modules
    if branching == "one":
        return (child_modules[rng.randint(len(child_modules))],)
    keep = rng.rand(len(child_modules)) < 0.5
    if not keep.any():
        keep[rng.randint(len(child_modules))] = True
    return tuple(m for m, k in zip(child_modules, keep) if k)


def _make_record(network, label, n_roots, n_children, branching, shared_fraction,
                 weights, noise, rng):
    objects = []
    by_module = {}
    wiring = network.class_wiring[label]

    def emit(module, slot):
        obj = _new_object(objects, network, label, module, slot, weights, noise, rng)
        by_module.setdefault(module, []).append(obj)
        child_modules = _branch(wiring.get(module, ()), branching, rng)
        for child_module in child_modules:
            for ordinal in range(rng.randint(n_children[0], n_children[1] + 1)):
                pool = [o for o in by_module.get(child_module, ())
                        if o["id"] not in obj["inputs"]]
                if pool and rng.rand() < shared_fraction:
                    child = pool[rng.randint(len(pool))]
                else:
                    child = emit(child_module, ordinal)
                obj["inputs"].append(child["id"])
        return obj

    roots = network.class_roots[label]
    for ordinal in range(rng.randint(n_roots[0], n_roots[1] + 1)):
        emit(roots[rng.randint(len(roots))], ordinal)
    return ActivationRecord(objects)


def _make_dense_record(network, label, n_roots, n_children, branching,
                       shared_fraction, weights, noise, rng):
    """Layer by layer: which modules fire, how many objects, all-to-all edges."""
    del shared_fraction  # every child is shared by all its parents here
    wiring = network.class_wiring[label]
    objects = []

    def emit(module, slot):
        return _new_object(objects, network, label, module, slot, weights, noise, rng)

    roots = network.class_roots[label]
    by_module = {}
    for _ in range(rng.randint(n_roots[0], n_roots[1] + 1)):
        module = roots[rng.randint(len(roots))]
        by_module.setdefault(module, []).append(
            emit(module, len(by_module.get(module, ()))))
    for _ in network.layers[1:]:
        fired = {}  # child module -> parent modules that consume it
        for module in by_module:
            children = _branch(wiring.get(module, ()), branching, rng)
            for child in children:
                fired.setdefault(child, []).append(module)
        layer = {}
        for child in sorted(fired):
            count = rng.randint(n_children[0], n_children[1] + 1)
            layer[child] = [emit(child, ordinal) for ordinal in range(count)]
            # The class decides which modules fire; the network's fixed
            # wiring decides who consumes them.
            for parent_module in by_module:
                if child in network.wiring.get(parent_module, ()):
                    for parent in by_module[parent_module]:
                        parent["inputs"] += [obj["id"] for obj in layer[child]]
        by_module = layer
    return ActivationRecord(objects)
