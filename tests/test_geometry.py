"""Whole-image geometry: every pixel seen, any shape and size, maps in the image's pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_rows
from robustsdd import Model, fit_folder
from robustsdd.data import ImageSet
from robustsdd.data.geometry import GEOMETRIES, map_to_image, placement, tile_starts
from robustsdd.detectors import detector_names
from robustsdd.features import Featurizer, ViewSpec
from robustsdd.features.patches import PatchFeaturizer, _unturn
from robustsdd.metrics import pixel_auroc
from robustsdd.recipes import make_detector, make_featurizer


def texture(rng, h, w):
    """A smooth grey texture (low-frequency noise), uint8 (h, w, 3)."""
    small = rng.normal(128, 18, size=(max(2, h // 8), max(2, w // 8))).astype(np.float32)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
    big = big + rng.normal(0, 3, size=(h, w))
    return np.dstack([big.clip(0, 255).astype(np.uint8)] * 3)


def plant(rgb, top, left, side):
    """A dark square defect with a bright rim, in place; returns its mask."""
    rgb[top : top + side, left : left + side] = 25
    rgb[top + side // 3 : top + 2 * side // 3, left + side // 3 : left + 2 * side // 3] = 240
    mask = np.zeros(rgb.shape[:2], bool)
    mask[top : top + side, left : left + side] = True
    return mask


# -- geometry arithmetic ----------------------------------------------------------------------
def test_placements_of_a_strip():
    assert placement(300, 900, "keep_aspect", 224).input_shape == (224, 672)
    assert placement(230, 630, "keep_aspect", 224).input_shape == (224, 608)  # KSDD2-like
    assert placement(100, 1000, "keep_aspect", 64, max_aspect=4).input_shape == (32, 256)
    crop = placement(300, 900, "crop", 224)
    assert crop.source == (0, 300, 300, 300) and crop.input_shape == (224, 224)
    assert placement(300, 900, "squash", 224).target == (0, 0, 224, 224)
    pad = placement(300, 900, "pad", 224)
    assert pad.target == (74, 0, 75, 224) and pad.source == (0, 0, 300, 900)
    assert placement(2000, 3000, "tile", 224).input_shape == (1984, 3008)  # about its own size
    assert placement(100, 150, "tile", 224).input_shape == (224, 352)  # at least one tile
    with pytest.raises(ValueError, match="unknown geometry"):
        placement(10, 10, "stretch", 224)


def test_tiles_cover_the_side_and_fall_on_the_grid():
    for length in (224, 448, 640, 2016):
        starts = tile_starts(length, 224, 56, 32)
        assert starts[0] == 0 and starts[-1] + 224 == length
        assert all(s % 32 == 0 for s in starts)
        assert all(b - a <= 224 - 56 + 32 for a, b in zip(starts, starts[1:]))  # overlap kept


@pytest.mark.parametrize("geometry", [g for g in GEOMETRIES if g != "tile"])
def test_a_map_drawn_back_lines_up_with_the_image_pixels(geometry):
    # An image of 96 x 240 with a marked square; the map is 1 exactly on the input pixels
    # that show the square, so drawn back it must cover the square (up to resampling).
    h, w = 96, 240
    mask = np.zeros((h, w), bool)
    mask[30:60, 110:150] = True  # inside the centre square too, so "crop" sees it
    where = placement(h, w, geometry, 64)
    ih, iw = where.input_shape
    amap = np.zeros((ih, iw))
    t, left, th, tw = where.target
    st, sl, sh, sw = where.source
    ys = (np.arange(ih) - t + 0.5) * sh / th + st - 0.5  # image row of each input row
    xs = (np.arange(iw) - left + 0.5) * sw / tw + sl - 0.5
    inside_y = (ys >= 30) & (ys <= 59) & (np.arange(ih) >= t) & (np.arange(ih) < t + th)
    inside_x = (xs >= 110) & (xs <= 149) & (np.arange(iw) >= left) & (np.arange(iw) < left + tw)
    amap[np.ix_(inside_y, inside_x)] = 1.0
    back = map_to_image(amap, where, (h, w))
    assert back.shape == (h, w)
    assert pixel_auroc([mask], [back]) > 0.98
    assert (back > 0.5)[mask].mean() > 0.85 and (back > 0.5)[~mask].mean() < 0.02


def test_crop_leaves_the_sides_at_the_map_minimum():
    where = placement(64, 256, "crop", 32)
    back = map_to_image(np.full((4, 4), 3.0), where, (64, 256))
    assert back.shape == (64, 256)
    assert np.all(back[:, :96] == 3.0) and np.all(back[:, 96:160] == 3.0)
    back = map_to_image(np.arange(16.0).reshape(4, 4), where, (64, 256))
    assert back[:, :90].max() == 0.0 and back[:, 100:150].max() > 5  # outside: the minimum


def test_views_of_a_rectangle_keep_every_pixel_and_swap_sides_when_turned():
    rgb = np.zeros((64, 256, 3), np.uint8)
    rgb[:, -8:] = 255  # a white band at the right end
    spec = ViewSpec(size=32, scales=(1,), rotations=(0, 90), flips=False)
    base, turned = spec.make(rgb)
    assert base.shape == (3, 32, 128) and turned.shape == (3, 128, 32)
    assert base[0, :, -2:].min() == 1.0  # the end of the strip is in the input
    crop = ViewSpec(size=32, scales=(1,), rotations=(0,), flips=False, geometry="crop")
    assert crop.make(rgb)[0].max() == 0.0  # the crop never sees the band
    pad = ViewSpec(size=32, scales=(1,), rotations=(0,), flips=False, geometry="pad")
    x = pad.make(rgb)[0]
    assert x.shape == (3, 32, 32) and x[0, 14:18, -1].min() > 0.5  # letterboxed, band kept


def test_unturning_a_view_grid_restores_the_image_orientation():
    grid = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    spec = ViewSpec(size=16, scales=(1,), rotations=(0, 90, 180, 270), flips=True)
    as_chw = torch.from_numpy(grid).permute(2, 0, 1)
    views = []
    for angle in spec.rotations:  # what ViewSpec.make does to an image, on the grid
        r = torch.rot90(as_chw, k=int(angle // 90), dims=(1, 2))
        views += [r, torch.flip(r, dims=(2,))]
    for view, turns in zip(views, spec.view_transforms()):
        back = _unturn(view.permute(1, 2, 0).numpy(), *turns)
        assert np.array_equal(back, grid)


def test_geometry_is_checked_and_part_of_the_cache_key():
    with pytest.raises(Exception, match="unknown geometry"):
        ViewSpec(geometry="stretch")
    with pytest.raises(Exception, match="max_aspect"):
        ViewSpec(max_aspect=0.5)
    with pytest.raises(Exception, match="needs patch features"):
        Featurizer(weights=None, views=ViewSpec(geometry="tile"), cache_dir=False)
    keys = {ViewSpec(geometry=g).key for g in GEOMETRIES}
    assert len(keys) == len(GEOMETRIES)
    assert ViewSpec(max_aspect=2).key != ViewSpec().key


# -- the planted defect at the end of a strip -------------------------------------------------
@pytest.fixture(scope="module")
def strips():
    """20 clean 64 x 256 strips to train on; a test strip with a defect in its outer third,
    its clean twin (the same strip without the defect) and 5 other clean strips."""
    rng = np.random.default_rng(0)
    train = [texture(rng, 64, 256) for _ in range(20)]
    clean = [texture(rng, 64, 256) for _ in range(6)]
    defective = clean[0].copy()
    plant(defective, 16, 214, 28)  # columns 214..241: far outside the centre square 96..159
    test = ImageSet([defective, *clean], [1] + [0] * 6, ["defect", "twin", *"abcde"])
    return ImageSet(train, [0] * 20, [f"t{i}" for i in range(20)]), test


@pytest.mark.parametrize("name", detector_names())
def test_a_defect_near_the_end_is_found_whole_and_missed_by_the_crop(name, strips):
    train, test = strips
    # Default settings except a small input (64 px) and, for DifferNet, fewer epochs.
    params = {"epochs": 8, "progress": False} if name == "differnet" else None
    scores = {}
    for geometry in ("keep_aspect", "crop"):
        fz = make_featurizer(
            name, image_size=64, geometry=geometry, cache_dir=False, progress=False
        )
        det = make_detector(name, params=params, progress=False)
        det.fit(fz.transform(train))
        scores[geometry] = det.decision_function(fz.transform(test))
    whole, crop = scores["keep_aspect"], scores["crop"]
    assert whole[0] > whole[1:].max(), f"{name}: whole image: {whole}"
    # The crop sees the defective strip exactly as its clean twin: the defect is invisible,
    # so it cannot score above every clean strip (its twin scores the same).
    assert crop[0] == pytest.approx(crop[1], rel=1e-5), f"{name}: crop: {crop}"


def test_the_default_featurizer_sees_the_whole_image():
    fz = make_featurizer("gaussian", weights="random")
    assert fz.views.geometry == "keep_aspect"
    assert make_featurizer("patchcore", weights="random").views.geometry == "keep_aspect"


# -- a folder of mixed sizes ------------------------------------------------------------------
SIZES = [(64, 64), (64, 160), (96, 64), (80, 200), (72, 90)]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """25 clean images of 5 sizes and aspect ratios; a defective test image with its mask."""
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("mixed")
    (root / "train").mkdir()
    for i in range(25):
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(texture(rng, h, w)).save(root / "train" / f"part_{i:02d}.png")
    test = texture(rng, 80, 200)
    mask = plant(test, 28, 90, 24)
    (root / "test").mkdir()
    Image.fromarray(test).save(root / "test" / "defect.png")
    Image.fromarray(texture(rng, 64, 160)).save(root / "test" / "clean.png")
    return root, mask


def fit_quietly(train_dir, out, **settings) -> Model:
    """``fit_folder`` at a 64 px input, no cleaning, cache, report or output; the model."""
    fit_folder(
        train_dir,
        out,
        image_size=64,
        rule="none",
        cache_dir=False,
        progress=False,
        report=False,
        log=lambda _: None,
        **settings,
    )
    return Model.load(out, cache_dir=False)


@pytest.mark.parametrize("name", ["gaussian", "knn", "patchcore", "ensemble"])
def test_a_mixed_size_folder_fits_and_predict_reproduces_the_scores(name, mixed_folder, tmp_path):
    root, _ = mixed_folder
    out = tmp_path / "model"
    model = fit_quietly(root / "train", out, detector=name)
    assert model.featurizer.views.geometry == "keep_aspect"
    train = {r["name"]: float(r["score"]) for r in read_rows(out / "train_scores.csv")}
    again = model.predict([root / "train"])
    assert len(again.paths) == len(train) == 25
    for path, score in zip(again.paths, again.scores):
        assert score == pytest.approx(train[path.split("/")[-1]], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "name, params",
    [
        # 25 small images: a 1 % bank is 30 patches
        ("patchcore", {"coreset_ratio": 0.5}),
        ("ensemble", {"member_params": {"patchcore": {"coreset_ratio": 0.5}}}),
    ],
)
def test_patch_maps_on_mixed_sizes_have_the_images_size_and_find_the_square(
    name, params, mixed_folder, tmp_path
):
    root, mask = mixed_folder
    model = fit_quietly(root / "train", tmp_path / "model", detector=name, detector_params=params)
    files = [root / "test" / "defect.png", root / "test" / "clean.png"]
    result = model.predict(files, heatmap_dir=tmp_path / "maps")
    assert result.scores[0] > result.scores[1]
    for heat, f in zip(result.heatmaps, files):
        with Image.open(heat) as a, Image.open(f) as b:
            assert a.size == b.size  # 200 x 80 and 160 x 64: the whole image
    maps = model.anomaly_maps(files)
    assert maps[0].shape == mask.shape and maps[1].shape == (64, 160)
    row, col = np.unravel_index(maps[0].argmax(), mask.shape)
    assert mask[row, col], f"hottest pixel ({row}, {col}) is outside the planted square"
    assert pixel_auroc([mask], [maps[0]]) > 0.95
    # The hottest patch over the views is the image's score (the ensemble's maps are its
    # patch member's, so that member's score); interpolation between cell centres can only
    # lower the map's peak a little.
    peak = result.scores[0]
    if name == "ensemble":
        peak = np.exp(model.detector.member_scores(model.features(files[:1]))["patchcore"][0])
    ratio = maps[0].max() / peak
    if name == "ensemble":
        # Its maps are exp(z) of the member's log distance over the scale of its out-of-fold
        # scores: in the member's own units (distances) the ratio is ratio ** scale.
        ratio = ratio ** model.detector.scale_[model.detector.member_names_.index("patchcore")]
    assert 0.95 < ratio <= 1 + 1e-6


def test_patch_features_of_mixed_sizes_are_padded_and_skipped():
    fz = PatchFeaturizer(
        weights=None,
        views=ViewSpec(size=32, scales=(1,), rotations=(0, 90), flips=False),
        cache_dir=False,
        progress=False,
        engine="torch",
    )
    rng = np.random.default_rng(0)
    imgs = ImageSet([texture(rng, 32, 32), texture(rng, 32, 96)], [0, 0], ["sq", "strip"])
    X = fz.transform(imgs)
    assert fz.image_grid((32, 96)) == (4, 12) and fz.image_grid((32, 32)) == (4, 4)
    assert X.shape == (2, 2 * 4 * 12, fz.n_features)
    assert np.isnan(X[0, 2 * 16 :]).all() and np.isfinite(X[0, : 2 * 16]).all()
    assert np.isfinite(X[1]).all()


def test_an_elongated_image_gets_a_note(tmp_path):
    fz = Featurizer(
        weights=None,
        views=ViewSpec(size=32, scales=(1,), rotations=(0,), flips=False),
        cache_dir=False,
        progress=False,
        engine="torch",
    )
    rng = np.random.default_rng(0)
    fz.transform(ImageSet([texture(rng, 20, 400), texture(rng, 32, 64)], [0, 0], ["a", "b"]))
    assert any("1 image(s) are more elongated than 1:4" in n for n in fz.notes)
    fz.transform(ImageSet([texture(rng, 200, 200)], [0], ["big"]))  # shrunk 6.25x to 32 px
    assert any("1 image(s) were shrunk more than 2x" in n for n in fz.notes)


def test_patch_denoising_matches_grids_of_different_sizes_by_relative_position():
    # 12 images: 6 with 4 patches (a 2x2 grid), 6 with 8 (2x4: the same rows, twice the
    # columns). Patches at the same relative place are alike; one patch of a large image is
    # an outlier and must be the one dropped at its position.
    from robustsdd import PatchCore

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 5  # one centre per cell of the common 2x2 grid
    X = np.full((12, 8, 6), np.nan, np.float32)
    for i in range(12):
        n = 4 if i < 6 else 8
        cells = np.arange(n) * 4 // n  # relative position: 2x4 cells (0,1)->0, (2,3)->1, ...
        X[i, :n] = centres[cells] + rng.normal(scale=0.1, size=(n, 6))
    X[9, 5] += 30  # image 9, patch 5: relative cell 2
    det = PatchCore(coreset="none", denoise="hard", denoise_fraction=0.09, denoise_k=3).fit(X)
    kept = det.denoise_kept_
    assert not kept[:6, 4:].any()  # padding is never kept
    assert not kept[9, 5] and kept[9, 4]  # its neighbour at the same relative cell stays
    assert np.isnan(det.denoise_scores_[0, 4:]).all()
    assert np.nanargmax(det.denoise_scores_) == 9 * 8 + 5
    # 18 patches at each of the 4 relative cells (6 + 2 x 6): floor(0.09 x 18) = 1 drop each.
    assert len(det.bank_) == kept.sum() == int(np.isfinite(X[:, :, 0]).sum()) - 4
    scores = det.decision_function(X)
    assert np.isfinite(scores).all() and scores.argmax() == 9


# -- tiles ------------------------------------------------------------------------------------
def test_tiles_stitch_one_grid_at_full_resolution():
    views = ViewSpec(size=64, scales=(1,), rotations=(0,), flips=False, geometry="tile")
    fz = PatchFeaturizer(weights=None, views=views, cache_dir=False, progress=False, engine="torch")
    rng = np.random.default_rng(1)
    big = texture(rng, 200, 300)  # -> 192 x 288 at stride-32 sides, 24 x 36 cells
    assert fz.image_grid(big.shape) == (24, 36)
    X = fz.transform(ImageSet([big], [0], ["big"]))
    assert X.shape == (1, 24 * 36, fz.n_features) and np.isfinite(X).all()
    # One tile that is the whole image gives the plain whole-image features.
    small = texture(rng, 64, 64)
    whole = PatchFeaturizer(
        weights=None,
        views=ViewSpec(size=64, scales=(1,), rotations=(0,), flips=False),
        cache_dir=False,
        progress=False,
        engine="torch",
    )
    one = ImageSet([small], [0], ["s"])
    np.testing.assert_allclose(fz.transform(one), whole.transform(one), rtol=1e-5, atol=1e-5)


# -- models saved before geometry existed -----------------------------------------------------
def test_a_model_saved_without_geometry_loads_as_the_centre_crop(mixed_folder, tmp_path):
    root, _ = mixed_folder
    out = tmp_path / "model"
    fit_quietly(root / "train", out, detector="gaussian", geometry="crop", weights="random")
    before = Model.load(out, cache_dir=False).score(root / "test")
    config = json.loads((out / "robustsdd.json").read_text())
    assert config["features"]["views"]["geometry"] == "crop"
    for key in ("geometry", "max_aspect"):  # what an earlier robustsdd wrote
        del config["features"]["views"][key]
    (out / "robustsdd.json").write_text(json.dumps(config))
    old = Model.load(out, cache_dir=False)
    assert old.featurizer.views.geometry == "crop"
    np.testing.assert_array_equal(old.score(root / "test"), before)


def test_sweep_scores_pixels_at_a_bounded_resolution_keeping_thin_defects():
    from robustsdd.experiments.sweep import _shrink_map, _shrink_mask, evaluation_shape

    assert evaluation_shape((1024, 1024)) == (512, 512)
    assert evaluation_shape((300, 900)) == (171, 512)
    assert evaluation_shape((230, 500)) == (230, 500)  # small images are scored as they are
    mask = np.zeros((1024, 1024), bool)
    mask[100:900, 301] = True  # a 1 px scratch
    small = _shrink_mask(mask, (512, 512))
    assert small[60:440, 150].all() and small.sum() == 400  # kept, about as long, 1 px wide
    amap = np.zeros((1024, 1024))
    amap[100:900, 300:302] = 1.0
    shrunk = _shrink_map(amap, (512, 512))
    assert pixel_auroc([small], [shrunk]) == pytest.approx(1.0)
