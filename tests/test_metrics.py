import numpy as np
import pytest
from PIL import Image

from robustsdd import DataError
from robustsdd.data import ImageSet
from robustsdd.data.masks import view_mask, view_masks
from robustsdd.metrics import detection_metrics, pixel_auroc, removal_metrics, score_summary


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
    assert (m["removed_good"], m["removed_defective"], m["kept_good"], m["kept_defective"]) == (
        1,
        2,
        2,
        1,
    )
    assert m["removal_precision"] == 2 / 3 and m["removal_recall"] == 2 / 3


def test_score_summary_per_label():
    s = score_summary([1, 2, 3, 10], [0, 0, 0, 1])
    assert s["good"]["median"] == 2 and s["defective"]["max"] == 10 and s["all"]["n"] == 4


def test_pixel_auroc_by_hand():
    masks = np.zeros((2, 2, 2), bool)
    masks[1, 0, 0] = True  # one defect pixel of 8
    maps = np.array([[[0.1, 0.2], [0.3, 0.9]], [[0.8, 0.0], [0.0, 0.0]]])
    # The defect pixel (0.8) outranks 6 of the 7 normal pixels (all but 0.9).
    assert pixel_auroc(masks, maps) == pytest.approx(6 / 7)
    assert np.isnan(pixel_auroc(np.zeros((1, 2, 2), bool), maps[:1]))
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_auroc(masks, maps[:1])


def test_view_mask_follows_the_view_geometry(tmp_path):
    # A 4x6 mask: the centre square is columns 1..4; the defect at column 0 is cropped away.
    mask = np.zeros((4, 6), np.uint8)
    mask[0, 0] = 255
    mask[1:3, 2:4] = 255
    path = tmp_path / "m_GT.png"
    Image.fromarray(mask).save(path)
    out = view_mask(path, 8)
    assert out.dtype == bool and out.shape == (8, 8)
    assert np.flatnonzero(out.any(axis=0)).tolist() == [2, 3, 4, 5]  # columns 2..3 of 1..4, x2
    assert np.flatnonzero(out.any(axis=1)).tolist() == [2, 3, 4, 5]
    assert not view_mask(None, 8).any()
    images = ImageSet([np.zeros((4, 6, 3), np.uint8)] * 2, [0, 1], ["a", "b"], masks=[None, path])
    stacked = view_masks(images, 8)
    assert stacked.shape == (2, 8, 8) and not stacked[0].any() and stacked[1].sum() == 16
    assert view_masks(ImageSet([mask], [0], ["a"]), 8) is None
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match="bad.png: cannot read mask"):
        view_mask(tmp_path / "bad.png", 8)
