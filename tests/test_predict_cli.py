"""`robustsdd fit IMAGES_DIR` and `robustsdd predict` from the command line."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import read_rows
from robustsdd.cli import main

FAST = [
    "--detector",
    "gaussian",
    "--rule",
    "fraction",
    "--fraction",
    "0.1",
    "--scoring",  # one stage-1 fit on half the views: fast, and finds all 4 planted here
    "held_out_views",
    "--weights",
    "offline",  # real features: the default whole-image geometry on images of mixed shapes
    "--image-size",
    "64",
    "--scales",
    "1",
    "--rotations",
    "0,180",
    "--no-cache",
    "--engine",
    "torch",
    "--quiet",
]


@pytest.fixture(scope="module")
def cli_model(planted_folder, tmp_path_factory):
    root, _ = planted_folder
    out = tmp_path_factory.mktemp("cli") / "model"
    assert main(["fit", str(root), "--out", str(out), *FAST]) == 0
    return out


def test_fit_images_dir_writes_the_model_folder(cli_model, planted_folder, capsys):
    _, planted = planted_folder
    assert {p.name for p in cli_model.iterdir()} == {
        "robustsdd.json",
        "config.json",
        "state.safetensors",
        "train_scores.csv",
        "report.html",
        "skipped.csv",
    }
    rows = read_rows(cli_model / "train_scores.csv")
    assert {r["name"] for r in rows if int(r["rank"]) <= 4} == set(planted)
    config = json.loads((cli_model / "robustsdd.json").read_text())
    assert config["training"]["n_images"] == 40 and config["training"]["n_removed"] == 4
    assert config["cleaning"]["rule"] == "fraction" and config["decision"]["quantile"] == 0.99


def test_predict_reproduces_training_scores_as_csv_and_json(
    cli_model, planted_folder, tmp_path, capsys
):
    root, _ = planted_folder
    train = {r["name"]: float(r["score"]) for r in read_rows(cli_model / "train_scores.csv")}
    threshold = json.loads((cli_model / "robustsdd.json").read_text())["decision"]["threshold"]
    out = tmp_path / "results.csv"
    assert (
        main(
            [
                "predict",
                str(cli_model),
                str(root),
                "--out",
                str(out),
                "--batch-size",
                "16",
                "--no-cache",
                "--quiet",
            ]
        )
        == 0
    )
    rows = read_rows(out)
    assert len(rows) == 40 and set(rows[0]) == {"path", "score", "label"}
    for r in rows:
        rel = Path(r["path"]).relative_to(root).as_posix()
        assert float(r["score"]) == pytest.approx(train[rel], rel=1e-5)
        assert r["label"] == ("anomalous" if float(r["score"]) > threshold else "normal")
    err = capsys.readouterr().err
    assert "40 images" in err and "anomalous" in err

    out_json = tmp_path / "results.json"
    assert (
        main(
            [
                "predict",
                str(cli_model),
                str(root / "line_a"),
                str(root / "part_19.png"),
                "--out",
                str(out_json),
                "--threshold",
                "0",
                "--no-cache",
                "--quiet",
            ]
        )
        == 0
    )
    data = json.loads(out_json.read_text())
    assert data["threshold"] == 0 and data["threshold_source"] == "given"
    assert len(data["results"]) == 11 and data["n_anomalous"] == 11
    assert all(r["label"] == "anomalous" for r in data["results"])


def test_predict_prints_csv_without_out(cli_model, planted_folder, capsys):
    root, _ = planted_folder
    assert (
        main(["predict", str(cli_model), str(root / "part_19.png"), "--no-cache", "--quiet"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "path,score,label" and out[1].startswith(str(root / "part_19.png"))


def test_refit_replaces_an_earlier_model(cli_model, planted_folder, tmp_path):
    root, _ = planted_folder
    again = tmp_path / "model"
    shutil.copytree(cli_model, again)
    (again / "robustsdd.json").write_text("{garbled")  # e.g. an interrupted earlier fit
    assert main(["fit", str(root), "--out", str(again), *FAST, "--rule", "none"]) == 0
    assert json.loads((again / "robustsdd.json").read_text())["cleaning"] == {"rule": "none"}


def garble(path):
    path.write_text("{not json")


@pytest.mark.parametrize(
    "what, message",
    [
        ("no model", "model folder missing"),
        ("garbled config", "robustsdd.json: not valid JSON"),
        ("foreign config", "foreign JSON"),
        ("no state", "state.safetensors: missing"),
    ],
)
def test_bad_model_folder_exits_2_naming_the_file(
    cli_model, planted_folder, tmp_path, capsys, what, message
):
    root, _ = planted_folder
    model = tmp_path / "model"
    if what != "no model":
        shutil.copytree(cli_model, model)
    if what == "garbled config":
        garble(model / "robustsdd.json")
    elif what == "foreign config":
        (model / "robustsdd.json").write_text('{"architectures": ["BertModel"]}')
    elif what == "no state":
        (model / "state.safetensors").unlink()
    for verb in (
        ["predict", str(model), str(root)],
        ["score", str(model), "--source", "unlabeled", "--root", str(root)],
    ):
        assert main([*verb, "--no-cache", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{model}", "/no/such/images"], "/no/such/images: no such file or folder"),
        (["predict", "{model}", "{root}", "--out", "{tmp}/results.txt"], ".csv or a .json"),
        (
            ["predict", "{model}", "{root}", "--out", "{root}/results.csv"],
            "inside the input folder",
        ),
        (["predict", "{model}", "{root}", "--batch-size", "0"], "batch_size"),
        (["fit", "{root}", "--root", "{root}", "--out", "{tmp}/m"], "not both"),
        (["fit", "{root}", "--source", "elpv", "--out", "{tmp}/m"], "not both"),
        (["fit", "{root}", "--out", "{root}/model"], "inside the training images"),
        (["fit", "{tmp}/nothing_here", "--out", "{tmp}/m"], "does not exist"),
        (["fit", "{root}", "--out", "{tmp}", "--detector", "gaussian"], "not a robustsdd model"),
        (["fit", "{root}", "--out", "{tmp}/m", "--decision-quantile", "0"], "quantile"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    cli_model, planted_folder, tmp_path, capsys, argv, message
):
    root, _ = planted_folder
    (tmp_path / "something.txt").write_text("user data")
    argv = [a.format(model=cli_model, root=root, tmp=tmp_path) for a in argv]
    extra = FAST if argv[0] == "fit" else ["--no-cache", "--quiet"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (root / "model").exists() and not (root / "results.csv").exists()


def test_help_describes_the_workflow(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for word in (
        "IMAGES_DIR",
        "MODEL_DIR",
        "report.html",
        "train_scores.csv",
        "--decision-quantile",
        "--decision-scores",
        "state.safetensors",
    ):
        assert word in text
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    for word in ("MODEL_DIR", "PATH", "--out", "--threshold", "--heatmaps", "anomalous", "--quiet"):
        assert word in text
