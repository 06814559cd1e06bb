"""Record shapes that stress the engines: lattices, chains, receptive fields.

Each function returns a :class:`RecordBatch` of ``n_records`` records of one
shape, built from arrays (no per-object Python), with random attributes and
weights. They are what real networks record -- a convolution position
consumes its whole receptive field, residual blocks add skip paths, deep nets
add levels -- and where the number of module paths explodes. Used by the
tests and by ``benchmarks/bench_shapes.py``.
"""

import numpy as np

from ._batch import RecordBatch


def _batch(n_records, layers, edges, dim, rng, slots=None):
    """Stack one record's structure ``n_records`` times with fresh values.

    ``layers``: module name per object; ``edges``: (parent, child) pairs
    within one record; ``slots``: per object, or None for the defaults.
    """
    layers = np.asarray(layers)
    n = layers.size
    offsets = np.arange(n_records) * n
    edges = np.asarray(edges, np.intp).reshape(-1, 2)
    all_edges = (edges[None, :, :] + offsets[:, None, None]).reshape(-1, 2)
    module = np.tile(layers, n_records)
    attributes = {name: rng.standard_normal((int((module == name).sum()), dim))
                  for name in np.unique(layers).tolist()}
    return RecordBatch(
        module=module.tolist(), attributes=attributes,
        record=np.repeat(np.arange(n_records), n), n_records=n_records,
        weight=rng.uniform(0.5, 1.5, n * n_records), edges=all_edges,
        slot=None if slots is None else list(slots) * n_records)


def lattice(n_layers, *, width=2, n_records=1, dim=4, random_state=0):
    """``width`` modules per layer, each object consuming every object below.

    ``width ** n_layers`` module paths reach the bottom layer.
    """
    rng = np.random.default_rng(random_state)
    names = [f"L{layer}M{k}" for layer in range(n_layers) for k in range(width)]
    edges = [(layer * width + a, (layer + 1) * width + b)
             for layer in range(n_layers - 1)
             for a in range(width) for b in range(width)]
    return _batch(n_records, names, edges, dim, rng)


def chain(depth, *, distinct_modules=False, n_records=1, dim=4, random_state=0):
    """A chain of ``depth`` objects, each consuming the next.

    One module throughout (paths of every length ``1..depth``), or one module
    per level.
    """
    rng = np.random.default_rng(random_state)
    names = ([f"M{level}" for level in range(depth)] if distinct_modules
             else ["M"] * depth)
    edges = [(level, level + 1) for level in range(depth - 1)]
    return _batch(n_records, names, edges, dim, rng)


def receptive_field(size, *, n_layers=4, kernel=3, n_records=1, dim=4,
                    random_state=0):
    """A CNN of ``n_layers`` conv layers on a ``size x size`` grid, stride 1.

    Each position of layer ``l`` is one object of module ``conv{l}`` whose
    slot is its position, consuming the ``kernel x kernel`` positions of
    layer ``l + 1`` around it (padding keeps the grid size); one ``head``
    object consumes the top layer.
    """
    rng = np.random.default_rng(random_state)
    grid = np.arange(size * size).reshape(size, size)
    per_layer = size * size
    names = ["head"] + [f"conv{layer}" for layer in range(n_layers)
                        for _ in range(per_layer)]
    slots = [0] + [int(p) for _ in range(n_layers) for p in grid.reshape(-1)]
    edges = [(0, 1 + p) for p in range(per_layer)]
    half = kernel // 2
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for layer in range(n_layers - 1):
        for di in range(-half, half + 1):
            for dj in range(-half, half + 1):
                ok = ((ii + di >= 0) & (ii + di < size)
                      & (jj + dj >= 0) & (jj + dj < size))
                parent = 1 + layer * per_layer + grid[ok]
                child = 1 + (layer + 1) * per_layer + grid[ii[ok] + di, jj[ok] + dj]
                edges.extend(zip(parent.tolist(), child.tolist()))
    return _batch(n_records, names, edges, dim, rng, slots=slots)


def residual(n_blocks, *, width=4, n_records=1, dim=4, random_state=0):
    """``n_blocks`` residual blocks of ``width`` units: ``y = f(x) + x``.

    Each block has a ``conv`` stage consuming all units below and an
    ``add`` stage consuming the conv unit and the block's input unit (the
    skip): every block doubles the module paths to what lies below it.
    """
    rng = np.random.default_rng(random_state)
    names, edges = ["input"] * width, []
    below = list(range(width))
    for block in range(n_blocks):
        conv = []
        for _ in range(width):
            conv.append(len(names))
            names.append(f"conv{block}")
            edges.extend((conv[-1], b) for b in below)
        add = []
        for k in range(width):
            add.append(len(names))
            names.append(f"add{block}")
            edges.extend([(add[-1], conv[k]), (add[-1], below[k])])
        below = add
    return _batch(n_records, names, edges, dim, rng)
