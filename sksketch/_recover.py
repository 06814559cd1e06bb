"""SketchAttributeRecoverer: attributes, counts and module trees from sketches."""

import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from ._array_api import (
    as_dtype,
    backend_of,
    check_floating,
    concat_columns,
    finfo,
    for_output,
    is_array,
    take_columns,
    to_backend,
    to_numpy,
    zeros,
)
from ._batch import RecordBatch, as_batch
from ._decode import Structure, kept_coordinates, make_decoder
from ._records import ActivationRecord, canonical_slot
from ._sketch import RecursiveSketcher
from ._unroll import ColumnLayout, unroll
from ._verbose import Progress


class OutOfStructureWarning(UserWarning):
    """Sketches that the structure learned at ``fit`` does not explain.

    Issued by :class:`SketchAttributeRecoverer` (``method="lstsq"``) when a
    sketch's least-squares residual exceeds numerical noise: it holds module
    paths or slots not seen in ``fit``, comes from another sketcher, was
    altered, or uses more unknowns than ``max_active`` times the kept
    coordinates (what sparse decoding can solve for). Its
    decoded values are then unreliable; ``residual_norm`` measures how far
    each sketch is.
    """


def _is_records(X):
    if isinstance(X, RecordBatch):
        return True
    if isinstance(X, Sequence) and not isinstance(X, str) and len(X) > 0:
        return isinstance(X[0], ActivationRecord | Mapping)
    return False


def path_name(path):
    """``"output/cat"`` for the module path ``("output", "cat")``."""
    return "/".join(path)


