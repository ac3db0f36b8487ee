"""Real ELPV images through the real offline backbone, baseline and OSR, small N."""

import pytest

from robustsdd import Featurizer, GaussianDetector, OneShotRemoval, ViewSpec, differnet_cpu
from robustsdd.data import load_elpv, paper_split
from robustsdd.metrics import detection_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def elpv_features(tmp_path_factory):
    train, test = paper_split(
        load_elpv("mono"),
        n_train=40,
        contamination=0.2,
        n_test_good=25,
        n_test_defective=25,
        random_state=0,
    )
    fz = Featurizer(
        views=ViewSpec(size=160, scales=(1.0, 0.5), rotations=(0, 180), flips=True),
        cache_dir=tmp_path_factory.mktemp("cache"),
        progress=False,
    )
    assert fz.extractor.weights_kind == "offline"
    return train, test, fz.transform(train), fz.transform(test)


def test_gaussian_with_osr_on_real_data(elpv_features):
    train, test, X_train, X_test = elpv_features
    osr = OneShotRemoval(GaussianDetector(), scoring="held_out_views").fit(X_train)
    base = detection_metrics(test.labels, osr.baseline_detector_.decision_function(X_test))
    after = detection_metrics(test.labels, osr.decision_function(X_test))
    assert base["auroc"] > 0.75 and after["auroc"] > 0.75
    # Held-out-view scores rank the planted defective training images high.
    train_auroc = detection_metrics(train.labels, osr.removal_scores_)["auroc"]
    assert train_auroc > 0.75


def test_differnet_on_real_data(elpv_features):
    train, test, X_train, X_test = elpv_features
    det = differnet_cpu(epochs=15, random_state=0).fit(X_train)
    auroc = detection_metrics(test.labels, det.decision_function(X_test))["auroc"]
    assert auroc > 0.7
