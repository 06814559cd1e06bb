"""Array libraries other than NumPy: the one place that knows about them.

sksketch computes in the namespace and on the device of its inputs' floating
arrays -- NumPy by default, CuPy or PyTorch (CPU or CUDA) tensors, any library
following the Python Array API standard -- through ``array-api-compat``.
Everything else in the package calls the helpers below with an
:class:`ArrayBackend` and never imports ``cupy`` or ``torch`` for arrays.

What stays on the host, in NumPy, whatever the backend: the records'
structure (integer indices, plans, the path trie), the random draws (so a
matrix is the same on every backend, then moved to the device once and
cached there) and the group pursuit of the least-squares decoder. The
floating-point work -- every product with a random matrix or a path block,
and the gathers and sums between them -- runs on the device.

The engines never scatter: every write is to a contiguous slice, every
irregular access a gather (``take``), and sums over runs of rows are pairwise
gathers (:func:`segment_sum`). The strict Array API has no integer-array
``__setitem__``, and scatter-adds on GPUs use atomics whose order, hence
last bits, change from run to run; gathers keep results deterministic.
"""

from typing import Any, NamedTuple

import numpy as np


class ArrayBackend(NamedTuple):
    """An array namespace and a device of it (NumPy: ``(numpy, "cpu")``)."""

    xp: Any
    device: Any

    @property
    def is_numpy(self):
        return self.xp is np

    @property
    def key(self):
        """A hashable name for caching arrays per backend (None for NumPy)."""
        if self.is_numpy:
            return None
        return (self.xp.__name__, str(self.device))


NUMPY = ArrayBackend(np, "cpu")


def _is_numpy(array):
    return isinstance(array, np.ndarray | np.generic)


def is_array(value):
    """Whether ``value`` is an array of a library other than NumPy."""
    if _is_numpy(value) or isinstance(value, list | tuple | int | float):
        return False
    if not (hasattr(value, "__array_namespace__") or _known_library(value)):
        return False
    import array_api_compat

    return array_api_compat.is_array_api_obj(value)


def _known_library(value):
    # Torch tensors and CuPy arrays lack __array_namespace__ in older
    # releases; array-api-compat recognises them by type.
    module = type(value).__module__.split(".")[0]
    return module in {"torch", "cupy"}


def backend_of(*arrays):
    """The backend of the non-NumPy arrays among ``arrays``, else NumPy.

    Raises
    ------
    ValueError
        When the arrays come from several libraries or devices.
    """
    foreign = [a for a in arrays if a is not None and is_array(a)]
    if not foreign:
        return NUMPY
    import array_api_compat

    try:
        xp = array_api_compat.array_namespace(*foreign)
    except TypeError as error:
        raise ValueError(f"arrays of several array libraries mixed: {error}") from None
    devices = {str(array_api_compat.device(a)) for a in foreign}
    if len(devices) > 1:
        raise ValueError(f"arrays on several devices mixed: {sorted(devices)}")
    if array_api_compat.is_numpy_namespace(xp):
        return NUMPY
    if not array_api_compat.is_writeable_array(foreign[0]):
        # The engines write sketches into slices of arrays they allocate.
        raise TypeError(f"arrays of {xp.__name__} are immutable; sksketch "
                        f"computes with NumPy, CuPy, PyTorch or another "
                        f"library with writeable arrays: convert them first")
    return ArrayBackend(xp, array_api_compat.device(foreign[0]))


def backend_for(namespace, device=None):
    """The backend of an array library given as a module (``cupy``, ``torch``)."""
    if namespace is np or getattr(namespace, "__name__", "") in {
            "numpy", "array_api_compat.numpy"}:
        if device not in (None, "cpu"):
            raise ValueError(f"NumPy arrays live on the CPU; got device {device!r}")
        return NUMPY
    import array_api_compat

    if not hasattr(namespace, "asarray"):
        raise TypeError(f"expected an array library such as cupy or torch; got "
                        f"{namespace!r}")
    probe = namespace.asarray([0.0]) if device is None else \
        array_api_compat.array_namespace(namespace.asarray([0.0])).asarray(
            [0.0], device=device)
    return backend_of(probe)


def backend_dtype(backend, dtype):
    """The backend's floating dtype named as ``dtype`` (NumPy's or its own)."""
    if backend.is_numpy:
        return np.dtype(dtype)
    if not isinstance(dtype, str | np.dtype | type):
        return dtype  # the backend's own dtype object already
    return getattr(backend.xp, np.dtype(dtype).name)


