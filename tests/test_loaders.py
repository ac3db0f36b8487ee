"""Data sources: KSDD2, labelled and unlabelled folders, MVTec AD, ELPV, and open_source."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustsdd._errors import ConfigError, DataError
from robustsdd.data import (
    DEFECTIVE,
    GOOD,
    UNKNOWN,
    load_folder,
    load_ksdd2,
    load_mvtec,
    load_unlabeled,
    open_source,
)


def _img(path: Path, value=128, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def _mask(path: Path, defect: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((4, 6), np.uint8)
    if defect:
        m[2, 3] = 255
    Image.fromarray(m).save(path)
    return path


# --------------------------------------------------------------------------- KSDD2


@pytest.fixture
def ksdd2(tmp_path):
    root = tmp_path / "ksdd2"
    for split, ids in {
        "train": {"10000": False, "10001": True, "10002": False},
        "test": {"20000": True, "20001": False},
    }.items():
        for i, defect in ids.items():
            _img(root / split / f"{i}.png")
            _mask(root / split / f"{i}_GT.png", defect)
    return root


def test_ksdd2_labels_from_masks(ksdd2):
    train = load_ksdd2(ksdd2)
    assert train.names == ["train/10000.png", "train/10001.png", "train/10002.png"]
    assert train.labels.tolist() == [GOOD, DEFECTIVE, GOOD]
    assert train.items[1] == ksdd2 / "train" / "10001.png"
    assert train.masks[1] == ksdd2 / "train" / "10001_GT.png"
    assert train.source == "ksdd2:train"
    assert train.rgb(0).shape == (4, 6, 3)
    test = load_ksdd2(ksdd2, "test")
    assert test.labels.tolist() == [DEFECTIVE, GOOD] and (test.n_good, test.n_defective) == (1, 1)


def test_ksdd2_errors(ksdd2, tmp_path):
    with pytest.raises(ConfigError):
        load_ksdd2(ksdd2, "val")
    with pytest.raises(DataError, match="split folder not found") as e:
        load_ksdd2(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "train") in str(e.value)
    _img(ksdd2 / "train" / "10003.png")  # no mask
    with pytest.raises(DataError, match="10003.png"):
        load_ksdd2(ksdd2)
    (ksdd2 / "empty" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match="no KSDD2 images"):
        load_ksdd2(ksdd2 / "empty", "test")


def test_ksdd2_broken_mask_named(ksdd2):
    (ksdd2 / "test" / "20001_GT.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="20001_GT.png"):
        load_ksdd2(ksdd2, "test")


# --------------------------------------------------------------------------- folders


@pytest.fixture
def labelled(tmp_path):
    root = tmp_path / "lab"
    _img(root / "good" / "g1.png")
    _img(root / "good" / "line2" / "g2.jpg")
    _img(root / "defect" / "d1.png")
    _img(root / "defect" / "sub" / "d2.png")
    _img(root / "bad" / "b1.bmp")
    _mask(root / "masks" / "d1_mask.png", True)
    _mask(root / "masks" / "nested" / "d2.png", True)
    (root / "notes.txt").write_text("ignored")
    return root


def test_load_folder_labels_names_masks(labelled):
    ds = load_folder(labelled)
    assert ds.names == [
        "good/g1.png",
        "good/line2/g2.jpg",
        "defect/d1.png",
        "defect/sub/d2.png",
        "bad/b1.bmp",
    ]
    assert ds.labels.tolist() == [GOOD, GOOD, DEFECTIVE, DEFECTIVE, DEFECTIVE]
    assert ds.masks == [
        None,
        None,
        labelled / "masks" / "d1_mask.png",
        labelled / "masks" / "nested" / "d2.png",
        None,
    ]
    assert ds.rgb(1).shape == (4, 6, 3)


def test_load_folder_without_masks_and_defective_alias(tmp_path):
    _img(tmp_path / "good" / "a.png")
    _img(tmp_path / "defective" / "b.png")
    ds = load_folder(tmp_path)
    assert ds.masks is None and ds.labels.tolist() == [GOOD, DEFECTIVE]


def test_load_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_folder(tmp_path / "nope")
    _img(tmp_path / "good" / "a.png")
    with pytest.raises(DataError, match="good/ and one of defect/"):
        load_folder(tmp_path)
    (tmp_path / "defect").mkdir()
    with pytest.raises(DataError, match="no images") as e:
        load_folder(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "defect"))


def test_load_folder_ambiguous_masks(tmp_path):
    _img(tmp_path / "good" / "x.png")
    _img(tmp_path / "defect" / "x.png")
    _mask(tmp_path / "masks" / "x_mask.png", True)
    with pytest.raises(DataError, match="share stem"):
        load_folder(tmp_path)
    _mask(tmp_path / "masks" / "x.png", True)
    with pytest.raises(DataError, match="two masks"):
        load_folder(tmp_path)


def test_load_unlabeled(labelled, tmp_path):
    ds = load_unlabeled(labelled / "good")
    assert ds.names == ["g1.png", "line2/g2.jpg"]
    assert ds.labels.tolist() == [UNKNOWN, UNKNOWN] and ds.masks is None
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no images") as e:
        load_unlabeled(tmp_path / "void")
    assert str(e.value).startswith(str(tmp_path / "void"))


# --------------------------------------------------------------------------- MVTec


@pytest.fixture
def mvtec(tmp_path):
    base = tmp_path / "mvtec" / "bottle"
    for rel in [
        "train/good/000.png",
        "train/good/001.png",
        "test/good/000.png",
        "test/crack/000.png",
        "test/crack/001.png",
        "test/broken_large/000.png",
    ]:
        _img(base / rel)
    _mask(base / "ground_truth" / "crack" / "000_mask.png", True)
    _mask(base / "ground_truth" / "crack" / "001_mask.png", True)
    _mask(base / "ground_truth" / "broken_large" / "000_mask.png", True)
    return tmp_path / "mvtec"


def test_mvtec_splits(mvtec):
    train = load_mvtec(mvtec, "bottle")
    assert train.names == ["train/good/000.png", "train/good/001.png"]
    assert train.labels.tolist() == [GOOD, GOOD] and train.masks == [None, None]
    test = load_mvtec(mvtec, "bottle", "test")
    assert test.names == [
        "test/broken_large/000.png",
        "test/crack/000.png",
        "test/crack/001.png",
        "test/good/000.png",
    ]
    assert test.labels.tolist() == [DEFECTIVE, DEFECTIVE, DEFECTIVE, GOOD]
    gt = mvtec / "bottle" / "ground_truth"
    assert test.masks == [
        gt / "broken_large" / "000_mask.png",
        gt / "crack" / "000_mask.png",
        gt / "crack" / "001_mask.png",
        None,
    ]
    assert test.items[1] == mvtec / "bottle" / "test" / "crack" / "000.png"
    both = load_mvtec(mvtec, "bottle", "all")
    assert both.names == train.names + test.names and both.source == "mvtec:bottle"


def test_mvtec_errors(mvtec):
    with pytest.raises(DataError, match=r"categories here: \['bottle'\]"):
        load_mvtec(mvtec, "cable")
    with pytest.raises(ConfigError):
        load_mvtec(mvtec, "bottle", "val")


# --------------------------------------------------------------------------- ELPV


@pytest.fixture(scope="module")
def elpv():
    pytest.importorskip("elpv_dataset")
    from robustsdd.data import load_elpv

    return load_elpv


def test_elpv_counts(elpv):
    mono, poly = elpv("mono"), elpv("poly")
    assert (mono.n_good, mono.n_defective) == (588, 313)
    assert (poly.n_good, poly.n_defective) == (920, 402)
    both = elpv("both")
    assert (both.n_good, both.n_defective) == (1508, 715)
    unsure = elpv("mono", include_uncertain=True)  # 1/3 -> good, 2/3 -> defective
    assert (unsure.n_good, unsure.n_defective) == (588 + 117, 313 + 56)
    assert len(elpv("both", include_uncertain=True)) == 2624


def test_elpv_items_names_meta(elpv):
    mono = elpv("mono")
    assert mono.source == "elpv:mono" and mono.meta["cell_type"] == "mono"
    assert mono.names[0] == "elpv/0000" and len(set(mono.names)) == len(mono)
    poly = elpv("poly")
    assert not set(mono.names) & set(poly.names)
    item = mono.items[0]
    assert isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.shape == (300, 300)
    assert not item.flags.writeable  # shared cache is protected
    assert mono.rgb(0).shape == (300, 300, 3)
    probs = mono.meta["probabilities"]
    assert set(np.unique(probs)) == {0.0, 1.0}
    assert np.array_equal(probs == 1.0, mono.labels == DEFECTIVE)


def test_elpv_cached(elpv):
    a, b = elpv("mono"), elpv("both")
    assert np.shares_memory(a.items[0], b.items[0])


def test_elpv_bad_cell_type(elpv):
    with pytest.raises(ConfigError, match="cell_type"):
        elpv("amorphous")


# --------------------------------------------------------------------------- open_source


def test_open_source(ksdd2, labelled, mvtec):
    pool, test = open_source("ksdd2", ksdd2)
    assert pool.source == "ksdd2:train" and test.source == "ksdd2:test"
    pool, test = open_source("folder", labelled)
    assert len(pool) == 5 and test is None
    pool, test = open_source("mvtec", mvtec, category="bottle")
    assert len(pool) == 6 and test is None


def test_open_source_elpv(elpv):
    pool, test = open_source("elpv", cell_type="poly")
    assert pool.source == "elpv:poly" and test is None


def test_open_source_errors(tmp_path, mvtec):
    with pytest.raises(ConfigError, match="unknown data source"):
        open_source("imagenet", tmp_path)
    for kind in ("ksdd2", "folder", "mvtec"):
        with pytest.raises(ConfigError, match="root"):
            open_source(kind)
        with pytest.raises(ConfigError, match="does not exist"):
            open_source(kind, tmp_path / "missing", category="bottle")
    with pytest.raises(ConfigError, match="category"):
        open_source("mvtec", mvtec)
