"""One library core: every default comes from the recipes, so the command line and Python agree.

The identity test fits every registered detector twice on the same folder, once with
`robustsdd fit` and once with `fit_folder`, and requires the two model folders to be the
same byte for byte.
"""

from pathlib import Path

import numpy as np
import pytest

from conftest import read_rows
from robustsdd import (
    ConfigError,
    Featurizer,
    Model,
    PatchCore,
    PatchFeaturizer,
    detector_names,
    fit_folder,
)
from robustsdd.cli import main
from robustsdd.recipes import cleaning_settings, default_cleaning, make_components, paper_cleaning

# Small settings per detector, spelled for both front ends: (CLI flags, fit_folder keywords).
TINY = {
    "differnet": (
        ["--epochs", "2", "--finetune-epochs", "1"],
        {"detector_params": {"epochs": 2, "finetune_epochs": 1}},
    ),
    "gaussian": ([], {}),
    "knn": ([], {}),
    "patchcore": ([], {}),
    "ensemble": ([], {}),
}


def test_every_registered_detector_has_small_settings_here():
    assert set(TINY) == set(detector_names())


def _folder_bytes(folder):
    from safetensors.torch import load_file

    out = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".safetensors":  # tensors compared, not the header's key order
            out[path.name] = {
                k: (str(v.dtype), tuple(v.shape), v.numpy().tobytes())
                for k, v in load_file(path).items()
            }
        else:
            out[path.name] = path.read_bytes()
    return out


@pytest.mark.parametrize("name", sorted(TINY))
def test_cli_fit_and_fit_folder_write_the_same_model_folder(name, planted_folder, tmp_path):
    root, _ = planted_folder
    flags, keywords = TINY[name]
    cli_out, py_out = tmp_path / "cli", tmp_path / "python"
    assert (
        main(
            [
                "fit",
                str(root),
                "--out",
                str(cli_out),
                "--detector",
                name,
                "--weights",
                "random",
                "--image-size",
                "32",
                "--quiet",
                *flags,
            ]
        )
        == 0
    )
    model = fit_folder(
        root,
        py_out,
        detector=name,
        weights="random",
        image_size=32,
        progress=False,
        log=lambda msg: None,
        **keywords,
    )
    cli_files, py_files = _folder_bytes(cli_out), _folder_bytes(py_out)
    assert set(cli_files) == {
        "robustsdd.json",
        "config.json",
        "state.safetensors",
        "train_scores.csv",
        "report.html",
        "skipped.csv",
    }
    assert cli_files.keys() == py_files.keys()
    for file in cli_files:
        assert cli_files[file] == py_files[file], f"{name}: {file} differs"
    # The recipe's cleaning is what both ran.
    assert model.info["cleaning"]["rule"] == default_cleaning(name)["rule"]
    if default_cleaning(name)["rule"] != "none":
        assert model.info["cleaning"]["scoring"] == default_cleaning(name)["scoring"]


def test_patchcore_model_folder_loads_with_its_patch_features(planted_folder, tmp_path):
    """A saved PatchCore model scores with patch features again: predict gives each training
    image the score train_scores.csv lists for it."""
    root, _ = planted_folder
    model = fit_folder(
        root,
        tmp_path / "m",
        detector="patchcore",
        weights="random",
        image_size=32,
        rule="none",
        progress=False,
        log=lambda msg: None,
    )
    assert isinstance(model.featurizer, PatchFeaturizer)
    loaded = Model.load(tmp_path / "m")
    assert isinstance(loaded.featurizer, PatchFeaturizer)
    assert isinstance(loaded.detector, PatchCore)
    rows = read_rows(tmp_path / "m" / "train_scores.csv")[:6]
    scores = loaded.score([root / row["name"] for row in rows])
    np.testing.assert_allclose(scores, [float(r["score"]) for r in rows], rtol=1e-6)


def test_recipes_pick_features_and_cleaning_by_what_the_detector_reads():
    pooled = make_components("gaussian", weights="random")
    assert type(pooled.featurizer) is Featurizer
    assert pooled.featurizer.views.n_views == 8 and pooled.featurizer.views.scales == (1, 0.5, 0.25)
    # fit never defaults to a fixed threshold: the scale-free cut on out-of-fold scores
    # (DifferNet: on held-out views); run and sweep default to the paper's 1.5.
    assert pooled.cleaning["rule"] == "auto" and pooled.cleaning["z"] == 3.0
    assert pooled.cleaning["scoring"] == "out_of_fold"
    flow = make_components("differnet", weights="random").cleaning
    assert flow["rule"] == "auto" and flow["scoring"] == "held_out_views"
    assert paper_cleaning("gaussian") == {"rule": "score_threshold", "scoring": "held_out_views"}
    patch = make_components("patchcore", weights="random")
    assert type(patch.featurizer) is PatchFeaturizer
    assert patch.featurizer.stages == (2, 3) and patch.featurizer.views.n_views == 1
    assert patch.cleaning["rule"] == "auto" and patch.cleaning["scoring"] == "out_of_fold"
    # The ensemble trains on every image by default; asked to clean, it scores out of fold.
    assert make_components("ensemble", weights="random").cleaning is None
    asked = make_components("ensemble", weights="random", rule="auto").cleaning
    assert asked["rule"] == "auto" and asked["scoring"] == "out_of_fold"
    assert patch.decision == {"scores": "out_of_fold", "quantile": 0.99, "n_folds": 5}
    # Given settings win over the recipe's; None means "the recipe's".
    knn = make_components(
        "knn",
        weights="random",
        rotations=(0, 90),
        flips=False,
        rule="none",
        detector_params={"k": 3},
        seed=4,
    )
    assert knn.featurizer.views.n_views == 2 and knn.cleaning is None and knn.detector.k == 3
    assert make_components("patchcore", weights="random", seed=4).detector.random_state == 4
    assert make_components(
        "differnet", weights="random", n_rotations=8
    ).featurizer.views.rotations == tuple(i * 45.0 for i in range(8))


def test_bad_settings_fail_before_any_work():
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        make_components("nope")
    with pytest.raises(ConfigError, match="unknown preset"):
        make_components("gaussian", preset="gpu")
    with pytest.raises(ConfigError, match="unknown rule"):
        cleaning_settings("gaussian", rule="magic")
    with pytest.raises(ConfigError, match="z must be positive"):
        cleaning_settings("gaussian", rule="auto", z=-1)
    with pytest.raises(ConfigError, match="fraction must be a share"):
        cleaning_settings("gaussian", rule="fraction", fraction=1.5)
    with pytest.raises(ConfigError, match="rotations or n_rotations"):
        make_components("gaussian", weights="random", rotations=(0,), n_rotations=4)
    with pytest.raises(ConfigError, match="decision quantile"):
        make_components("gaussian", weights="random", decision_quantile=1.5)
    with pytest.raises(ConfigError, match="instance"):
        make_components(PatchCore(), detector_params={"k": 2})


def test_paper_preset_adds_no_noise_and_the_cpu_preset_does():
    """The paper trains DifferNet on raw features; the noise is the CPU preset's own."""
    paper = make_components("differnet", preset="paper", weights="random").detector
    cpu = make_components("differnet", weights="random").detector
    assert (paper.noise_std, paper.standardize, paper.n_blocks, paper.hidden) == (
        0.0,
        False,
        8,
        2048,
    )
    assert (cpu.noise_std, cpu.standardize) == (0.3, True)
