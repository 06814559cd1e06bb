"""RecursiveSketcher: module-activation records to fixed-size sketch vectors."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._array_api import (
    NUMPY,
    all_finite_rows,
    backend_of,
    concat_rows,
    for_output,
    take_rows,
    to_backend,
    to_numpy,
    zeros,
)
from ._batch import as_batch
from ._block_product import block_plan, block_sketch
from ._levelwise import levelwise_sketch
from ._paths import PathBlocks
from ._plan import plan_sketch
from ._random import ModuleMatrices
from ._threads import blas_threads_for
from ._unroll import ColumnLayout, block_offsets, coefficient_chunks, unroll
from ._verbose import Progress

# Records per chunk: at most this many coefficient values (their index and
# value buffers then stay within the L2 cache) and coefficient-matrix entries.
_CHUNK_VALUES = 2**17
_CHUNK_ELEMENTS = 2**22


def _sketch_unrolled(batch, matrices, dtype, unrolled=None, backend=NUMPY,
                     log=None, blockwise=None):
    """Sketch a validated batch unrolled: ``S = Z @ G_stacked^T``, by chunks.

    The coefficients ``Z`` are assembled on the host (from the records'
    structure), the products run on ``backend``; on NumPy, block by block
    where that is cheaper (``blockwise``: the plan's verdict, None to price
    it here).
    """
    if unrolled is None:
        unrolled = unroll(batch)
    layout = ColumnLayout.from_unrolled(batch, unrolled)
    # The stacked blocks of a layout are cached whole (on their backend):
    # batches of one network (a recorder's) keep meeting the same layout, and
    # restacking it costs a Python step per block.
    key = ("stacked", tuple(layout.items), np.dtype(dtype).str, backend.key)
    g_rows = matrices._cache.get(key)
    if g_rows is None:
        blocks = PathBlocks(matrices, batch.module_dims)
        g_rows = matrices._cache.put(key, to_backend(
            blocks.stack(layout, dtype=dtype), backend))
    offsets = None
    if backend is NUMPY and blockwise is not False:
        # Block by block where rows are sparse and blocks wide (no Z).
        offsets = a_offset, n_offset = block_offsets(batch, unrolled, layout)
        plan = block_plan(batch, unrolled, layout, n_offset, matrices.sketch_dim)
        if plan is not None:
            if log is not None:
                log(lambda: f"{batch.n_records} records sketched block by block "
                    f"({plan.starts.size} blocks)", level=2)
            return block_sketch(batch, unrolled, layout, g_rows, dtype, a_offset,
                                plan)
    # Coefficients are assembled on the host.
    host = batch if backend is NUMPY else batch.to_namespace(np)
    sketches = zeros(backend, (batch.n_records, matrices.sketch_dim), dtype)
    dims = np.array(list(batch.module_dims.values()) or [0], np.intp)
    values_per_record = (dims[batch._module_codes[unrolled.obj]] + 1).sum() / max(
        batch.n_records, 1)
    chunk_size = int(max(1, min(_CHUNK_VALUES // max(values_per_record, 1),
                                _CHUNK_ELEMENTS // max(layout.n_columns, 1))))
    for lo, hi, z in coefficient_chunks(host, unrolled, layout, chunk_size,
                                        offsets):
        with blas_threads_for(2.0 * z.size * matrices.sketch_dim):
            sketches[lo:hi, ...] = to_backend(z, backend, dtype) @ g_rows
        if log is not None:
            log(lambda lo=lo, hi=hi: f"records {lo}-{hi - 1} of {batch.n_records} "
                f"sketched (unrolled)", level=2)
    return sketches


def _sketch_batch(batch, matrices, dtype, engine="auto", backend=NUMPY, log=None):
    """Sketch a validated batch, each record by the cheaper engine.

    Trusts its inputs; :class:`RecursiveSketcher` validates them. ``log``: a
    :class:`~sksketch._verbose.Progress`, or None.
    """
    plan = plan_sketch(batch, matrices.sketch_dim, matrices.wrapper,
                       cache_bytes=matrices._cache.max_bytes,
                       force=None if engine == "auto" else engine)
    if log is not None:
        log(lambda: f"engine: {int((~plan.levelwise).sum())} records unrolled, "
            f"{int(plan.levelwise.sum())} level-wise")
    if not plan.levelwise.any():
        return _sketch_unrolled(batch, matrices, dtype, plan.unrolled, backend,
                                log, plan.blockwise)
    if plan.levelwise.all():
        return levelwise_sketch(batch, matrices, dtype, backend)
    parts, order = [], []
    for mask, engine_fn in ((plan.levelwise, levelwise_sketch),
                            (~plan.levelwise, _sketch_unrolled)):
        chosen = np.flatnonzero(mask)
        parts.append(engine_fn(batch.take(chosen), matrices, dtype,
                               backend=backend))
        order.append(chosen)
    # Back into record order by a gather (no scatter on any backend).
    inverse = np.empty(batch.n_records, np.intp)
    inverse[np.concatenate(order)] = np.arange(batch.n_records)
    return take_rows(backend, concat_rows(backend, parts), inverse)


def _check_finite(sketches, batch, backend=NUMPY):
    """Refuse sketches that overflowed, naming the first such record."""
    bad = np.flatnonzero(~all_finite_rows(backend, sketches))
    if bad.size:
        record = int(bad[0])
        members = np.flatnonzero(batch._record == record)
        codes = batch._module_codes[members]
        largest = float(np.abs(batch._weight[members]).max(initial=0))
        for code in np.unique(codes).tolist():
            rows = batch._rows[members[codes == code]]
            block = to_numpy(batch._attributes[code])
            largest = max(largest, float(np.abs(block[rows]).max(initial=0)))
        raise ValueError(
            f"record {record}: its sketch is not finite ({bad.size} of "
            f"{sketches.shape[0]} records overflowed {np.dtype(batch.dtype)}): "
            f"the products of weights and attributes along its paths exceed "
            f"the floating range (its largest weight or attribute is "
            f"{largest:.3g}); rescale the weights or attributes")


def _check_memory(matrices, dtype, cache_size):
    """Refuse a sketch_dim whose per-module matrices cannot be held at once."""
    n_square = 2 if matrices.wrapper != "none" else 1
    # float32 sketches keep a float32 copy beside each float64 draw.
    copies = 1.5 if dtype == np.float32 else 1.0
    needed = n_square * matrices.square_bytes * copies
    d = matrices.sketch_dim
    arithmetic = (f"{n_square} x {d}^2 x {8 * copies:g} bytes = "
                  f"{needed / 2**20:,.0f} MiB")
    if matrices.distribution == "sparse_sign":
        arithmetic = f"{needed / 2**20:,.1f} MiB"
    advice = ("lower sketch_dim or use matrix='sparse_sign' (O(d) memory per "
              "matrix)")
    if needed > cache_size * 2**20:
        raise ValueError(
            f"RecursiveSketcher: sketch_dim={d} needs {arithmetic} for one "
            f"module's d x d matrices, more than cache_size={cache_size:g} "
            f"MiB; raise cache_size to at least {np.ceil(needed / 2**20):.0f}, "
            f"or {advice}")
    total = _physical_memory()
    if total is not None and needed > total / 2:
        raise ValueError(
            f"RecursiveSketcher: sketch_dim={d} needs {arithmetic} for one "
            f"module's d x d matrices, more than half of this machine's "
            f"{total / 2**30:,.1f} GiB of memory; {advice}")


def _physical_memory():
    """Bytes of physical memory, or None where the system does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_dtype(dtype):
    resolved = np.dtype(dtype)
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"The 'dtype' parameter of RecursiveSketcher must be "
                         f"float32 or float64. Got {dtype!r} instead.")
    return resolved


