"""Path blocks: computing, caching and stacking them (SPEC sections 3 and 8).

The block of the module path ``P = (M_0, ..., M_k)`` is

    G_P = W_{M_0} C_{M_0} W_{M_1} C_{M_1} ... W_{M_k} [A_{M_k} | N_{M_k, slot}],

so ``G_P = W_{M_0} C_{M_0} G_{P[1:]}``: a block is one wiring and one wrapper
product away from the block of its suffix, which is cached too. Blocks are
kept as row blocks (``G^T``, columns x d) so that a batch of sketches is
``Z @ G_stacked^T`` with ``G_stacked^T`` stacked from cached rows.
"""

import numpy as np


class PathBlocks:
    """Lazily computed, memory-bounded cache of path blocks.

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

    def rows(self, path, keys):
        """Row blocks ``G^T`` of ``path`` for each key (None: ``A``; else a slot).

        Returns a list of arrays of shape (dim + 1, d) for ``A`` and (dim, d)
        for a slot, float64.
        """
        cache = self.matrices._cache
        found = {}
        missing = []
        for key in dict.fromkeys(keys):
            block = cache.get(("block", path, key))
            if block is None:
                missing.append(key)
            else:
                found[key] = block
        if missing:
            head = path[0]
            if len(path) == 1:
                dim = self.module_dims[head]
                leaf = [self.matrices.subspace(head, dim).T if key is None
                        else self.matrices.node(head, key, dim).T
                        for key in missing]
                stacked = self.matrices.apply_wrapper(head, np.concatenate(leaf))
            else:
                suffix = np.concatenate(self.rows(path[1:], missing))
                stacked = self.matrices.apply_wrapper(
                    head, self.matrices.apply_wiring(head, suffix))
            dim = self.module_dims[path[-1]]
            sizes = [dim + (key is None) for key in missing]
            for key, block in zip(missing, np.split(stacked, np.cumsum(sizes)[:-1])):
                found[key] = cache.put(("block", path, key),
                                       np.ascontiguousarray(block))
        return [found[key] for key in keys]

    def stack(self, layout, dtype=np.float64):
        """``G_stacked^T`` of shape (layout.n_columns, d) for a ColumnLayout."""
        by_path = {}
        for path, key in layout.items:
            by_path.setdefault(path, []).append(key)
        rows = {}
        for path, keys in by_path.items():
            rows.update(((path, key), block)
                        for key, block in zip(keys, self.rows(path, keys)))
        if not layout.items:
            return np.zeros((0, self.matrices.sketch_dim), dtype=dtype)
        return np.concatenate([rows[item] for item in layout.items], dtype=dtype)