def to_backend(array, backend, dtype=None):
    """``array`` (NumPy or the backend's) in ``backend``, optionally cast."""
    if backend.is_numpy:
        array = to_numpy(array)
        return array if dtype is None else array.astype(dtype, copy=False)
    xp = backend.xp
    if not _is_numpy(array) and backend_of(array) != backend:
        array = to_numpy(array)  # from another library or device
    if _is_numpy(array):
        array = xp.asarray(np.ascontiguousarray(array), device=backend.device)
    if dtype is not None:
        array = xp.astype(array, backend_dtype(backend, dtype), copy=False)
    return array


def host_array(value):
    """``value`` (a list, NumPy or any library's array, on any device) in NumPy."""
    return to_numpy(value) if is_array(value) else np.asarray(value)


def for_output(estimator, result):
    """``transform``'s ``result``, on the host if ``set_output`` wants a frame.

    A pandas or polars DataFrame holds host memory: scikit-learn's wrapper
    would otherwise convert a device array implicitly (which CuPy and CUDA
    tensors refuse).
    """
    if _is_numpy(result):
        return result
    from sklearn.utils._set_output import _get_output_config

    if _get_output_config("transform", estimator)["dense"] == "default":
        return result
    return to_numpy(result)


def detached(array):
    """``array`` outside any autograd graph (PyTorch's ``detach``).

    sksketch's results are not differentiable: the unrolled engine and the
    group pursuit compute on the host, so a gradient would flow through some
    records or sketches and silently not through others.
    """
    import array_api_compat

    if array_api_compat.is_torch_array(array) and array.requires_grad:
        return array.detach()
    return array


def to_numpy(array):
    """A NumPy array holding ``array``'s values (copied from a device)."""
    if _is_numpy(array):
        return np.asarray(array)
    import array_api_compat

    if array_api_compat.is_cupy_array(array):
        return array.get()
    if array_api_compat.is_torch_array(array):
        array = array.detach().cpu()
        if str(array.dtype) == "torch.bfloat16":
            array = array.float()  # NumPy has no bfloat16; float32 holds it
        return array.numpy()
    xp = array_api_compat.array_namespace(array)
    try:  # the host device of any other library, then DLPack or __array__
        array = array_api_compat.to_device(array, _host_device(xp))
    except (ValueError, TypeError, AttributeError, NotImplementedError):
        pass
    return np.asarray(array)


def _host_device(xp):
    info = xp.__array_namespace_info__()
    return info.default_device()


def indices(backend, index):
    """A host integer index as an index array of ``backend``."""
    index = np.asarray(index, dtype=np.intp)
    if backend.is_numpy:
        return index
    return backend.xp.asarray(index.astype(np.int64), device=backend.device)


def take_rows(backend, array, index):
    """``array[index]`` along the first axis for a host integer ``index``."""
    if backend.is_numpy:
        return np.take(array, index, axis=0)
    return backend.xp.take(array, indices(backend, index), axis=0)


def take_columns(backend, array, index):
    """``array[:, index]`` for a host integer ``index`` or a slice."""
    if isinstance(index, slice):
        return array[:, index]
    if backend.is_numpy:
        return np.take(array, index, axis=1)
    return backend.xp.take(array, indices(backend, index), axis=1)


def segment_sum(backend, values, starts):
    """Sums of the runs of rows of ``values`` starting at ``starts``.

    ``starts`` (host, increasing, first 0) splits the rows into runs; the
    result has one row per run. NumPy adds each run left to right
    (``add.reduceat``); other backends add neighbours pairwise, in
    ``ceil(log2(longest run))`` rounds of gathers, the same order on every
    call.
    """
    starts = np.asarray(starts, dtype=np.intp)
    if backend.is_numpy:
        return np.add.reduceat(values, starts, axis=0)
    xp = backend.xp
    lengths = np.diff(np.append(starts, values.shape[0]))
    while lengths.size and lengths.max() > 1:
        # Rows at even positions of a run take their right neighbour.
        halves = (lengths + 1) // 2
        new_starts = np.concatenate(([0], np.cumsum(halves)[:-1]))
        run = np.repeat(np.arange(lengths.size), halves)
        position = 2 * (np.arange(halves.sum()) - new_starts[run])
        left = starts[run] + position
        has_right = position + 1 < lengths[run]
        # Rows without a neighbour take the zero row appended at the end.
        right = np.where(has_right, left + 1, values.shape[0])
        padded = xp.concat((values, zeros(backend, (1, values.shape[1]),
                                          values.dtype)))
        values = take_rows(backend, padded, left) + take_rows(backend, padded,
                                                              right)
        starts, lengths = new_starts, halves
    return values


