"""fit_folder → model folder → Model.load → predict: the inspector's workflow in Python."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import read_rows
from robustsdd import (
    ConfigError,
    Featurizer,
    GaussianDetector,
    Model,
    ModelFileError,
    ViewSpec,
    fit_folder,
)

# Random weights and images of several aspect ratios: with the whole image the pooled
# features of a random backbone differ more by input shape than by content, so these
# workflow tests squash to a square (the default geometry is tested with real weights
# in test_geometry.py and test_predict_cli.py).
TINY = dict(
    weights=None,
    views=ViewSpec(size=64, scales=(1,), rotations=(0, 180), geometry="squash"),
    cache_dir=False,
    progress=False,
    engine="torch",
)


def tiny_featurizer():
    return Featurizer(**TINY)


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*"))


@pytest.fixture(scope="module")
def fitted(planted_folder, tmp_path_factory):
    root, planted = planted_folder
    before = files_under(root)
    out = tmp_path_factory.mktemp("fit") / "model"
    model = fit_folder(
        root,
        out,
        detector="gaussian",
        featurizer=tiny_featurizer(),
        rule="fraction",
        fraction=0.1,
        progress=False,
    )
    assert files_under(root) == before  # nothing written into the training folder
    return root, planted, out, model


def test_planted_defects_rank_at_the_top_and_are_removed(fitted):
    root, planted, out, _ = fitted
    rows = read_rows(out / "train_scores.csv")
    assert len(rows) == 40
    assert set(rows[0]) == {
        "name",
        "label",
        "kept",
        "rank",
        "stage1",
        "removal",
        "calibration",
        "score",
    }
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 41))
    top = {r["name"] for r in rows if int(r["rank"]) <= len(planted)}
    assert top == set(planted)
    assert {r["name"] for r in rows if r["kept"] == "0"} == set(planted)
    # the rank follows the final score
    by_rank = sorted(rows, key=lambda r: int(r["rank"]))
    scores = [float(r["score"]) for r in by_rank]
    assert scores == sorted(scores, reverse=True)


def test_model_folder_is_complete_and_has_no_pickles(fitted):
    _, _, out, model = fitted
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "report.html",
        "robustsdd.json",
        "skipped.csv",
        "state.safetensors",
        "train_scores.csv",
    ]
    config = json.loads((out / "robustsdd.json").read_text())
    assert config["format"] == "robustsdd-model" and config["format_version"] == 2
    assert config["files"]["detector_state"] == "state.safetensors"
    feats = config["features"]
    assert feats["backbone"] == "efficientnet_lite0" and feats["views"]["size"] == 64
    assert feats["weights_id"] == "random-seed0" and feats["weights"] is None
    assert feats["engine"] == "torch" and feats["channels_last"] is True
    assert {"torch", "timm", "numpy", "robustsdd", "safetensors"} <= set(config["versions"])
    assert config["preprocessing"]["geometry"] == "squash"
    assert config["preprocessing"]["resize"].startswith("whole image resized to 64x64")
    assert config["detector"] == {"name": "gaussian", "localizes": False}
    assert config["cleaning"]["rule"] == "fraction"
    decision = config["decision"]
    assert decision["method"] == "quantile" and decision["quantile"] == 0.99
    assert decision["scores"] == "out_of_fold" and not decision["in_sample"]
    rows = read_rows(out / "train_scores.csv")
    assert all(r["calibration"] == "" for r in rows if r["kept"] == "0")
    oof = [float(r["calibration"]) for r in rows if r["kept"] == "1"]
    assert decision["n_scores"] == len(oof) == 36
    assert decision["threshold"] == pytest.approx(np.quantile(oof, 0.99), rel=1e-6)
    assert "out-of-fold" in decision["description"]
    assert model.threshold == decision["threshold"]


def test_predict_reproduces_training_scores(fitted):
    root, _, out, model = fitted
    loaded = Model.load(out, cache_dir=False)
    assert loaded.featurizer.engine == "torch"  # the engine the model was fitted with
    result = loaded.predict([root], batch_size=7)
    train = {r["name"]: float(r["score"]) for r in read_rows(out / "train_scores.csv")}
    assert len(result) == 40
    for rec in result:
        rel = Path(rec["path"]).relative_to(root).as_posix()
        assert rec["score"] == pytest.approx(train[rel], rel=1e-5)
        assert rec["label"] == ("anomalous" if rec["score"] > model.threshold else "normal")
    # scoring in other batches, with the in-memory model, or file by file: identical
    direct = model.predict(root, batch_size=64)
    np.testing.assert_array_equal(direct.scores, result.scores)
    some = result.paths[::9]
    np.testing.assert_array_equal(loaded.score(some), result.scores[::9])


def test_save_load_predict_is_identical(fitted, tmp_path):
    root, _, out, _ = fitted
    loaded = Model.load(out, cache_dir=False)
    first = loaded.predict(root / "line_b")
    loaded.save(tmp_path / "copy")
    again = Model.load(tmp_path / "copy", cache_dir=False)
    assert again.decision == loaded.decision
    second = again.predict(root / "line_b")
    np.testing.assert_array_equal(first.scores, second.scores)
    assert first.labels == second.labels and first.paths == second.paths


def test_threshold_override_and_result_files(fitted, tmp_path):
    root, _, out, _ = fitted
    model = Model.load(out, cache_dir=False)
    files = [root / "part_19.png", root / "line_a"]
    res = model.predict(files, threshold=-1e9)
    assert res.n_anomalous == len(res) == 11 and res.threshold_source == "given"
    default = model.predict(files)
    assert default.threshold == model.threshold and "quantile" in default.threshold_source
    default.write(tmp_path / "r.csv")
    default.write(tmp_path / "r.json")
    rows = read_rows(tmp_path / "r.csv")
    assert [r["path"] for r in rows] == default.paths and set(rows[0]) == {"path", "score", "label"}
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["threshold"] == model.threshold and len(data["results"]) == 11
    assert data["n_anomalous"] == default.n_anomalous
    with pytest.raises(ConfigError, match="csv"):
        default.write(tmp_path / "r.txt")


def test_rule_none_calibrates_the_threshold_out_of_fold(planted_folder, tmp_path):
    root, _ = planted_folder
    model = fit_folder(
        root,
        tmp_path / "m",
        detector=GaussianDetector(),
        rule="none",
        featurizer=tiny_featurizer(),
        n_folds=4,
        report=False,
    )
    rows = read_rows(tmp_path / "m" / "train_scores.csv")
    assert set(rows[0]) == {"name", "label", "kept", "rank", "calibration", "score"}
    assert all(r["kept"] == "1" for r in rows)
    oof = [float(r["calibration"]) for r in rows]
    # each image scored by a model that did not see it: above its in-sample score
    assert all(o > float(r["score"]) for o, r in zip(oof, rows))
    assert model.decision["scores"] == "out_of_fold" and not model.decision["in_sample"]
    assert model.threshold == pytest.approx(np.quantile(oof, 0.99), rel=1e-6)
    assert not (tmp_path / "m" / "report.html").exists()


def test_rule_none_with_removal_scores_uses_final_scores_and_warns(planted_folder, tmp_path):
    root, _ = planted_folder
    model = fit_folder(
        root,
        tmp_path / "m",
        detector=GaussianDetector(),
        rule="none",
        featurizer=tiny_featurizer(),
        decision_scores="removal",
        decision_quantile=0.5,
    )
    rows = read_rows(tmp_path / "m" / "train_scores.csv")
    assert set(rows[0]) == {"name", "label", "kept", "rank", "score"}
    assert model.threshold == pytest.approx(np.median([float(r["score"]) for r in rows]), rel=1e-6)
    assert model.decision["in_sample"] and "in-sample" in model.decision["description"]
    assert any("too low" in note for note in model.info["notes"])
    assert "too low" in (tmp_path / "m" / "report.html").read_text()


def test_fit_folder_takes_the_data_driven_cleaning_settings(planted_folder, tmp_path):
    root, planted = planted_folder
    model = fit_folder(
        root,
        tmp_path / "m",
        detector="gaussian",
        featurizer=tiny_featurizer(),
        rule="auto",
        z=2.5,
        scoring="ensemble",
        n_members=2,
        rounds=2,
        decision_scores="removal",
        report=False,
    )
    assert model.info["cleaning"] == {
        "rule": "auto",
        "threshold": 1.5,
        "fraction": 0.1,
        "min_size": 0.8,
        "scoring": "ensemble",
        "n_folds": 5,
        "min_keep": 0.5,
        "z": 2.5,
        "fdr": 0.2,
        "n_members": 2,
        "rounds": 2,
    }
    assert any(
        "auto cut: drop scores above median + 2.5 robust SD" in note for note in model.info["notes"]
    )


def test_removal_decision_scores_after_cleaning(fitted, planted_folder, tmp_path):
    root, planted = planted_folder
    model = fit_folder(
        root,
        tmp_path / "m",
        detector="gaussian",
        featurizer=tiny_featurizer(),
        rule="fraction",
        fraction=0.1,
        decision_scores="removal",
    )
    rows = read_rows(tmp_path / "m" / "train_scores.csv")
    assert "calibration" not in rows[0]
    assert {r["name"] for r in rows if r["kept"] == "0"} == set(planted)
    kept_removal = [float(r["removal"]) for r in rows if r["kept"] == "1"]
    assert model.decision["scores"] == "removal" and model.decision["n_scores"] == 36
    assert model.threshold == pytest.approx(np.quantile(kept_removal, 0.99), rel=1e-6)
    assert "out-of-fold removal-stage" in model.decision["description"]  # fit's default
    # the same removal and final model as with the default decision scores
    default = read_rows(fitted[2] / "train_scores.csv")
    assert [r["score"] for r in rows] == [r["score"] for r in default]
    # one histogram, with the decision threshold drawn on the removal scores
    assert (tmp_path / "m" / "report.html").read_text().count('class="histogram"') == 1
    assert (fitted[2] / "report.html").read_text().count('class="histogram"') == 2


def test_output_folder_is_checked_before_any_work(planted_folder, tmp_path):
    root, _ = planted_folder
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a robustsdd model"):
        fit_folder(root, foreign, detector="gaussian", featurizer=tiny_featurizer())
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="inside the training images"):
        fit_folder(root, root / "model", detector="gaussian", featurizer=tiny_featurizer())
    assert not (root / "model").exists()
    with pytest.raises(ConfigError, match="decision quantile"):
        fit_folder(
            root,
            tmp_path / "m",
            detector="gaussian",
            featurizer=tiny_featurizer(),
            decision_quantile=1.5,
        )


# ---------------------------------------------------------------------------------------------
# damaged, foreign and incompatible model folders
def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _set_file(key, value):
    def edit(m):
        data = json.loads((m / "robustsdd.json").read_text())
        data["files"][key] = value
        (m / "robustsdd.json").write_text(json.dumps(data))

    return edit


def _wrong_tensors(m):
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 3)}, str(m / "state.safetensors"))


def _link_out(m):
    outside = m.parent / "elsewhere.safetensors"
    shutil.copy(m / "state.safetensors", outside)
    (m / "link.safetensors").symlink_to(outside)
    _set_file("detector_state", "link.safetensors")(m)


def _features(m, **changes):
    data = json.loads((m / "robustsdd.json").read_text())
    data["features"].update(changes)
    (m / "robustsdd.json").write_text(json.dumps(data))


DAMAGE = {
    "config missing": (lambda m: (m / "robustsdd.json").unlink(), "robustsdd.json: missing"),
    "config garbled": (
        lambda m: (m / "robustsdd.json").write_text('{"format": "robustsdd-mo'),
        "robustsdd.json: not valid JSON",
    ),
    "config binary": (
        lambda m: (m / "robustsdd.json").write_bytes(b"\xff\xfe\x00garbage"),
        "robustsdd.json: not valid JSON",
    ),
    "foreign json": (
        lambda m: (m / "robustsdd.json").write_text(
            json.dumps({"_class_name": "UNet2DModel", "sample_size": 64})
        ),
        "foreign JSON",
    ),
    "json list": (lambda m: (m / "robustsdd.json").write_text("[1, 2]"), "foreign JSON"),
    "newer format": (
        lambda m: _edit_json(m / "robustsdd.json", format_version=3),
        "incompatible version",
    ),
    "format 1 model": (
        lambda m: (m / "robustsdd.json").write_text(
            json.dumps({"robustsdd_version": "0.0.9", "features": {}})
        ),
        "incompatible version",
    ),
    "detector config of format 1": (
        lambda m: _edit_json(m / "config.json", format_version=1),
        "config.json: model format version 1",
    ),
    "detector config foreign": (
        lambda m: (m / "config.json").write_text('{"a": 1}'),
        "config.json: not a robustsdd detector config",
    ),
    "state missing": (lambda m: (m / "state.safetensors").unlink(), "state.safetensors: missing"),
    "state garbled": (
        lambda m: (m / "state.safetensors").write_bytes(b"\x00" * 8 + b"junk"),
        "state.safetensors: not a readable safetensors file",
    ),
    "state truncated": (
        lambda m: (m / "state.safetensors").write_bytes(
            (m / "state.safetensors").read_bytes()[:100]
        ),
        "state.safetensors",
    ),
    "state has wrong tensors": (_wrong_tensors, "state.safetensors: does not fit"),
    "path escapes": (
        _set_file("detector_state", "../other/state.safetensors"),
        "outside the model folder",
    ),
    "absolute path": (_set_file("detector_config", "/etc/passwd"), "outside the model folder"),
    "path through a link": (_link_out, "through a link"),
    "threshold not a number": (
        lambda m: _edit_json(m / "robustsdd.json", decision={"threshold": "high"}),
        "decision.threshold",
    ),
    "other backbone weights": (
        lambda m: _features(m, weights_id="file:0123456789abcdef"),
        "differ from those the model was trained with",
    ),
    "features missing": (
        lambda m: _edit_json(m / "robustsdd.json", features=None),
        "features is missing",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_bad_model_folders_give_a_clear_error_naming_the_file(fitted, tmp_path, case):
    _, _, out, _ = fitted
    damage, message = DAMAGE[case]
    model_dir = tmp_path / "model"
    shutil.copytree(out, model_dir)
    damage(model_dir)
    with pytest.raises(ModelFileError, match=message.replace(".", r"\.")) as exc:
        Model.load(model_dir, cache_dir=False)
    assert str(model_dir) in str(exc.value)


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelFileError, match="missing"):
        Model.load(tmp_path / "nothing")


def test_detector_files_are_safetensors_with_a_version_check(tmp_path):
    from robustsdd import load_detector

    det = GaussianDetector().fit(np.random.default_rng(0).normal(size=(20, 2, 4)))
    folder = det.save(tmp_path / "det")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "state.safetensors"]
    assert json.loads((folder / "config.json").read_text())["format_version"] == 2
    (folder / "state.safetensors").rename(folder / "state.pt")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFileError, match="before format version 2"):
        load_detector(folder)


def test_backbone_weights_from_a_file_travel_inside_the_model_folder(planted_folder, tmp_path):
    import torch

    from robustsdd.features import create_classifier

    root, _ = planted_folder
    weights = tmp_path / "elsewhere" / "backbone.pt"
    weights.parent.mkdir()
    torch.save(create_classifier("efficientnet_lite0", None).state_dict(), weights)
    fz = Featurizer(**{**TINY, "weights": str(weights)})
    model = fit_folder(
        root / "line_a",
        tmp_path / "m",
        detector="gaussian",
        featurizer=fz,
        rule="none",
        n_folds=2,
        report=False,
    )
    text = (tmp_path / "m" / "robustsdd.json").read_text()
    assert str(tmp_path) not in text  # no path outside the model folder
    feats = json.loads(text)["features"]
    assert feats["weights"] == "file" and feats["weights_file"] == "backbone.safetensors"
    assert feats["weights_origin"]["name"] == "backbone.pt"
    shutil.rmtree(weights.parent)  # the model no longer needs the original
    loaded = Model.load(tmp_path / "m", cache_dir=False)
    train = [float(r["score"]) for r in read_rows(tmp_path / "m" / "train_scores.csv")]
    np.testing.assert_allclose(loaded.predict(root / "line_a").scores, train, rtol=1e-5)
    assert model.featurizer.weights == str(weights)


@pytest.mark.parametrize(
    "settings, why",
    [
        # drops 16 of 40: plausible to the guard, but more than 30 % of the folder
        ({"rule": "fraction", "fraction": 0.4}, "more than 30 %"),
        # wants to drop 90 %; the guard keeps half
        ({"rule": "fraction", "fraction": 0.9, "min_keep": 0.5}, "min-keep guard fired"),
    ],
)
def test_an_implausible_removal_is_a_warning_not_an_estimate(
    settings, why, planted_folder, tmp_path, capsys
):
    root, _ = planted_folder
    out = tmp_path / "m"
    model = fit_folder(
        root, out, detector="gaussian", featurizer=tiny_featurizer(), progress=False, **settings
    )
    n_removed = model.info["training"]["n_removed"]
    assert n_removed == {0.4: 16, 0.9: 20}[settings["fraction"]]
    warning = model.info["training"]["removal_warning"]
    assert why in warning and f"removed {n_removed} of 40 images" in warning
    assert "warning: the cleaning removed" in capsys.readouterr().err
    rows = read_rows(out / "train_scores.csv")
    assert all(r["warning"] == warning for r in rows)
    page = (out / "report.html").read_text()
    assert 'id="removal-warning"' in page and 'id="contamination"' not in page
    assert "not an estimate of the contamination" in page


def test_a_plausible_removal_has_no_warning(fitted):
    _, _, out, model = fitted  # fraction 0.1: 4 of 40
    assert model.info["training"]["removal_warning"] is None
    assert "warning" not in read_rows(out / "train_scores.csv")[0]
    page = (out / "report.html").read_text()
    assert 'id="contamination"' in page and "removal-warning" not in page


@pytest.mark.parametrize(
    "settings, scores",
    [
        # the fdr rule's own estimate, read off its out-of-fold removal scores
        ({"rule": "fdr", "scoring": "out_of_fold"}, "out-of-fold removal"),
        # no cleaning: read off the out-of-fold scores of the decision threshold
        ({"rule": "none"}, "out-of-fold"),
    ],
)
def test_fit_reports_the_contamination_estimate_with_its_interval(
    settings, scores, planted_folder, tmp_path
):
    root, planted = planted_folder
    out = tmp_path / "m"
    model = fit_folder(
        root, out, detector="gaussian", featurizer=tiny_featurizer(), progress=False, **settings
    )
    est = model.info["training"]["contamination_estimate"]
    assert 0 <= est["low"] <= est["share"] <= est["high"] <= 1 and est["level"] == 0.9
    page = (out / "report.html").read_text()
    assert f'<span id="contamination">{100 * est["share"]:.1f}</span>' in page
    assert 'id="contamination-interval"' in page and f"read off the {scores} scores" in page
    if settings["rule"] == "fdr":
        removed = {r["name"] for r in read_rows(out / "train_scores.csv") if r["kept"] == "0"}
        assert len(removed) <= len(planted) + 2  # few false removals at fdr 0.2
        assert any("estimated contamination" in n for n in model.info["notes"])


def test_in_sample_removal_scores_give_no_estimate(planted_folder, tmp_path):
    root, _ = planted_folder
    model = fit_folder(
        root,
        tmp_path / "m",
        detector="gaussian",
        featurizer=tiny_featurizer(),
        progress=False,
        rule="fraction",
        scoring="in_sample",
    )
    assert model.info["training"]["contamination_estimate"] is None
    page = (tmp_path / "m" / "report.html").read_text()
    assert "(the share removed)" in page
