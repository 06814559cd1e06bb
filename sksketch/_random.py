"""Stable seeds and the random matrices (docs: The mathematics).

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
from contextlib import contextmanager

import numpy as np

from ._array_api import NUMPY, padded_csr, sparse_apply, to_backend

#: Roles of the random matrices (docs: The mathematics).
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


#: Non-zeros per column of a sparse sign matrix.
SPARSE_SIGN_NNZ = 8


def draw_sparse_sign(seed, module, role, sketch_dim, nnz=SPARSE_SIGN_NNZ):
    """A ``d x d`` sparse sign matrix: ``nnz`` entries ``+-1/sqrt(nnz)`` a column.

    Rows are drawn independently (a repeat adds up), signs are independent,
    so ``E||G v||^2 = ||v||^2`` and two columns have an inner product of mean
    0 and variance ``1/d``, as with Gaussian entries; storage is ``O(nnz d)``
    and a product with ``k`` vectors costs ``O(nnz d k)`` (Kane and Nelson's
    sparse Johnson-Lindenstrauss transform). Returned in CSR form, float64.
    """
    from scipy.sparse import csr_array

    rng = np.random.Generator(np.random.PCG64(stable_seed(seed, module, role,
                                                          "sparse_sign")))
    nnz = min(nnz, sketch_dim)
    rows = rng.integers(0, sketch_dim, size=(sketch_dim, nnz))
    bits = np.unpackbits(np.frombuffer(rng.bytes(-(-rows.size // 8)), np.uint8))
    scale = 1.0 / np.sqrt(nnz)
    values = (2.0 * scale) * bits[:rows.size] - scale
    columns = np.repeat(np.arange(sketch_dim), nnz)
    matrix = csr_array((values, (rows.reshape(-1), columns)),
                       shape=(sketch_dim, sketch_dim))
    matrix.sum_duplicates()
    return matrix


def _nbytes(value):
    """Bytes held by a dense array, a SciPy CSR array or a tuple of arrays."""
    if isinstance(value, tuple):
        return sum(_nbytes(part) for part in value)
    if hasattr(value, "indptr"):
        return value.data.nbytes + value.indices.nbytes + value.indptr.nbytes
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    return int(np.prod(value.shape)) * 8  # an array library without nbytes


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
                self.n_bytes -= _nbytes(self._items.pop(key))
            self._items[key] = value
            self.n_bytes += _nbytes(value)
            while self.n_bytes > self.max_bytes and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self.n_bytes -= _nbytes(evicted)
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
    distribution : {"gaussian", "rademacher", "sparse_sign"}
        Entries of every matrix; with ``"sparse_sign"``, the ``d x d``
        wiring and wrapper matrices are sparse sign matrices
        (:func:`draw_sparse_sign`) and the others Gaussian.
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
        self._pinned = {}

    @contextmanager
    def pinned(self, module, *, wiring=True):
        """Keep ``module``'s wiring and wrapper at hand while in the block.

        Work on one module's blocks then draws them at most once, even when
        the cache evicts them to make room for the blocks. ``wiring=False``
        holds the wrapper alone (blocks of one-module paths need no wiring).
        """
        held = {(module, WIRING, None): self.wiring(module)} if wiring else {}
        if self.wrapper != "none":
            held[(module, WRAPPER, None)] = self.wrapper_matrix(module)
        self._pinned.update(held)
        try:
            yield
        finally:
            for key in held:
                self._pinned.pop(key, None)

    @property
    def square_bytes(self):
        """Bytes of one module's ``d x d`` wiring (or wrapper) matrix, float64."""
        if self.distribution == "sparse_sign":
            nnz = min(SPARSE_SIGN_NNZ, self.sketch_dim) * self.sketch_dim
            return nnz * 12 + (self.sketch_dim + 1) * 8
        return self.sketch_dim ** 2 * 8

    def _get(self, module, role, n_columns, slot=None):
        key = (module, role, slot)
        matrix = self._pinned.get(key)
        if matrix is None:
            matrix = self._cache.get(key)
        if matrix is None:
            if role in (WIRING, WRAPPER) and self.distribution == "sparse_sign":
                matrix = draw_sparse_sign(self.seed, module, role, self.sketch_dim)
            else:
                matrix = draw_matrix(
                    self.seed, module, role, (self.sketch_dim, n_columns), slot=slot,
                    distribution=("gaussian" if self.distribution == "sparse_sign"
                                  else self.distribution))
            self._cache.put(key, matrix)
        return matrix

    def matrix(self, module, role, n_columns, *, slot=None, dtype=np.float64,
               backend=NUMPY):
        """One matrix in ``dtype`` on ``backend``, each cached apart.

        Every backend gets the same NumPy draw, converted: sketches agree
        across array libraries to float rounding.
        """
        dtype = np.dtype(dtype)
        if dtype == np.float64 and backend.is_numpy:
            return self._get(module, role, n_columns, slot)
        key = (module, role, slot, dtype.str, backend.key)
        matrix = self._cache.get(key)
        if matrix is None:
            host = self._get(module, role, n_columns, slot)
            if not hasattr(host, "indptr"):
                matrix = to_backend(host, backend, dtype)
            elif backend.is_numpy:
                matrix = host.astype(dtype)
            else:
                matrix = padded_csr(backend, host, dtype)
            matrix = self._cache.put(key, matrix)
        return matrix

    def subspace(self, module, dim):
        """``A_M`` of shape (d, dim + 1); the last column is the presence."""
        return self._get(module, SUBSPACE, dim + 1)

    def node(self, module, slot, dim):
        """``N_{M, slot}`` of shape (d, dim)."""
        return self._get(module, NODE, dim, slot)

    def wiring(self, module):
        """``C_M`` of shape (d, d): dense, or sparse CSR with ``"sparse_sign"``."""
        return self._get(module, WIRING, self.sketch_dim)

    def wrapper_matrix(self, module):
        """``R_M`` of shape (d, d), or None when ``wrapper="none"``."""
        if self.wrapper == "none":
            return None
        return self._get(module, WRAPPER, self.sketch_dim)

    def apply(self, module, role, rows, *, dtype=np.float64, backend=NUMPY):
        """``rows @ G^T`` for the ``d x d`` matrix ``G`` of role C or R."""
        matrix = self.matrix(module, role, self.sketch_dim, dtype=dtype,
                             backend=backend)
        if hasattr(matrix, "indptr") or isinstance(matrix, tuple):
            return sparse_apply(backend, matrix, rows)
        return rows @ matrix.T

    def apply_wrapper(self, module, rows):
        """``rows @ W_M^T`` for row vectors: ``(v + R v) / 2`` on each row."""
        if self.wrapper == "none":
            return rows
        return 0.5 * (rows + self.apply(module, WRAPPER, rows))

    def apply_wiring(self, module, rows):
        """``rows @ C_M^T``: carry a child's sketch into its parent."""
        return self.apply(module, WIRING, rows)

    def clear(self):
        self._cache.clear()
