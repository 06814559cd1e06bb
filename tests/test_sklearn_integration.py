"""The sketcher inside scikit-learn: pipelines, model selection, clustering."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.utils import get_tags

from sksketch import RecordBatch, RecursiveSketcher, make_activation_records


@pytest.fixture(scope="module")
def labelled_records():
    return make_activation_records(240, n_classes=3, class_sep=2.0, random_state=0)


def test_pipeline_fits_and_predicts(labelled_records):
    records, labels = labelled_records
    pipeline = Pipeline([("sketch", RecursiveSketcher(128, random_state=0)),
                         ("clf", LogisticRegression(max_iter=1000))])
    pipeline.fit(records[:160], labels[:160])
    accuracy = pipeline.score(records[160:], labels[160:])
    # Three classes with distinct output modules and mean attributes: a linear
    # model on the sketch separates them almost surely; chance is 1/3.
    assert accuracy >= 0.9
    assert pipeline.predict(records[:3]).shape == (3,)


def test_grid_search_over_sketch_dim_in_parallel(labelled_records):
    records, labels = labelled_records
    pipeline = Pipeline([("sketch", RecursiveSketcher(random_state=0)),
                         ("clf", LogisticRegression(max_iter=1000))])
    search = GridSearchCV(pipeline, {"sketch__sketch_dim": [8, 64]}, cv=3,
                          n_jobs=2).fit(records, labels)
    assert search.best_params_["sketch__sketch_dim"] in (8, 64)
    assert search.cv_results_["mean_test_score"].shape == (2,)
    assert search.best_score_ >= 0.9


def test_cross_validation_splits_a_record_batch(labelled_records):
    records, labels = labelled_records
    batch = RecordBatch.from_records(records)
    pipeline = make_pipeline(RecursiveSketcher(64, random_state=0),
                             LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipeline, batch, labels, cv=3)
    np.testing.assert_allclose(scores, cross_val_score(pipeline, records, labels,
                                                       cv=3))


@pytest.mark.parametrize("seed", [0, 2])
def test_kmeans_on_sketches_recovers_the_classes(seed):
    records, labels = make_activation_records(300, n_classes=3, class_sep=2.0,
                                              random_state=seed)
    # Cosine geometry: records differ in how many roots fired, i.e. in scale.
    pipeline = make_pipeline(RecursiveSketcher(256, random_state=seed), Normalizer(),
                             KMeans(3, n_init=10, random_state=0))
    predicted = pipeline.fit_predict(records)
    assert adjusted_rand_score(labels, predicted) >= 0.95


def test_tags_declare_record_input():
    tags = get_tags(RecursiveSketcher())
    assert not tags.input_tags.two_d_array and tags.input_tags.dict
    assert tags.requires_fit
