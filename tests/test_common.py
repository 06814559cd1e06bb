"""scikit-learn's common estimator checks, wherever they apply.

NetworkRecoveryDictionaryLearner fits on sketches (arrays): it runs every
check. RecursiveSketcher and SketchAttributeRecoverer fit on records (lists
of dicts), not arrays; their tags say so (``input_tags.two_d_array=False``,
``dict=True``), and ``parametrize_with_checks`` then yields no check at all.
So the checks that do not fit on arrays run here one by one; the ones that
fit on arrays are listed, each with the reason it cannot apply. Transforming arrays (the
recoverer's sketches: dtypes, shapes, feature names, set_output, pickling,
clone) is checked in test_recover.py; the sketcher's pipelines, model
selection and pickling in test_sketch.py and test_sklearn_integration.py.
"""

import pytest
from sklearn.exceptions import SkipTestWarning
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksketch import (
    NetworkRecoveryDictionaryLearner,
    RecursiveSketcher,
    SketchAttributeRecoverer,
)


@parametrize_with_checks([NetworkRecoveryDictionaryLearner(random_state=0)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


ESTIMATORS = [RecursiveSketcher(), SketchAttributeRecoverer()]

# Checks that never call fit: they hold for any input type.
APPLICABLE = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_mixin_order",
    "check_do_not_raise_errors_in_init_or_set_params",
]

# Checks that fit on random 2-D arrays, which are not records.
NOT_APPLICABLE = {
    "check_fit2d_1sample": "fit takes records, not arrays",
    "check_fit2d_1feature": "fit takes records, not arrays",
    "check_estimators_dtypes": "fit takes records; float32/64 output is tested "
                               "in test_sketch and test_recover",
    "check_transformer_general": "fit takes records",
    "check_fit_idempotent": "fit takes records; refit determinism is tested "
                            "with random_state in test_sketch",
    "check_n_features_in": "records have no n_features",
    "check_estimators_pickle": "fit takes records; pickling is tested in "
                               "test_sketch and test_recover",
    "check_set_output_transform": "fit takes records; set_output is tested in "
                                  "test_sketch and test_recover",
}


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", APPLICABLE)
def test_applicable_common_checks(estimator, check):
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_array_checks_are_skipped_for_record_input(estimator):
    # sklearn skips every array check for estimators whose tags declare a
    # non-array input: confirm it does so for ours, with its warning, and
    # that the checks named above exist (a renamed check would go unnoticed).
    with pytest.warns(SkipTestWarning, match="requires input"):
        checks = list(estimator_checks._yield_all_checks(estimator, legacy=True))
    assert checks == []
    assert all(hasattr(estimator_checks, name)
               for name in [*APPLICABLE, *NOT_APPLICABLE])
