"""Path blocks: computing, caching and stacking them (SPEC sections 3 and 8).

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

    def chain(self, path, leaf):
        """``(T_P L)^T`` for the leaf ``L``: ``A_M`` (``leaf=None``) or ``N_{M,leaf}``.

        Returns an array of shape (dim + 1, d) for ``A`` and (dim, d) for
        ``N``, float64.
        """
        key = ("chain", path, leaf)
        rows = self.matrices._cache.get(key)
        if rows is None:
            head = path[0]
            if len(path) == 1:
                dim = self.module_dims[head]
                leaf_matrix = (self.matrices.subspace(head, dim) if leaf is None
                               else self.matrices.node(head, leaf, dim))
                rows = self.matrices.apply_wrapper(head, leaf_matrix.T)
            else:
                rows = self.matrices.apply_wrapper(
                    head, self.matrices.apply_wiring(head, self.chain(path[1:], leaf)))
            rows = self.matrices._cache.put(key, np.ascontiguousarray(rows))
        return rows

    def warm(self, keys):
        """Compute the chains of ``(path, leaf)`` keys, suffixes first.

        Ordered by length, then head module, so that each module's wiring and
        wrapper matrices are drawn once and used for all its chains while
        cached; every chain is still computed on its own.
        """
        needed = {(path[i:], leaf) for path, leaf in keys for i in range(len(path))}

        def order(key):
            path, leaf = key
            return (len(path), path, leaf is not None,
                    "" if leaf is None else slot_sort_key(leaf))

        for path, leaf in sorted(needed, key=order):
            self.chain(path, leaf)

    def rows(self, path, key):
        """Row block of ``path``: ``a_P^T`` (``key=None``) or ``H_{P,key}^T``.

        Shapes (1, d) and (dim, d).
        """
        dim = self.module_dims[path[-1]]
        subspace = self.chain(path, None)
        if key is None:
            return subspace[dim:]
        return subspace[:dim] + self.chain(path, key)

    def stack(self, layout, dtype=np.float64):
        """``G_stacked^T`` of shape (layout.n_columns, d) for a ColumnLayout."""
        if not layout.items:
            return np.zeros((0, self.matrices.sketch_dim), dtype=dtype)
        self.warm([(path, key) for path, key in layout.items])
        return np.concatenate([self.rows(path, key) for path, key in layout.items],
                              dtype=dtype)
