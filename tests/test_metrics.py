import numpy as np
import pytest
from PIL import Image

from robustsdd import DataError
from robustsdd.data import ImageSet
from robustsdd.data.masks import image_masks, read_mask
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
    with pytest.raises(ValueError, match="2 masks but 1 anomaly maps"):
        pixel_auroc(masks, maps[:1])


def test_pixel_auroc_takes_images_of_different_sizes():
    masks = [np.array([[True, False]]), np.zeros((2, 1), bool)]
    maps = [np.array([[0.5, 0.1]]), np.array([[0.2], [0.6]])]
    # The defect pixel (0.5) outranks 2 of the 3 normal pixels (0.1, 0.2; not 0.6).
    assert pixel_auroc(masks, maps) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="image 1: mask"):
        pixel_auroc(masks, [maps[0], np.zeros((1, 2))])


def test_masks_are_read_whole_in_their_images_pixels(tmp_path):
    # A 4x6 mask, defect at column 0 (outside the centre square) kept: masks are never cropped.
    mask = np.zeros((4, 6), np.uint8)
    mask[0, 0] = 255
    mask[1:3, 2:4] = 255
    path = tmp_path / "m_GT.png"
    Image.fromarray(mask).save(path)
    out = read_mask(path, (4, 6, 3))
    assert out.dtype == bool and np.array_equal(out, mask > 0)
    assert not read_mask(None, (4, 6)).any() and read_mask(None, (4, 6)).shape == (4, 6)
    images = ImageSet(
        [np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)],
        [0, 1],
        ["a", "b"],
        masks=[None, path],
    )
    got = image_masks(images)
    assert [m.shape for m in got] == [(4, 6), (4, 6)] and not got[0].any() and got[1].sum() == 5
    assert image_masks(ImageSet([mask], [0], ["a"])) is None
    with pytest.raises(DataError, match="m_GT.png: the mask is 6x4 pixels, its image 8x4"):
        read_mask(path, (4, 8))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match="bad.png: cannot read mask"):
        read_mask(tmp_path / "bad.png", (4, 6))