class RecursiveSketcher(ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                        BaseEstimator):
    """Sketch module-activation records into fixed-size vectors.

    Each record -- the DAG of objects a modular network emitted for one input
    -- becomes one vector of ``sketch_dim`` floats (Ghazi, Panigrahy and Wang,
    ICML 2019). Sketches add: the sketch of two records is the sum of their
    sketches. From a sketch, :class:`SketchAttributeRecoverer` later recovers
    attributes, counts and the module tree.

    Parameters
    ----------
    sketch_dim : int, default=256
        Dimension ``d`` of the sketch vectors.
    wrapper : {"half_identity", "none"}, default="half_identity"
        The wrapper ``W_M`` applied to every object's sketch:
        ``(I + R_M) / 2`` with ``R_M`` random, or the identity.
    matrix : {"gaussian", "rademacher", "sparse_sign"}, default="gaussian"
        Entry distribution of the random matrices, with variance ``1/d``.
        ``"sparse_sign"`` makes each module's two ``d x d`` matrices (the
        wiring ``C_M`` and the wrapper ``R_M``) sparse sign matrices, with 8
        entries ``+-1/sqrt(8)`` per column at random rows: ``O(d)`` memory
        instead of ``d^2`` and ``O(d)`` work per product, for large ``d``;
        the other matrices stay Gaussian.
    engine : {"auto", "unrolled", "levelwise"}, default="auto"
        How sketches are computed; every engine gives the same sketches up
        to float rounding. ``"unrolled"`` multiplies per-path coefficients
        with cached path blocks (``O(d * dim)`` per object and module path
        reaching it: fastest on trees and layered networks); ``"levelwise"``
        applies the recursion to all objects of one module and DAG level at
        once (``O(d^2)`` per object, whatever the shape: lattices, long
        chains, dense receptive fields); ``"auto"`` prices both for every
        record and takes the cheaper (see Notes).
    dtype : {"float64", "float32"} or numpy dtype, default="float64"
        Floating type of the sketches.
    cache_size : float, default=1024
        Memory bound, in MiB, of the cache of random matrices and path blocks.
        Evicted entries are recomputed from their seeds when needed again.
        Each module has two ``d x d`` matrices (134 MB each at ``d=4096``
        in float64); ``fit`` raises a ValueError when one module's pair
        does not fit.
    random_state : int, RandomState instance or None, default=None
        Seeds the random matrices. With an int, every matrix is a pure function
        of ``(random_state, module, role, slot)``: the same sketches in every
        process and on every machine. Pass an int for reproducible results.
    verbose : int, default=0
        Progress messages on stdout from ``transform``: none with 0; with 1,
        what is sketched, how the records split between the engines and
        when it is done; with 2, also a line per chunk of records. They never
        change the sketches.

    Attributes
    ----------
    seed_ : int
        The integer all random matrices are derived from.
    modules_ : dict of str to int
        Attribute dimension of every module seen in ``fit``/``partial_fit``.
    module_graph_ : dict of str to tuple of str
        For every module seen consuming objects, the modules it consumed from.

    See Also
    --------
    SketchAttributeRecoverer : Recover attributes and counts from sketches.
    sklearn.random_projection.GaussianRandomProjection : A flat random
        projection of fixed-size vectors.

    Notes
    -----
    An object ``theta`` of module ``M`` with attributes ``x`` and slot ``s`` has
    the sketch ``s(theta) = W_M (A_M [x; 1] + N_{M,s} x + C_M sum_c w_c s(c))``
    over its inputs ``c``, and a record's sketch is ``sum_roots w s(root)``.
    All matrices have i.i.d. N(0, 1/d) (or +-1/sqrt(d)) entries. The sketch is
    linear in the attributes and weights.

    By linearity, an object reached from a root by the module path
    ``P = (M_0, ..., M_k)`` contributes through the path block
    ``W_{M_0} C_{M_0} ... W_{M_k} [A_{M_k} | N_{M_k,s}]`` times the product of
    the weights along the path, so a sketch is one product of per-path
    coefficients with cached blocks: ``O(d * dim)`` per (object, path) pair
    instead of ``O(d^2)`` per object. That pays once per module path, and
    paths can explode on small records (a lattice of ``L`` layers where every
    object consumes every object below has ``2^L``). With ``engine="auto"``,
    each record is priced both ways -- unrolled: its coefficient work plus
    its share of the blocks it needs; level-wise: ``O(d^2)`` per object --
    counting the unrolled work by unrolling under a budget that stops at the
    level-wise price. So no record costs more than a small multiple of the
    cheaper engine, and the choice depends only on the batch's structure
    and ``d``, never on what is cached: the same records give bit-identical
    sketches.

    Examples
    --------
    >>> import numpy as np
    >>> from sksketch import RecursiveSketcher, make_activation_records
    >>> records, labels = make_activation_records(20, random_state=0)
    >>> sketcher = RecursiveSketcher(sketch_dim=128, random_state=0).fit(records)
    >>> S = sketcher.transform(records)
    >>> S.shape
    (20, 128)

    Sketches add: the sketch of two records merged is the sum of theirs.

    >>> from sksketch import merge_records
    >>> merged = sketcher.transform([merge_records(records[:2])])
    >>> bool(np.allclose(merged[0], S[0] + S[1]))
    True
    """

    _parameter_constraints: dict = {
        "sketch_dim": [Interval(Integral, 1, None, closed="left")],
        "wrapper": [StrOptions({"half_identity", "none"})],
        "matrix": [StrOptions({"gaussian", "rademacher", "sparse_sign"})],
        "engine": [StrOptions({"auto", "unrolled", "levelwise"})],
        "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
        "cache_size": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, sketch_dim=256, *, wrapper="half_identity", matrix="gaussian",
                 engine="auto", dtype="float64", cache_size=1024, random_state=None,
                 verbose=0):
        self.sketch_dim = sketch_dim
        self.wrapper = wrapper
        self.matrix = matrix
        self.engine = engine
        self.dtype = dtype
        self.cache_size = cache_size
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the modules (and their dimensions) and the module graph.

        Parameters
        ----------
        X : sequence of ActivationRecord or dict, or RecordBatch
            The records.
        y : None
            Ignored.

        Returns
        -------
        self : RecursiveSketcher
        """
        for attribute in ("seed_", "modules_", "module_graph_", "_module_matrices"):
            self.__dict__.pop(attribute, None)
        return self._partial_fit(as_batch(X, dtype=_check_dtype(self.dtype)))

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Add the modules of more records without changing any learned matrix.

        Every matrix derives from ``seed_`` and its module's name, so sketches
        made before stay valid and comparable with those made after.

        Parameters
        ----------
        X : sequence of ActivationRecord or dict, or RecordBatch
        y : None
            Ignored.

        Returns
        -------
        self : RecursiveSketcher
        """
        dtype = (self._dtype if hasattr(self, "seed_")
                 else _check_dtype(self.dtype))
        return self._partial_fit(as_batch(X, dtype=dtype))

    def _partial_fit(self, batch):
        if not hasattr(self, "seed_"):
            rs = self.random_state
            self.seed_ = (int(rs) if isinstance(rs, Integral)
                          else int(check_random_state(rs).randint(2**31 - 1)))
            self.modules_ = {}
            self.module_graph_ = {}
            self._dtype = _check_dtype(self.dtype)
            self._engine_params = (int(self.sketch_dim), self.matrix, self.wrapper,
                                   int(self.cache_size * 2**20))
            _check_memory(self._matrices(), self._dtype, self.cache_size)
            self._n_features_out = int(self.sketch_dim)
        self._check_modules(batch, allow_new=True)
        self.modules_ = dict(sorted({**self.modules_, **batch.module_dims}.items()))
        names = batch._module_names
        pairs = np.unique(np.stack((batch._module_codes[batch._parent],
                                    batch._module_codes[batch._child])), axis=1)
        graph = {name: set(children) for name, children in self.module_graph_.items()}
        for parent, child in pairs.T.tolist():
            graph.setdefault(names[parent], set()).add(names[child])
        self.module_graph_ = {name: tuple(sorted(graph[name]))
                              for name in sorted(graph)}
        return self

    def _check_modules(self, batch, *, allow_new):
        for code, (name, dim) in enumerate(batch.module_dims.items()):
            known = self.modules_.get(name)
            if known == dim or (known is None and allow_new):
                continue
            where = batch._where(int(np.flatnonzero(batch._module_codes == code)[0]))
            if known is None:
                raise ValueError(f"{where}: module {name!r} was not seen in fit; "
                                 f"call partial_fit with records that contain it")
            raise ValueError(f"{where}: field 'attributes' has dimension {dim}, but "
                             f"module {name!r} has dimension {known} in fit")

    def _matrices(self):
        """The random matrices, rebuilt after unpickling (caches never pickle)."""
        matrices = getattr(self, "_module_matrices", None)
        if matrices is None:
            sketch_dim, distribution, wrapper, max_bytes = self._engine_params
            matrices = self._module_matrices = ModuleMatrices(
                self.seed_, sketch_dim, distribution=distribution, wrapper=wrapper,
                max_bytes=max_bytes)
        return matrices

    def transform(self, X):
        """Sketch records.

        Parameters
        ----------
        X : sequence of ActivationRecord or dict, or RecordBatch
            The records; every module must have been seen in ``fit``.

        Returns
        -------
        S : ndarray of shape (n_records, sketch_dim)
            One sketch per record.

        Raises
        ------
        ValueError
            When a record's sketch is not finite: finite attributes and
            weights can still overflow the dtype once multiplied along a
            path (weights of 1e200 on a chain of three objects), and a
            sketch of inf or NaN would decode into meaningless numbers.
        """
        check_is_fitted(self)
        log = Progress(self, self.verbose)
        batch = as_batch(X, dtype=self._dtype)
        self._check_modules(batch, allow_new=False)
        log(lambda: f"sketching {batch.n_records} records ({batch.n_objects} "
            f"objects) into {self._n_features_out} dimensions")
        # Overflow is reported below, per record, rather than as a warning.
        backend = backend_of(*batch._attributes)
        with np.errstate(over="ignore", invalid="ignore"):
            sketches = _sketch_batch(batch, self._matrices(), self._dtype,
                                     self.engine, backend, log=log)
        _check_finite(sketches, batch, backend)
        log(lambda: f"sketched {batch.n_records} records")
        return for_output(self, sketches)

    def fit_transform(self, X, y=None):
        """Fit to the records, then sketch them (converting them only once)."""
        batch = as_batch(X, dtype=_check_dtype(self.dtype))
        return self.fit(batch).transform(batch)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_module_matrices", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X is a list of records (dicts), like DictVectorizer's input.
        tags.input_tags.two_d_array = False
        tags.input_tags.dict = True
        tags.transformer_tags.preserves_dtype = []
        return tags
