"""Path blocks: computing, caching and stacking them (docs: The mathematics).

The block of the module path ``P = (M_0, ..., M_k)`` applies the chain

    T_P = W_{M_0} C_{M_0} W_{M_1} C_{M_1} ... W_{M_k}

to a leaf: the presence column ``a_P = T_P A_{M_k}[:, dim]`` or, for slot
``s``, ``H_{P,s} = T_P (A_{M_k}[:, :dim] + N_{M_k,s})`` (see ``_unroll``).
As ``T_P = W_{M_0} C_{M_0} T_{P[1:]}``, a block is one wiring and one
wrapper product away from the block of its suffix, which is cached too.
Blocks are kept as row blocks (transposed, columns x d) so that a batch of
sketches is ``Z @ G_stacked^T`` with ``G_stacked^T`` stacked from the cache.
"""

import numpy as np

from ._unroll import slot_sort_key


class PathBlocks:
    """Lazily computed, memory-bounded cache of path blocks.

    Every cached array is a pure function of its key -- the chain of one
    path applied to one leaf matrix, always computed with the same shapes --
    so sketches never depend on what was computed, cached or evicted before.

    Parameters
    ----------
    matrices : ModuleMatrices
        The random matrices; blocks share its memory-bounded cache.
    module_dims : mapping of str to int
        Attribute dimension of every module.
    """

    def __init__(self, matrices, module_dims):
        self.matrices = matrices
        self.module_dims = module_dims

    def _compute(self, path, leaf, suffix_rows):
        """The chain of ``path`` on ``leaf``, from its suffix's (None: a leaf)."""
        head = path[0]
        if suffix_rows is None:
            dim = self.module_dims[head]
            leaf_matrix = (self.matrices.subspace(head, dim) if leaf is None
                           else self.matrices.node(head, leaf, dim))
            rows = self.matrices.apply_wrapper(head, leaf_matrix.T)
        else:
            rows = self.matrices.apply_wrapper(
                head, self.matrices.apply_wiring(head, suffix_rows))
        return self.matrices._cache.put(("chain", path, leaf),
                                        np.ascontiguousarray(rows))

    def chain(self, path, leaf):
        """``(T_P L)^T`` for the leaf ``L``: ``A_M`` (``leaf=None``) or ``N_{M,leaf}``.

        Returns an array of shape (dim + 1, d) for ``A`` and (dim, d) for
        ``N``, float64. Built from the longest cached suffix up, a step at a
        time (never recursively: paths can be thousands of modules long).
        """
        cache = self.matrices._cache
        rows = cache.get(("chain", path, leaf))
        if rows is not None:
            return rows
        start = len(path) - 1
        suffix_rows = None
        for i in range(1, len(path)):
            suffix_rows = cache.get(("chain", path[i:], leaf))
            if suffix_rows is not None:
                start = i - 1
                break
        for i in range(start, -1, -1):
            suffix_rows = self._compute(path[i:], leaf, suffix_rows)
        return suffix_rows

    def warm(self, keys):
        """Compute the chains of ``(path, leaf)`` keys and all their suffixes.

        Ordered so that each module's ``d x d`` matrices are drawn once per
        call even when they do not all fit the cache: by the head module's
        rank in the module graph (the modules it consumes come first, so the
        suffixes a chain extends are ready), then by head module, whose
        matrices stay pinned while its chains are computed. A cycle of
        modules shares one rank; a suffix not yet computed there is built on
        demand. Every chain is still computed on its own, so values never
        depend on the order.
        """
        needed = set()
        for path, leaf in keys:
            for i in range(len(path)):
                # Suffixes nest: once one is known, so are all shorter ones.
                if (path[i:], leaf) in needed:
                    break
                needed.add((path[i:], leaf))
        rank = _module_ranks({path for path, _ in needed})

        def order(key):
            path, leaf = key
            return (rank[path[0]], path[0], len(path), path, leaf is not None,
                    "" if leaf is None else slot_sort_key(leaf))

        # Every chain needed is held here until the end, so that a small
        # cache evicting one never makes a later step redraw its matrices.
        cache = self.matrices._cache
        held = {key: cache.get(("chain", *key)) for key in needed}
        todo = [key for key in sorted(needed, key=order) if held[key] is None]
        start = 0
        while start < len(todo):
            head = todo[start][0][0]
            stop = start
            while stop < len(todo) and todo[stop][0][0] == head:
                stop += 1
            group = todo[start:stop]
            with self.matrices.pinned(head, wiring=any(len(p) > 1 for p, _ in group)):
                for path, leaf in group:
                    suffix = None
                    if len(path) > 1:
                        suffix = held[(path[1:], leaf)]
                        if suffix is None:  # in a cycle of modules: on demand
                            suffix = held[(path[1:], leaf)] = self.chain(path[1:],
                                                                         leaf)
                    held[(path, leaf)] = self._compute(path, leaf, suffix)
            start = stop
        return {key: held[key] for key in keys}

    def rows(self, path, key, chains=None):
        """Row block of ``path``: ``a_P^T`` (``key=None``) or ``H_{P,key}^T``.

        Shapes (1, d) and (dim, d). ``chains``: chains already at hand, by
        ``(path, leaf)``, as :meth:`warm` returns them.
        """
        def chain(leaf):
            rows = None if chains is None else chains.get((path, leaf))
            return self.chain(path, leaf) if rows is None else rows

        dim = self.module_dims[path[-1]]
        subspace = chain(None)
        if key is None:
            return subspace[dim:]
        return subspace[:dim] + chain(key)

    def stack(self, layout, dtype=np.float64):
        """``G_stacked^T`` of shape (layout.n_columns, d) for a ColumnLayout."""
        if not layout.items:
            return np.zeros((0, self.matrices.sketch_dim), dtype=dtype)
        chains = self.warm({(path, None) for path, _ in layout.items}
                           | {(path, key) for path, key in layout.items
                              if key is not None})
        return np.concatenate([self.rows(path, key, chains)
                               for path, key in layout.items], dtype=dtype)


def _module_ranks(paths):
    """Rank of every module in the module graph the paths walk, leaves first.

    A module consuming another ranks above it; modules on a common cycle
    (strongly connected) share a rank.
    """
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    from ._dag import topological_levels

    names = sorted({module for path in paths for module in path})
    code = {name: i for i, name in enumerate(names)}
    pairs = {(code[a], code[b]) for path in paths for a, b in zip(path, path[1:])}
    parent, child = (np.array(side, np.intp).reshape(-1)
                     for side in (zip(*pairs) if pairs else ((), ())))
    n = len(names)
    _, component = connected_components(
        coo_array((np.ones(parent.size), (parent, child)), shape=(n, n)),
        directed=True, connection="strong")
    between = component[parent] != component[child]
    levels, _ = topological_levels(int(component.max(initial=-1)) + 1,
                                   component[child][between],
                                   component[parent][between])
    level_of = np.zeros(int(component.max(initial=-1)) + 1, np.intp)
    for i, level in enumerate(levels):
        level_of[level] = i
    return {name: int(level_of[component[code[name]]]) for name in names}