def sum_rows_by(backend, values, group, n_groups):
    """Row sums of ``values`` by ``group`` (host ints), ``n_groups`` rows.

    Groups without rows sum to zero. Only gathers: rows are sorted by group
    (stably), summed by :func:`segment_sum`, and each group's row gathered
    from those sums or from an appended zero row.
    """
    group = np.asarray(group, dtype=np.intp)
    order = np.argsort(group, kind="stable")
    present, starts = np.unique(group[order], return_index=True)
    sums = (segment_sum(backend, take_rows(backend, values, order), starts)
            if order.size else values[:0])
    source = np.full(n_groups, present.size, np.intp)
    source[present] = np.arange(present.size)
    zero = zeros(backend, (1, values.shape[1]), values.dtype)
    return take_rows(backend, concat_rows(backend, (sums, zero)), source)


def as_dtype(backend, array, dtype):
    """``array`` cast to ``dtype`` (NumPy's or the backend's), no needless copy."""
    if backend.is_numpy:
        return array.astype(dtype, copy=False)
    return backend.xp.astype(array, backend_dtype(backend, dtype), copy=False)


def finfo(backend, dtype):
    """The backend's ``finfo`` of a floating ``dtype``."""
    return backend.xp.finfo(backend_dtype(backend, dtype))


def check_floating(backend, array, name):
    """Validate a 2-D real floating array of a library other than NumPy.

    The counterpart of scikit-learn's ``check_array`` for arrays that stay
    on their device: 2-D, at least one row, real, finite; float32 and
    float64 kept, other dtypes (integers, float16, bfloat16) cast to float64.
    """
    xp = backend.xp
    array = detached(array)
    if array.ndim != 2:
        raise ValueError(f"Expected a 2-D array for {name}, got shape "
                         f"{tuple(array.shape)}; reshape your data")
    if array.shape[0] < 1:
        raise ValueError(f"{name} has 0 rows; at least 1 is required")
    if array.dtype not in (xp.float32, xp.float64):
        # As check_array(dtype=[float64, float32]): integers and half
        # precision (float16, bfloat16) are cast to float64.
        if not (xp.isdtype(array.dtype, "real floating")
                or xp.isdtype(array.dtype, "integral")):
            raise TypeError(f"{name} must hold real numbers; got dtype "
                            f"{array.dtype}")
        array = xp.astype(array, xp.float64)
    if not bool(xp.all(xp.isfinite(array))):
        raise ValueError(f"Input {name} contains NaN or infinity.")
    return array


def all_finite_rows(backend, array):
    """Host boolean vector: which rows of a 2-D ``array`` are all finite."""
    xp = backend.xp
    return to_numpy(xp.all(xp.isfinite(array), axis=1)).astype(bool)


def zeros(backend, shape, dtype):
    """A zero array of ``backend`` in the NumPy-named ``dtype``."""
    if backend.is_numpy:
        return np.zeros(shape, dtype)
    return backend.xp.zeros(shape, dtype=backend_dtype(backend, dtype),
                            device=backend.device)


def concat_rows(backend, arrays):
    """Arrays of ``backend`` stacked by rows."""
    if backend.is_numpy:
        return np.concatenate(arrays, axis=0)
    return backend.xp.concat(arrays, axis=0)


def concat_columns(backend, arrays):
    """Arrays of ``backend`` side by side (stacked by columns)."""
    if backend.is_numpy:
        return np.concatenate(arrays, axis=1)
    return backend.xp.concat(arrays, axis=1)


def sparse_apply(backend, matrix, rows):
    """``rows @ G^T`` for a sparse ``G`` in CSR form (host SciPy array).

    NumPy uses SciPy's sparse product. Other backends get ``G``'s rows as
    padded (column, value) pairs -- see :func:`padded_csr` -- and sum
    ``value * rows[:, column]`` over the pads: gathers and elementwise
    products only.
    """
    if backend.is_numpy:
        return np.asarray((matrix @ rows.T).T)
    columns, values = matrix  # prepared by padded_csr on this backend
    out = None
    for j in range(columns.shape[1]):
        term = backend.xp.take(rows, columns[:, j], axis=1) * values[:, j]
        out = term if out is None else out + term
    return out


def padded_csr(backend, matrix, dtype):
    """A SciPy CSR matrix as (columns, values) of shape (n_rows, max nnz).

    Rows shorter than the longest are padded with column 0 and value 0.
    """
    counts = np.diff(matrix.indptr)
    width = int(counts.max(initial=1))
    n_rows = counts.size
    columns = np.zeros((n_rows, width), np.int64)
    values = np.zeros((n_rows, width), np.float64)
    row = np.repeat(np.arange(n_rows), counts)
    position = np.arange(matrix.indices.size) - np.repeat(matrix.indptr[:-1], counts)
    columns[row, position] = matrix.indices
    values[row, position] = matrix.data
    return (backend.xp.asarray(columns, device=backend.device),
            to_backend(values, backend, dtype))
