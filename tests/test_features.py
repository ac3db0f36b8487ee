import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image

from robustsdd import ConfigError, DataError
from robustsdd._hashing import image_digest
from robustsdd.data import ImageSet
from robustsdd.features.backbones import (
    NATIVE_SIZE,
    OFFLINE_WEIGHTS,
    FeatureExtractor,
    create_classifier,
)
from robustsdd.features.cache import FeatureCache
from robustsdd.features.engines import MATCH_TOLERANCE, TorchEngine, check_match
from robustsdd.features.extract import Featurizer
from robustsdd.features.views import ViewSpec


def _imagenet_top1(model, rgb):
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = model((x - 0.5) / 0.5).softmax(1)[0]
    return int(probs.argmax()), float(probs.max())


def test_offline_weights_are_the_real_imagenet_weights():
    # scikit-learn ships china.jpg (a temple by a lake); the offline ImageNet weights call it
    # "boathouse" (449) with confidence; the same network with random weights does not.
    cls, p = _imagenet_top1(
        create_classifier("efficientnet_lite0", "offline"), load_sample_image("china.jpg")
    )
    assert cls == 449 and p > 0.3
    rand_cls, rand_p = _imagenet_top1(
        create_classifier("efficientnet_lite0", None), load_sample_image("china.jpg")
    )
    assert not (rand_cls == 449 and rand_p > 0.3)