class SketchAttributeRecoverer(TransformerMixin, BaseEstimator):
    """Recover counts, attributes and module trees from sketches.

    A transformer over sketches: ``transform`` turns each sketch into, for
    every module path learned at ``fit``, the estimated weighted count of the
    objects on that path and their mean attributes. ``recover``,
    ``statistics`` and ``unroll`` answer finer questions. All of them accept
    sketches whose trailing coordinates were erased (``(n, d')`` with
    ``d' < d``), or any subset of coordinates given as ``kept=``.

    Parameters
    ----------
    sketcher : RecursiveSketcher, default=None
        The sketcher that made (or will make) the sketches. A fitted one is
        used as it is; an unfitted one (or ``None``: ``RecursiveSketcher()``)
        is cloned and fitted on the records given to ``fit``.
    method : {"lstsq", "transpose"}, default="lstsq"
        ``"lstsq"`` solves for all unknowns at once over the stacked path
        blocks: exact (to float precision) while the active unknowns are at
        most ``max_active`` times the kept coordinates. ``"transpose"`` is the
        paper's decoder: each quantity read through transposed matrices, with
        an additive error of order ``||S|| sqrt(dim / d)``.
    max_depth : int, default=None
        Longest module path (counted in modules) to learn and decode; None
        learns every depth present in the records.
    max_active : float, default=0.5
        With ``method="lstsq"``: when the unknowns exceed this fraction of
        the kept coordinates, a sparse decoder (least squares on a support
        superset, or a group orthogonal matching pursuit) over the
        path blocks looks for at most that many active unknowns.
    tol : float, default=1e-10
        Sparse decoding stops when the residual is below ``tol * ||S||``.
    threshold : float, default=0.5
        Weighted count above which a path counts as present: it is used by
        ``unroll``, and means are reported as 0 below it.
    verbose : int, default=0
        Progress messages on stdout from ``fit`` (none with 0): the sketcher
        fitted, and the paths and unknowns learned.

    Attributes
    ----------
    sketcher_ : RecursiveSketcher
        The fitted sketcher.
    paths_ : list of tuple of str
        The module paths learned, sorted; ``transform`` reports them in order.
    slots_ : dict of tuple to list
        For each path, the slots its objects occupied in the records.
    n_features_in_ : int
        The sketch dimension ``d``.

    See Also
    --------
    RecursiveSketcher : Make the sketches.
    erase : Keep a prefix or a subset of the coordinates of sketches.

    Notes
    -----
    With ``method="lstsq"``, every decoding method warns
    (:class:`OutOfStructureWarning`) about sketches that the learned paths
    and slots do not explain: those whose relative least-squares residual
    (:meth:`residual_norm`) exceeds ``100 * eps * sqrt(d') * cond``, with
    ``eps`` the machine epsilon of the sketches (the lower precision of the
    sketcher's and the input's), ``d'`` the kept coordinates and ``cond``
    the condition number of the unit-norm blocks solved over (all blocks for
    the pseudo-inverse; each sketch's chosen blocks for the matching
    pursuit, whose threshold is also at least ``tol``). A sketch made from
    the learned structure stays a factor of about 500 below it.

    A sketch is linear in, for every module path ``P``, the weighted count
    ``c_P`` of its objects, and for every slot ``s`` their weighted attribute
    sum ``u_{P,s}``. ``transform`` reports ``c_P`` and ``sum_s u_{P,s} / c_P``.
    To use the recoverer in a Pipeline on records, let it wrap the sketcher:
    ``make_pipeline(SketchAttributeRecoverer(RecursiveSketcher()), model)``
    -- ``fit`` fits the sketcher on the records, and ``transform`` given
    records sketches them first.

    Examples
    --------
    >>> import numpy as np
    >>> from sksketch import (RecursiveSketcher, SketchAttributeRecoverer,
    ...                       make_activation_records)
    >>> records, _ = make_activation_records(50, random_state=0)
    >>> recoverer = SketchAttributeRecoverer(
    ...     RecursiveSketcher(512, random_state=0)).fit(records)
    >>> S = recoverer.sketcher_.transform(records)
    >>> features = recoverer.transform(S)
    >>> names = recoverer.get_feature_names_out()
    >>> counts = features[:, list(names).index("L0M0:count")]
    >>> true = [sum(m == "L0M0" for m in (r.modules[r.ids.index(i)]
    ...             for i in r.roots)) for r in records]
    >>> bool(np.allclose(counts, true))
    True
    """

    _parameter_constraints: dict = {
        "sketcher": [HasMethods(["fit", "transform"]), None],
        "method": [StrOptions({"lstsq", "transpose"})],
        "max_depth": [Interval(Integral, 1, None, closed="left"), None],
        "max_active": [Interval(Real, 0, 1, closed="right")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "threshold": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(self, sketcher=None, *, method="lstsq", max_depth=None,
                 max_active=0.5, tol=1e-10, threshold=0.5, verbose=0):
        self.sketcher = sketcher
        self.method = method
        self.max_depth = max_depth
        self.max_active = max_active
        self.tol = tol
        self.threshold = threshold
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the sketcher if needed and learn the module paths of the records.

        Parameters
        ----------
        X : sequence of ActivationRecord or dict, or RecordBatch
            Records of the network whose sketches will be decoded.
        y : None
            Ignored.

        Returns
        -------
        self : SketchAttributeRecoverer
        """
        log = Progress(self, self.verbose)
        sketcher = RecursiveSketcher() if self.sketcher is None else self.sketcher
        batch = as_batch(X)
        if hasattr(sketcher, "seed_"):
            sketcher._check_modules(batch, allow_new=False)
            self.sketcher_ = sketcher
        else:
            self.sketcher_ = clone(sketcher).fit(batch)
            log(lambda: f"fitted the sketcher on {batch.n_records} records")
        items = _learned_items(batch, self.max_depth,
                               self.sketcher_._matrices().sketch_dim)
        self._structure = Structure(items, self.sketcher_.modules_)
        log(lambda: f"learned {len(self._structure.paths)} module paths and "
            f"{len(items)} (path, slot) blocks from {batch.n_records} records")
        self.paths_ = list(self._structure.paths)
        self.slots_ = {path: list(slots)
                       for path, slots in self._structure.slots_of.items()}
        self.n_features_in_ = self.sketcher_._matrices().sketch_dim
        for cache in _DECODER_CACHES.values():
            self.__dict__.pop(cache, None)
        return self

    def _decoder(self, method=None):
        """The decoder of ``method`` (default ``self.method``), built once."""
        method = self.method if method is None else method
        decoder = getattr(self, _DECODER_CACHES[method], None)
        if decoder is None:
            decoder = make_decoder(method, self._structure, self.sketcher_,
                                   max_active=self.max_active, tol=self.tol)
            setattr(self, _DECODER_CACHES[method], decoder)
        return decoder

    def _check_sketches(self, S, kept):
        """Validated float64 sketches, kept coordinates, input dtype and eps."""
        check_is_fitted(self)
        if _is_records(S):
            S = self.sketcher_.transform(S)
        backend = backend_of(S)
        S = check_array(S, dtype=[np.float64, np.float32], input_name="S") \
            if backend.is_numpy else check_floating(backend, S, "S")
        kept = kept_coordinates(self.n_features_in_, S.shape[1], kept)
        # A float32 sketcher's sketches are float32 numbers even as float64.
        eps = max(float(finfo(backend, S.dtype).eps),
                  np.finfo(self.sketcher_._dtype).eps)
        return (as_dtype(backend, S, np.float64), kept, S.dtype, eps, backend)

    def _decode(self, S, kept, stacklevel=3):
        """Validate sketches; return (item coefficients, path sums, dtype).

        ``stacklevel`` points the warning at the caller of the public method.
        """
        S, kept, dtype, eps, backend = self._check_sketches(S, kept)
        decoded = self._decoder().decode(S, kept, eps, backend)
        if decoded.residual is not None:
            outside = decoded.residual > decoded.noise
            if outside.any():
                warnings.warn(
                    f"{outside.sum()} of {outside.size} sketches are not explained "
                    f"by the paths and slots learned in fit: their least-squares "
                    f"residual reaches {decoded.residual[outside].max():.2g} of "
                    f"||S||, above the noise level "
                    f"{decoded.noise[outside].min():.2g}. They hold paths or "
                    f"slots not seen in fit, come from another sketcher or were "
                    f"altered, or use more unknowns than max_active times the "
                    f"{kept.size} kept coordinates: their decoded values are "
                    f"unreliable. See residual_norm.",
                    OutOfStructureWarning, stacklevel=stacklevel)
        return decoded.z, decoded.sums, dtype, backend

    def residual_norm(self, X, kept=None):
        """How far each sketch is from what the learned structure explains.

        The least-squares residual ``||S - G z|| / ||S||`` over the kept
        coordinates, ``G`` the stacked blocks of the learned paths and slots
        and ``z`` the ``method="lstsq"`` solution (whatever ``method`` is):
        rounding size (see Notes of the class) for a sketch of records like
        those of ``fit``, of order 1 for a sketch of unseen paths or slots.

        Parameters
        ----------
        X : array-like of shape (n_sketches, n_kept), or records
        kept : array-like of int or bool, default=None
            Which coordinates the columns of ``X`` are; default a prefix.

        Returns
        -------
        residual : ndarray of shape (n_sketches,)
            Relative residual norms; 0 for a zero sketch.
        """
        S, kept, _, eps, backend = self._check_sketches(X, kept)
        residual = self._decoder("lstsq").decode(S, kept, eps, backend).residual
        return to_backend(residual, backend)

    def transform(self, X, kept=None):
        """Counts and mean attributes of every learned path.

        Parameters
        ----------
        X : array-like of shape (n_sketches, n_kept), or records
            Sketches, possibly with only their first ``n_kept`` coordinates
            (or those in ``kept``). Records are sketched first.
        kept : array-like of int or bool, default=None
            Which coordinates the columns of ``X`` are; default a prefix.

        Returns
        -------
        features : ndarray of shape (n_sketches, n_features_out)
            Per path, in ``paths_`` order: the count, then the mean attributes
            (named by :meth:`get_feature_names_out`).
        """
        # transform is wrapped by scikit-learn's set_output: one frame more.
        z, sums, dtype, backend = self._decode(X, kept, stacklevel=4)
        structure = self._structure
        counts = take_columns(backend, z, structure.presence_columns)
        columns = []
        for i in range(len(structure.paths)):
            count = counts[:, i:i + 1]
            path_sum = sums[:, structure.sum_offsets[i]:structure.sum_offsets[i + 1]]
            columns += [count, _mean(backend, path_sum, count, self.threshold)]
        if not columns:
            return for_output(self, zeros(backend, (z.shape[0], 0), dtype))
        return for_output(self, as_dtype(backend, concat_columns(backend, columns),
                                         dtype))

    def get_feature_names_out(self, input_features=None):
        """``"{path}:count"`` and ``"{path}:mean{i}"`` for every learned path.

        Parameters
        ----------
        input_features : None
            Ignored: the input is sketches.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        names = []
        for path in self._structure.paths:
            name = path_name(path)
            names.append(f"{name}:count")
            names += [f"{name}:mean{i}"
                      for i in range(self._structure.module_dims[path[-1]])]
        return np.asarray(names, dtype=object)

    def recover(self, S, path, *, kept=None):
        """Attributes of the node at ``path``, from each sketch.

        Parameters
        ----------
        S : array-like of shape (n_sketches, n_kept)
        path : sequence of (module, slot)
            From a root, e.g. ``[("output", 0), ("cat", 1)]``. The estimate is
            the weighted attribute sum of every object whose module path from
            a root is that path's modules and whose own slot is the last slot:
            with unit weights and one such object, its attribute vector.
        kept : array-like, default=None
            Which coordinates the columns of ``S`` are; default a prefix.

        Returns
        -------
        attributes : ndarray of shape (n_sketches, dim)
        """
        modules, slot = self._check_path(path)
        z, _, dtype, backend = self._decode(S, kept)
        return as_dtype(backend, take_columns(
            backend, z, self._structure.layout.columns((modules, slot))), dtype)

    def _check_path(self, path):
        check_is_fitted(self)
        if isinstance(path, str) or not isinstance(path, Sequence) or not path:
            raise TypeError("path must be a non-empty sequence of (module, slot) "
                            "pairs, e.g. [('output', 0), ('cat', 1)]")
        try:
            modules = tuple(str(module) for module, _ in path)
            slot = canonical_slot(path[-1][1], "path")
        except (TypeError, ValueError):
            raise TypeError("path must be a sequence of (module, slot) pairs, "
                            f"e.g. [('output', 0), ('cat', 1)]; got {path!r}") from None
        if (modules, slot) not in self._structure.layout.index:
            known = self.slots_.get(modules)
            detail = (f"module path {path_name(modules)!r} was not seen in fit"
                      if known is None else
                      f"slot {slot!r} of {path_name(modules)!r} was not seen in "
                      f"fit (seen: {known})")
            raise ValueError(f"Cannot recover path {path!r}: {detail}")
        return modules, slot

    def statistics(self, S, module, *, kept=None):
        """Count and mean attributes of a module's objects over the whole DAG.

        Sums over every learned path that ends in ``module``.

        Parameters
        ----------
        S : array-like of shape (n_sketches, n_kept)
        module : str
        kept : array-like, default=None

        Returns
        -------
        statistics : Bunch
            ``count`` (n_sketches,), the weighted count; ``sum`` (n_sketches,
            dim), the weighted attribute sum; ``mean`` (n_sketches, dim),
            ``sum / count`` where the count exceeds ``threshold``, else 0.
        """
        check_is_fitted(self)
        structure = self._structure
        ends = [i for i, p in enumerate(structure.paths) if p[-1] == module]
        if not ends:
            raise ValueError(f"module {module!r} ends no learned path; learned "
                             f"modules: {sorted(self.sketcher_.modules_)}")
        z, sums, dtype, backend = self._decode(S, kept)
        count = backend.xp.sum(take_columns(
            backend, z, structure.presence_columns[ends]), axis=1)
        total = sum(sums[:, structure.sum_offsets[i]:structure.sum_offsets[i + 1]]
                    for i in ends)
        mean = _mean(backend, total, count[:, None], self.threshold)
        return Bunch(count=as_dtype(backend, count, dtype),
                     sum=as_dtype(backend, total, dtype),
                     mean=as_dtype(backend, mean, dtype))

    def unroll(self, s, *, threshold=None, kept=None):
        """The tree of modules present in one sketch, with their counts.

        Parameters
        ----------
        s : array-like of shape (n_kept,)
            One sketch.
        threshold : float, default=None
            Count above which a path is present; default ``self.threshold``.
        kept : array-like, default=None

        Returns
        -------
        tree : dict
            ``{module: {"count": c, "children": {...}}}`` from the roots down,
            for every learned path whose estimated count exceeds the
            threshold (and whose parent path is present).
        """
        s = s if is_array(s) else np.asarray(s)
        if s.ndim != 1:
            raise ValueError(f"unroll takes one sketch (1-D); got shape "
                             f"{tuple(s.shape)}")
        threshold = self.threshold if threshold is None else threshold
        z, _, _, _ = self._decode(s[None, :], kept)
        counts = to_numpy(z)[0, self._structure.presence_columns]
        tree = {}
        nodes = {(): tree}
        for path, count in zip(self._structure.paths, counts.tolist()):
            parent = nodes.get(path[:-1])
            if count > threshold and parent is not None:
                node = parent[path[-1]] = {"count": count, "children": {}}
                nodes[path] = node["children"]
        return tree

    def __getstate__(self):
        state = super().__getstate__()
        for cache in _DECODER_CACHES.values():
            state.pop(cache, None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # fit takes records (dicts); transform takes sketches (arrays).
        tags.input_tags.two_d_array = False
        tags.input_tags.dict = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# Factorized decoders, rebuilt after fit and unpickling.
_DECODER_CACHES = {"lstsq": "_lstsq_decoder_cache",
                   "transpose": "_transpose_decoder_cache"}


# Most (object, module path) pairs one record may unroll into for decoding:
# the decoders answer per module path, and far more paths than any sketch
# dimension can resolve means a DAG whose paths explode (a lattice of L
# layers, each object consuming every object below, has 2^L).
MAX_PATH_ENTRIES = 2**16


def _mean(backend, total, count, threshold):
    """``total / count`` where ``count > threshold``, else 0."""
    xp = backend.xp
    positive = count > threshold
    safe = xp.where(positive, count, xp.ones_like(count))
    return xp.where(positive, total / safe, xp.zeros_like(total))


def _learned_items(batch, max_depth, sketch_dim=None):
    """Every (path, slot) of the records, down to ``max_depth``.

    Unrolls under a cap, so that a record whose module paths explode is
    refused with the arithmetic instead of enumerating them.
    """
    cap = MAX_PATH_ENTRIES if sketch_dim is None else min(MAX_PATH_ENTRIES,
                                                          64 * sketch_dim)
    unrolled = unroll(batch, max_depth=max_depth,
                      budget=np.full(batch.n_records, float(cap)),
                      entry_cost=np.ones(batch.n_objects))
    if unrolled.over_budget.any():
        record = int(np.flatnonzero(unrolled.over_budget)[0])
        where = "" if sketch_dim is None else f" at sketch_dim={sketch_dim}"
        raise ValueError(
            f"record {record}: its objects are reached by more than {cap:,} "
            f"(object, module path) pairs, so decoding{where} would solve for "
            f"more than {cap:,} unknowns, and exact decoding needs a sketch_dim "
            f"of about twice the unknowns of a record (over {2 * cap:,}); pass "
            f"max_depth to decode the top levels of the records only")
    return [item for item in ColumnLayout.from_unrolled(batch, unrolled).items
            if item[1] is not None]
