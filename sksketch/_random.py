"""Stable seeds and the random matrices of SPEC section 2.

Every matrix is drawn from its own seed, derived from
``(seed, module, role[, slot])`` by a cryptographic hash (never Python's
``hash()``, which changes with PYTHONHASHSEED). So any matrix can be
regenerated on demand, a fitted sketcher pickles as a handful of integers,
and adding a module never changes the matrices of the others.
"""

import hashlib
import json
import threading
from collections import OrderedDict

import numpy as np

#: Roles of the random matrices (SPEC section 2).
SUBSPACE, NODE, WIRING, WRAPPER = "A", "N", "C", "R"


def stable_seed(seed, module, role, slot=None):
    """A 128-bit integer seed for one matrix, the same on every machine."""
    key = json.dumps([int(seed), module, role, slot], separators=(",", ":"),
                     ensure_ascii=True)
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(),
                          "little")


def draw_matrix(seed, module, role, shape, *, slot=None, distribution="gaussian"):
    """Draw one random matrix with i.i.d. entries of variance ``1/shape[0]``.

    ``distribution`` is ``"gaussian"`` (N(0, 1/d)) or ``"rademacher"``
    (+-1/sqrt(d)); either way ``E||G v||^2 = ||v||^2``. Gaussian entries are
    drawn in float32 -- three times faster than float64 draws, which matters
    for the ``d x d`` matrices, and just as random -- then returned, scaled,
    in float64: the float32 engine rounds the path blocks, not the draws.
    """
    rng = np.random.Generator(np.random.PCG64(stable_seed(seed, module, role, slot)))
    scale = 1.0 / np.sqrt(shape[0])
    if distribution == "gaussian":
        return rng.standard_normal(shape, dtype=np.float32) * scale
    n_entries = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(rng.bytes(-(-n_entries // 8)), np.uint8))
    return ((2.0 * scale) * bits[:n_entries] - scale).reshape(shape)


class LRUCache:
    """A dict bounded by the bytes of its array values; evicts least recent."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self._items = OrderedDict()
        self._lock = threading.Lock()  # transform may run in threads
        self.n_bytes = 0

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            if key in self._items:
                self.n_bytes -= self._items.pop(key).nbytes
            self._items[key] = value
            self.n_bytes += value.nbytes
            while self.n_bytes > self.max_bytes and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self.n_bytes -= evicted.nbytes
            return value

    def __len__(self):
        return len(self._items)

    def clear(self):
        with self._lock:
            self._items.clear()
            self.n_bytes = 0


class ModuleMatrices:
    """The random matrices of every module, drawn on demand and cached.

    Parameters
    ----------
    seed : int
        The sketcher's integer seed.
    sketch_dim : int
    distribution : {"gaussian", "rademacher"}
    wrapper : {"half_identity", "none"}
    max_bytes : int
        Memory bound of the cache; evicted matrices are redrawn when needed.
    """

    def __init__(self, seed, sketch_dim, *, distribution="gaussian",
                 wrapper="half_identity", max_bytes=1024 * 2**20):
        self.seed = int(seed)
        self.sketch_dim = int(sketch_dim)
        self.distribution = distribution
        self.wrapper = wrapper
        self._cache = LRUCache(max_bytes)

    def _get(self, module, role, n_columns, slot=None):
        key = (module, role, slot)
        matrix = self._cache.get(key)
        if matrix is None:
            matrix = draw_matrix(self.seed, module, role,
                                 (self.sketch_dim, n_columns), slot=slot,
                                 distribution=self.distribution)
            self._cache.put(key, matrix)
        return matrix

    def subspace(self, module, dim):
        """``A_M`` of shape (d, dim + 1); the last column is the presence."""
        return self._get(module, SUBSPACE, dim + 1)

    def node(self, module, slot, dim):
        """``N_{M, slot}`` of shape (d, dim)."""
        return self._get(module, NODE, dim, slot)

    def wiring(self, module):
        """``C_M`` of shape (d, d)."""
        return self._get(module, WIRING, self.sketch_dim)

    def wrapper_matrix(self, module):
        """``R_M`` of shape (d, d), or None when ``wrapper="none"``."""
        if self.wrapper == "none":
            return None
        return self._get(module, WRAPPER, self.sketch_dim)

    def apply_wrapper(self, module, rows):
        """``rows @ W_M^T`` for row vectors: ``(v + R v) / 2`` on each row."""
        matrix = self.wrapper_matrix(module)
        if matrix is None:
            return rows
        return 0.5 * (rows + rows @ matrix.T)

    def apply_wiring(self, module, rows):
        """``rows @ C_M^T``: carry a child's sketch into its parent."""
        return rows @ self.wiring(module).T

    def clear(self):
        self._cache.clear()