# ImageNet classes of buildings: beacon, bell cote, boathouse, church, mosque, palace ...
_BUILDINGS = [437, 442, 449, 483, 497, 663, 698]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_offline_weights_are_the_real_imagenet_weights(name):
    # The centre square of china.jpg (a temple roof), at the backbone's native size, is a
    # "palace" (698) for Lite0, Lite1 and Lite2 alike, with most of the probability on
    # building classes; the same networks with random weights put almost none there.
    rgb = np.array(load_sample_image("china.jpg"))
    h, w = rgb.shape[:2]
    side = min(h, w)
    rgb = rgb[(h - side) // 2 :][:side, (w - side) // 2 :][:, :side]
    size = NATIVE_SIZE[name]
    for weights, expect_real in (("offline", True), (None, False)):
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        with torch.no_grad():
            probs = create_classifier(name, weights)((x - 0.5) / 0.5).softmax(1)[0]
        on_buildings = float(probs[_BUILDINGS].sum())
        if expect_real:
            assert int(probs.argmax()) == 698 and on_buildings > 0.4, (name, on_buildings)
        else:
            assert on_buildings < 0.1, (name, on_buildings)


def test_offline_backbones_and_their_native_sizes():
    from robustsdd.recipes import make_featurizer

    lites = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert set(OFFLINE_WEIGHTS) == lites
    fx = FeatureExtractor("efficientnet_lite2", "offline", stages=(2, 3, -1))
    assert fx.channels == [48, 120, 352] and fx.weights_kind == "offline"
    assert fx.weights_id != FeatureExtractor("efficientnet_lite1", "offline").weights_id
    # The recipe feeds each backbone at the size its weights were trained at.
    assert make_featurizer("gaussian", backbone="efficientnet_lite1").views.size == 240
    assert make_featurizer("gaussian", backbone="efficientnet_lite2").views.size == 260
    assert make_featurizer("gaussian").views.size == 224
    larger = make_featurizer("gaussian", backbone="efficientnet_lite2", image_size=320)
    assert larger.views.size == 320
    with pytest.raises(ConfigError, match="efficientnet_lite1"):
        FeatureExtractor("resnet18", "offline")


def test_feature_trunk_holds_the_offline_weights():
    full = create_classifier("efficientnet_lite0", "offline")
    fx = FeatureExtractor("efficientnet_lite0", "offline", stages=(1, 2))
    assert torch.equal(fx.body.conv_stem.weight, full.conv_stem.weight)
    assert fx.channels == [24, 40] and fx.n_features == 64
    assert all(not p.requires_grad for p in fx.parameters())


def test_local_weights_file_and_wrong_architecture(tmp_path):
    good = tmp_path / "lite0.pt"
    torch.save(create_classifier("efficientnet_lite0", "offline").state_dict(), good)
    fx = FeatureExtractor("efficientnet_lite0", weights=str(good))
    ref = FeatureExtractor("efficientnet_lite0", "offline")
    x = torch.rand(1, 3, 64, 64)
    # Same tensors; normalisation differs (timm's ImageNet stats for a plain file).
    assert torch.equal(fx.body.conv_stem.weight, ref.body.conv_stem.weight)
    wrong = tmp_path / "wrong.pt"
    torch.save({"a.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(DataError, match="wrong.pt"):
        FeatureExtractor("efficientnet_lite0", weights=str(wrong))
    assert fx(x).shape == (1, 320)


def test_unknown_backbone_and_offline_for_other_names():
    with pytest.raises(ConfigError, match="unknown backbone"):
        FeatureExtractor("no_such_net", weights=None)
    with pytest.raises(ConfigError, match="offline"):
        FeatureExtractor("resnet18", weights="offline")


def test_view_spec_rotations_and_flips_are_exact():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[0, 0] = 255  # top-left marker
    spec = ViewSpec(size=20, scales=(1.0,), rotations=(0, 90), flips=True)
    views = torch.stack(spec.make(rgb))
    assert views.shape == (4, 3, 20, 20)
    assert views[0, 0, 0, 0] == 1.0  # original
    assert views[1, 0, 0, -1] == 1.0  # mirrored: marker top-right
    assert views[2, 0, -1, 0] == 1.0  # rotated 90° counter-clockwise: marker bottom-left
    assert views[3, 0, -1, -1] == 1.0  # rotated then mirrored


def test_view_spec_centre_crops_to_square():
    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, 10:20] = 255  # the centre square is white, the sides black
    spec = ViewSpec(size=16, scales=(1.0,), rotations=(0,), flips=False, geometry="crop")
    x = spec.prepare(rgb)
    assert x.shape == (3, 16, 16) and torch.allclose(x, torch.ones_like(x))


def test_view_spec_rejects_bad_settings():
    with pytest.raises(ConfigError):
        ViewSpec(size=4)
    with pytest.raises(ConfigError):
        ViewSpec(rotations=())
    with pytest.raises(ConfigError):
        ViewSpec(size=32, scales=(0.1,))


def test_featurizer_shapes_and_views_are_distinct(tiny_images, tiny_views):
    fz = Featurizer(weights=None, views=tiny_views, cache_dir=False, progress=False)
    X = fz.transform(tiny_images)
    assert X.shape == (5, 4, 2 * 320) and X.dtype == np.float32
    assert np.all(np.isfinite(X))
    assert not np.allclose(X[0, 0], X[0, 2])  # a rotation changes random-weight features


def test_channels_last_matches_eager(tiny_images, tiny_views):
    a = Featurizer(
        weights=None,
        views=tiny_views,
        cache_dir=False,
        channels_last=True,
        engine="torch",
        progress=False,
    ).transform(tiny_images)
    b = Featurizer(
        weights=None,
        views=tiny_views,
        cache_dir=False,
        channels_last=False,
        engine="torch",
        progress=False,
    ).transform(tiny_images)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_onnxruntime_engine_matches_pytorch_and_is_the_default(tiny_images, tiny_views):
    fast = Featurizer(weights=None, views=tiny_views, cache_dir=False, progress=False)
    slow = Featurizer(
        weights=None, views=tiny_views, cache_dir=False, engine="torch", progress=False
    )
    assert fast.engine_name == "onnxruntime" and slow.engine_name == "torch"
    a, b = fast.transform(tiny_images), slow.transform(tiny_images)
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= MATCH_TOLERANCE * max(1.0, scale)
    # Same engine, same numbers, every time.
    again = Featurizer(weights=None, views=tiny_views, cache_dir=False, progress=False)
    np.testing.assert_array_equal(again.transform(tiny_images), a)


def test_engine_is_part_of_the_cache_key(tmp_path, tiny_images, tiny_views):
    fast = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    fast.transform(tiny_images)
    slow = Featurizer(
        weights=None, views=tiny_views, cache_dir=tmp_path, engine="torch", progress=False
    )
    slow.transform(tiny_images)
    assert fast.config_key != slow.config_key
    assert slow.n_computed == len(tiny_images)  # not served the other engine's features


def test_auto_engine_falls_back_to_pytorch_without_onnxruntime(
    monkeypatch, tiny_images, tiny_views
):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    auto = Featurizer(weights=None, views=tiny_views, cache_dir=False, progress=False)
    assert auto.engine_name == "torch"
    assert any("ONNX Runtime not used" in note for note in auto.notes)
    assert auto.transform(tiny_images).shape[0] == len(tiny_images)
    strict = Featurizer(
        weights=None, views=tiny_views, cache_dir=False, engine="onnxruntime", progress=False
    )
    with pytest.raises(ConfigError, match="onnxruntime engine cannot be used"):
        strict.engine_name


def test_engine_that_disagrees_with_pytorch_is_refused():
    extractor = FeatureExtractor("efficientnet_lite0", weights=None)
    reference = TorchEngine(extractor)

    class Off:
        name = "off"

        def __call__(self, x):
            return reference(x) + 1e-2  # 1e-2 off: far above the tolerance

    assert check_match(reference, reference) == 0.0
    with pytest.raises(ConfigError, match="differ from PyTorch"):
        check_match(Off(), reference)
    with pytest.raises(ConfigError, match="unknown engine"):
        Featurizer(weights=None, engine="tensorrt")


def test_second_extraction_reads_the_cache_and_changed_image_misses(
    tmp_path, tiny_images, tiny_views
):
    fz = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    first = fz.transform(tiny_images)
    assert fz.n_computed == 5 and fz.cache.hits == 0

    again = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    second = again.transform(tiny_images)
    assert again.n_computed == 0 and again.cache.hits == 5
    np.testing.assert_array_equal(first, second)

    changed = tiny_images.subset(range(5))
    changed.items[2] = changed.items[2].copy()
    changed.items[2][0, 0] ^= 1  # one pixel differs
    third = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    third.transform(changed)
    assert third.n_computed == 1 and third.cache.hits == 4

    other_views = Featurizer(
        weights=None,
        views=ViewSpec(size=32, scales=(1.0,), rotations=(0,)),
        cache_dir=tmp_path,
        progress=False,
    )
    other_views.transform(tiny_images)
    assert other_views.n_computed == 5  # views are part of the key


def test_renamed_image_hits_the_cache(tmp_path, tiny_images, tiny_views):
    Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False).transform(
        tiny_images
    )
    renamed = ImageSet(tiny_images.items, tiny_images.labels, [f"other{i}" for i in range(5)])
    fz = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    fz.transform(renamed)
    assert fz.n_computed == 0


def test_corrupted_cache_entry_is_detected_and_recomputed(tmp_path, tiny_images, tiny_views):
    fz = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    first = fz.transform(tiny_images)
    path = fz.cache.path_for(image_digest(tiny_images.rgb(0)), fz.config_key)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    again = Featurizer(weights=None, views=tiny_views, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.transform(tiny_images), first)
    assert again.cache.corrupt == 1 and again.n_computed == 1


def test_cache_get_put_roundtrip(tmp_path):
    cache = FeatureCache(tmp_path)
    assert cache.get("abcd", "cfg") is None and cache.misses == 1
    cache.put("abcd", "cfg", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(cache.get("abcd", "cfg"), np.arange(6).reshape(2, 3))
    assert cache.get("abcd", "other-cfg") is None
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary files left behind
