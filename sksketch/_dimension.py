"""Choosing the sketch dimension (see the user guide, Erasure and choosing d)."""

import math
from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._batch import as_batch
from ._decode import Structure
from ._recover import _learned_items

# Transpose decoding of a path of L modules: each wrapper (I + R)/2 is undone
# by 2 W^T, which doubles the variance of what the path reads from the rest
# of the sketch (E||W^T v||^2 = ||v||^2 / 2, scaled by 4), and the fourth
# moment of W^T W adds a quarter per level on the path's own terms
# (E||W^T W v||^2 = 5/16 ||v||^2 = 5/4 * (1/2)^2 ||v||^2). So the error of a
# node's attributes is about (2 * (5/4)^2)^(L/2) ||S|| sqrt(dim / d). Without
# wrappers, C^T reads the rest of the sketch at its scale (a variance of 1)
# and each wiring's fourth moment, E||C^T C v||^2 = (2 + 1/d) ||v||^2, adds at
# most 1 on the path's own terms: about (1 + L)^(1/2) ||S|| sqrt(dim / d).


def _transpose_variance(wrapper, depth):
    if wrapper == "half_identity":
        return (2 * (5 / 4) ** 2) ** depth
    return 1.0 + depth


@validate_params(
    {
        "records": ["array-like", object],
        "method": [StrOptions({"lstsq", "transpose"})],
        "error": [Interval(Real, 0, None, closed="neither")],
        "max_depth": [Interval(Integral, 1, None, closed="left"), None],
        "max_active": [Interval(Real, 0, 1, closed="right")],
        "wrapper": [StrOptions({"half_identity", "none"})],
    },
    prefer_skip_nested_validation=True,
)
def suggest_sketch_dim(records, *, method="lstsq", error=0.1, max_depth=None,
                       max_active=0.5, wrapper="half_identity"):
    """The smallest sketch dimension that decodes records of this shape.

    Parameters
    ----------
    records : sequence of ActivationRecord or dict, or RecordBatch
        Records of the network, as :class:`SketchAttributeRecoverer` would be
        fitted on.
    method : {"lstsq", "transpose"}, default="lstsq"
        The decoder to plan for.

        - ``"lstsq"``: exact recovery needs the unknowns (a count per module
          path, ``dim`` attributes per path and slot) to be at most
          ``max_active * d``: returns ``ceil(n_unknowns / max_active)``.
        - ``"transpose"``: the error on a node's attributes, relative to the
          sketch norm, is about ``kappa^L sqrt(dim / d)`` for a path of ``L``
          modules, with ``kappa^2 = 2 * (5/4)^2`` with the wrappers
          ``(I + R)/2``, and about ``sqrt((1 + L) dim / d)`` without; returns
          the ``d`` that brings it to ``error`` for the longest path and the
          largest ``dim``.
    error : float, default=0.1
        With ``method="transpose"``: the relative error to reach.
    max_depth : int, default=None
        Longest module path to decode, as in SketchAttributeRecoverer.
    max_active : float, default=0.5
        With ``method="lstsq"``: the largest unknowns-to-``d`` ratio decoded
        exactly, as in SketchAttributeRecoverer.
    wrapper : {"half_identity", "none"}, default="half_identity"
        With ``method="transpose"``: the sketcher's wrapper.

    Returns
    -------
    sketch_dim : int

    Examples
    --------
    >>> from sksketch import make_activation_records, suggest_sketch_dim
    >>> records, _ = make_activation_records(100, random_state=0)
    >>> suggest_sketch_dim(records)
    180
    """
    batch = as_batch(records)
    # The structure SketchAttributeRecoverer would learn from these records.
    structure = Structure(_learned_items(batch, max_depth), batch.module_dims)
    if not structure.paths:
        raise ValueError("the records have no objects: nothing to decode")
    if method == "lstsq":
        return int(math.ceil(structure.n_unknowns / max_active))
    depth = max(len(path) for path in structure.paths)
    dim = max(max(structure.module_dims[p[-1]] for p in structure.paths), 1)
    return int(math.ceil(_transpose_variance(wrapper, depth) * dim / error**2))
