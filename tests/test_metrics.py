import numpy as np

from robustsdd.metrics import detection_metrics, removal_metrics, score_summary


def test_auroc_by_hand():
    # 2 good, 2 defective; pairs (d, g) ranked correctly: (0.9>0.1, 0.9>0.4, 0.3>0.1) = 3 of 4.
    m = detection_metrics([0, 0, 1, 1], [0.1, 0.4, 0.9, 0.3])
    assert m["auroc"] == 0.75


def test_auroc_undefined_with_one_class():
    assert np.isnan(detection_metrics([0, 0], [0.1, 0.2])["auroc"])


def test_removal_counts_and_precision_recall():
    labels = np.array([0, 0, 0, 1, 1, 1])
    keep = np.array([True, False, True, False, False, True])
    m = removal_metrics(labels, keep)
    assert (m["removed_good"], m["removed_defective"], m["kept_good"], m["kept_defective"]) == (1, 2, 2, 1)
    assert m["removal_precision"] == 2 / 3 and m["removal_recall"] == 2 / 3


def test_score_summary_per_label():
    s = score_summary([1, 2, 3, 10], [0, 0, 0, 1])
    assert s["good"]["median"] == 2 and s["defective"]["max"] == 10 and s["all"]["n"] == 4
