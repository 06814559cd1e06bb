"""The sketch recursion (docs: The mathematics, The sketch), applied literally.

One record at a time, one ``d x d`` wiring and wrapper product per object:
``O(d^2)`` per object. Kept as the oracle the tests check the unrolled engine
against, and as the baseline of ``benchmarks/bench_sketch.py``.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._records import as_record


def reference_sketch(record, sketcher):
    """Sketch one record by the recursion ``s(theta)`` (docs: The mathematics).

    Parameters
    ----------
    record : ActivationRecord or dict
    sketcher : fitted RecursiveSketcher
        Supplies the random matrices.

    Returns
    -------
    sketch : ndarray of shape (sketch_dim,), float64
    """
    check_is_fitted(sketcher)
    record = as_record(record)
    matrices = sketcher._matrices()
    position = {obj_id: i for i, obj_id in enumerate(record.ids)}
    objects = record.objects
    memo = {}

    def sketch_of(i):
        if i not in memo:
            obj = objects[i]
            dim = obj.attributes.shape[0]
            value = (matrices.subspace(obj.module, dim) @ np.append(obj.attributes, 1.0)
                     + matrices.node(obj.module, obj.slot, dim) @ obj.attributes)
            if obj.inputs:
                consumed = sum(objects[position[c]].weight * sketch_of(position[c])
                               for c in obj.inputs)
                value = value + matrices.wiring(obj.module) @ consumed
            wrapper = matrices.wrapper_matrix(obj.module)
            memo[i] = value if wrapper is None else 0.5 * (value + wrapper @ value)
        return memo[i]

    total = np.zeros(matrices.sketch_dim)
    for root in record.roots:
        total += objects[position[root]].weight * sketch_of(position[root])
    return total
