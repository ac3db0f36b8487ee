"""The command line on fixture folders: outputs written, scores consistent, errors clear."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from robustsdd.cli import args as common
from robustsdd.cli import build_parser, main
from robustsdd.recipes import DEFAULT_DETECTOR, default_cleaning, make_components

TINY = [
    "--weights",
    "random",
    "--image-size",
    "32",
    "--scales",
    "1",
    "--rotations",
    "0,180",
    "--quiet",
    "--epochs",
    "2",
    "--finetune-epochs",
    "1",
    "--param",
    "hidden=16",
    "--param",
    "n_blocks=2",
]


@pytest.fixture
def labelled_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for cls, n in (("good", 30), ("defect", 16)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = rng.normal(128, 10, size=(40, 40)).clip(0, 255)
            if cls == "defect":
                img[10:30, 18:22] = 255  # a bright scratch
            Image.fromarray(img.astype(np.uint8)).save(root / cls / f"{cls}_{i:02d}.png")
    return root


def test_run_writes_metrics_and_prints_the_tables(labelled_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--source",
            "folder",
            "--root",
            str(labelled_folder),
            "--n-train",
            "20",
            "--contamination",
            "0.25",
            "--n-test-good",
            "5",
            "--n-test-defective",
            "5",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["train_defective"] == 5 and metrics["split"]["train_good"] == 15
    r = metrics["removal"]
    assert r["removed_good"] + r["removed_defective"] + r["kept_good"] + r["kept_defective"] == 20
    assert set(metrics["train_scores"]) == {"stage1", "removal", "stage2"}
    assert metrics["config"]["osr"]["threshold"] == 1.5
    text = capsys.readouterr().out
    assert "baseline" in text and "OSR" in text and "removed:" in text and "stage 1 model" in text


def test_fit_then_score_reproduces_training_scores(labelled_folder, tmp_path, capsys):
    model = tmp_path / "model"
    assert (
        main(
            [
                "fit",
                "--source",
                "folder",
                "--root",
                str(labelled_folder),
                "--detector",
                "gaussian",
                "--rule",
                "fraction",
                "--fraction",
                "0.2",
                "--out",
                str(model),
                "--weights",
                "random",
                "--image-size",
                "32",
                "--scales",
                "1",
                "--rotations",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    with open(model / "train_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 46 and sum(r["kept"] == "0" for r in rows) == 9  # round(0.2 * 46)
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 47))
    scored = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                str(model),
                "--source",
                "folder",
                "--root",
                str(labelled_folder),
                "--out",
                str(scored),
                "--quiet",
            ]
        )
        == 0
    )
    with open(scored) as f:
        again = {r["name"]: float(r["score"]) for r in csv.DictReader(f)}
    for r in rows:
        assert again[r["name"]] == pytest.approx(float(r["score"]), rel=1e-5)
    assert "AUROC" in capsys.readouterr().err


def test_run_with_the_data_driven_cleaning_flags(labelled_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--source",
            "folder",
            "--root",
            str(labelled_folder),
            "--n-train",
            "20",
            "--contamination",
            "0.25",
            "--n-test-good",
            "5",
            "--n-test-defective",
            "5",
            "--detector",
            "knn",
            "--rule",
            "confident",
            "--scoring",
            "ensemble",
            "--members",
            "2",
            "--rounds",
            "3",
            "--out",
            str(out),
            "--weights",
            "random",
            "--image-size",
            "32",
            "--scales",
            "1",
            "--rotations",
            "0,180",
            "--quiet",
        ]
    )
    assert code == 0
    osr = json.loads((out / "metrics.json").read_text())["config"]["osr"]
    assert (osr["rule"], osr["scoring"], osr["n_members"], osr["rounds"]) == (
        "confident",
        "ensemble",
        2,
        3,
    )
    assert (
        "OSR: confident (confident-learning cut: drop images less likely normal than the "
        "mean, up to 3 rounds, ensemble scores)"
    ) in capsys.readouterr().out
    # fit takes the same flags (its stage-1 checkpoint is keyed by the ensemble's size too).
    model = tmp_path / "model"
    assert (
        main(
            [
                "fit",
                "--source",
                "folder",
                "--root",
                str(labelled_folder),
                "--detector",
                "knn",
                "--rule",
                "auto",
                "--scoring",
                "ensemble",
                "--members",
                "2",
                "--rounds",
                "2",
                "--out",
                str(model),
                "--weights",
                "random",
                "--image-size",
                "32",
                "--scales",
                "1",
                "--rotations",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    info = json.loads((model / "robustsdd.json").read_text())
    assert "ensemble" in json.dumps(info)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--source", "folder", "--root", "/no/such/folder"], "/no/such/folder"),
        (["run", "--source", "ksdd2"], "root"),
        (["run", "--detector", "gaussian", "--contamination", "1.5"], "contamination"),
        (["run", "--backbone", "no_such_net", "--weights", "random"], "no_such_net"),
        (["score", "/no/such/model"], "missing"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_verb_has_help(capsys):
    from robustsdd.cli import VERBS

    assert set(VERBS) == {"run", "fit", "score", "predict", "sweep"}
    for verb in VERBS:
        with pytest.raises(SystemExit) as exc:
            main([verb, "--help"])
        assert exc.value.code == 0
        assert "--" in capsys.readouterr().out


def test_paper_preset_uses_alexnet_from_a_local_file_else_falls_back(tmp_path, capsys):
    import torch
    import torchvision

    from robustsdd.cli import build_parser
    from robustsdd.cli.args import settings
    from robustsdd.recipes import make_components

    def make_featurizer(args):
        return make_components(**settings(args)).featurizer

    weights = tmp_path / "alexnet.pt"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    args = build_parser().parse_args(["run", "--preset", "paper", "--weights", str(weights)])
    fz = make_featurizer(args)
    assert fz.backbone == "alexnet" and fz.views.size == 448 and fz.views.n_views == 64
    assert fz.extractor.n_features == 256

    args = build_parser().parse_args(
        ["run", "--preset", "paper", "--weights", str(tmp_path / "missing.pt")]
    )
    fz = make_featurizer(args)
    assert fz.backbone == "efficientnet_lite0" and fz.weights == "offline"
    assert "AlexNet weights unavailable" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, detector, rule, scoring",
    [
        # run reproduces the paper: DifferNet, OSR at 1.5 on held-out views
        (["run"], "differnet", "score_threshold", "held_out_views"),
        (["run", "--scoring", "in_sample"], "differnet", "score_threshold", "in_sample"),
        # patch features have no views to hold out and no unit for 1.5
        (["run", "--detector", "patchcore"], "patchcore", "auto", "out_of_fold"),
        # fit never defaults to a fixed threshold
        (["fit", "x", "--out", "y"], DEFAULT_DETECTOR, default_cleaning()["rule"], None),
        (["fit", "x", "--out", "y", "--detector", "differnet"], "differnet", "auto", None),
    ],
)
def test_each_verb_has_its_own_defaults(argv, detector, rule, scoring):
    args = build_parser().parse_args(argv)
    settings = common.settings(args)
    assert settings["detector"] == detector
    cleaning = make_components(**{**settings, "weights": "random"}).cleaning
    if rule == "none":
        assert cleaning is None
        return
    assert cleaning["rule"] == rule
    assert cleaning["scoring"] == (scoring or default_cleaning(detector)["scoring"])
