"""An interrupted `robustsdd fit` leaves nothing half-written and resumes where it stopped.

The main test stops the command in a subprocess with SIGINT (a wrapper written by the test
counts detector fits and pauses after a chosen checkpoint, so the signal always lands at a
known point), resumes it in-process, stops it again with SIGTERM, and finishes it: the
earlier model in the folder stays intact throughout, no stage is refitted, and the result
equals an uninterrupted run's, bit for bit. Stale, damaged and mid-write cases in-process.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_planted_folder
from robustsdd import Featurizer, GaussianDetector, Model, ViewSpec, fit_folder
from robustsdd._io import deferred_signals, recover_folder_swap, staging_folder, swap_in_folder
from robustsdd.cli import main
from robustsdd.workflow.checkpoints import CHECKPOINT_DIR, FitCheckpoints

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "--detector",
    "gaussian",
    "--rule",
    "fraction",
    "--fraction",
    "0.1",
    "--scoring",  # stage 1 is one fit (out_of_fold, fit's default, would be six)
    "held_out_views",
    "--weights",
    "random",
    "--image-size",
    "32",
    "--scales",
    "1",
    "--rotations",
    "0,180",
    "--engine",
    "torch",
    "--quiet",
]
TINY = dict(
    weights=None,
    views=ViewSpec(size=32, scales=(1,), rotations=(0, 180)),
    cache_dir=False,
    progress=False,
    engine="torch",
)
MODEL_FILES = {
    "robustsdd.json",
    "config.json",
    "state.safetensors",
    "train_scores.csv",
    "report.html",
    "skipped.csv",
}

WRAPPER = Path(__file__).with_name("fit_with_hooks.py")  # shared with reliability_table.py


def files_in(folder):
    return {p.name for p in Path(folder).iterdir()}


def snapshot(folder):
    """Bytes of every file under ``folder`` except the checkpoints."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and CHECKPOINT_DIR not in p.relative_to(folder).parts
    }


def assert_same_model(a, b):
    """Same model and scores, bit for bit."""
    from safetensors.torch import load_file

    a, b = Path(a), Path(b)
    assert json.loads((a / "robustsdd.json").read_text()) == json.loads(
        (b / "robustsdd.json").read_text()
    )
    for name in ("train_scores.csv", "config.json", "report.html"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = load_file(a / "state.safetensors"), load_file(b / "state.safetensors")
    assert sa.keys() == sb.keys()
    for k in sa:  # the file's header order varies between processes; the tensors may not
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        assert sa[k].numpy().tobytes() == sb[k].numpy().tobytes(), k


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "images"
    make_planted_folder(root, n=20)
    return root


def _env(**extra):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("PAUSE_AFTER", None)
    env.update(extra)
    return env


def run_fit(tmp_path, argv, *, pause_after=None, sig=None):
    """Run the wrapper; with ``pause_after``, send ``sig`` once that checkpoint is written."""
    wrapper = WRAPPER
    marker = tmp_path / "paused"
    if marker.exists():
        marker.unlink()
    env = _env(PAUSED_MARKER=str(marker), **({"PAUSE_AFTER": pause_after} if pause_after else {}))
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), *argv],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if pause_after:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"never reached checkpoint {pause_after}:\n{out}\n{err}")
            time.sleep(0.05)
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


@pytest.fixture
def one_thread():
    """In-process fits with the thread counts of the subprocesses (same numbers)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_interrupted_fit_resumes_and_matches_an_uninterrupted_one(
    images, tmp_path, capsys, monkeypatch, one_thread
):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "model"
    # An earlier model in the folder: it must survive interruptions untouched.
    fit_folder(
        images,
        out,
        detector="gaussian",
        rule="none",
        decision_scores="removal",
        featurizer=Featurizer(**TINY),
        report=False,
        progress=False,
    )
    earlier = snapshot(out)
    argv = ["fit", str(images), "--out", str(out), *FAST, *cache]

    # 1. Ctrl-C (SIGINT) to the command, after stage 1.
    rc, stdout, err = run_fit(tmp_path, argv, pause_after="stage1", sig=signal.SIGINT)
    assert rc == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "detector fits: 1" in stdout
    assert snapshot(out) == earlier  # the earlier model, untouched, still loads
    Model.load(out)
    assert files_in(out / CHECKPOINT_DIR) == {"stage1.ckpt"}
    assert not list(tmp_path.glob(".model.*"))  # no staging folder left beside it

    # 2. Rerun (here, in-process), stopped by SIGTERM (`kill`) after the second of the five
    #    decision-threshold fits.
    fits = []
    fit_method = GaussianDetector.fit
    monkeypatch.setattr(
        GaussianDetector, "fit", lambda self, X, y=None: fits.append(len(X)) or fit_method(self, X)
    )
    save = FitCheckpoints.save

    def kill_after_fold2(self, stage, **kw):
        save(self, stage, **kw)
        if stage == "decision_fold2of5":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives here

    with monkeypatch.context() as m:
        m.setattr(FitCheckpoints, "save", kill_after_fold2)
        assert main(argv) == 143
    stdout, err = capsys.readouterr()
    assert "terminated" in err and "Traceback" not in err
    assert "resuming from checkpoint: stage 1 (trained on 20 images, removal scores) done" in stdout
    assert len(fits) == 3  # stage 3 and 2 folds: stage 1 was not refit
    assert snapshot(out) == earlier
    checkpoints = {"stage1.ckpt", "stage3.ckpt", "decision_fold1of5.ckpt", "decision_fold2of5.ckpt"}
    assert files_in(out / CHECKPOINT_DIR) == checkpoints

    # 3. Rerun to the end: resumes after stage 3 and two folds; fits the last three folds.
    fits.clear()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    for what in ("stage 3", "decision-threshold fit 1 of 5", "decision-threshold fit 2 of 5"):
        assert f"resuming from checkpoint: {what}" in stdout
    assert "stage 1" not in stdout  # not even read: stage 3 comes after it
    assert len(fits) == 3
    assert files_in(out) == MODEL_FILES  # complete, and the checkpoints are gone
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model")) == []

    # The same command, never interrupted: the same model and scores, bit for bit.
    ref = tmp_path / "reference"
    fits.clear()
    assert main(["fit", str(images), "--out", str(ref), *FAST, *cache]) == 0
    assert len(fits) == 7 and "resuming" not in capsys.readouterr().out
    assert_same_model(out, ref)


class Stop(KeyboardInterrupt):
    pass


def interrupt_after(monkeypatch, stage):
    """Make FitCheckpoints.save raise (like Ctrl-C) right after writing ``stage``."""
    save = FitCheckpoints.save

    def stop(self, name, **kw):
        save(self, name, **kw)
        if name == stage:
            raise Stop()

    monkeypatch.setattr(FitCheckpoints, "save", stop)


def counting_saves(monkeypatch):
    """Record the checkpoints written (= the stages computed, not read back)."""
    saved = []
    save = FitCheckpoints.save

    def record(self, name, **kw):
        saved.append(name)
        save(self, name, **kw)

    monkeypatch.setattr(FitCheckpoints, "save", record)
    return saved


def fit(images, out, log, **kw):
    kw = {"rule": "fraction", "fraction": 0.1, **kw}
    return fit_folder(
        images,
        out,
        detector="gaussian",
        featurizer=Featurizer(**TINY),
        report=False,
        progress=False,
        log=log.append,
        **kw,
    )


@pytest.fixture
def interrupted(images, tmp_path, monkeypatch):
    """A fit into tmp_path/model stopped after stage 3 (stage 1 and 3 checkpointed)."""
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        interrupt_after(m, "stage3")
        with pytest.raises(Stop):
            fit(images, out, [])
    assert files_in(out) == {CHECKPOINT_DIR}
    assert files_in(out / CHECKPOINT_DIR) == {"stage1.ckpt", "stage3.ckpt"}
    return out


def test_stale_checkpoints_from_other_images_are_ignored(
    images, interrupted, tmp_path, monkeypatch
):
    other = tmp_path / "other"
    shutil.copytree(images, other)
    next(p for p in sorted(other.rglob("*.png"))).unlink()  # one image fewer
    log = []
    saved = counting_saves(monkeypatch)
    model = fit(other, interrupted, log)
    assert any(
        "ignoring checkpoint stage1.ckpt: it was made by a different command or from "
        "different images" in line
        for line in log
    ), log
    assert not any(line.startswith("resuming") for line in log), log
    assert saved[:2] == ["stage1", "stage3"]  # recomputed
    fresh = fit(other, tmp_path / "fresh", [])
    assert model.decision == fresh.decision
    assert (interrupted / "train_scores.csv").read_bytes() == (
        tmp_path / "fresh" / "train_scores.csv"
    ).read_bytes()


def test_changed_cleaning_settings_reuse_stage1_only(images, interrupted, tmp_path, monkeypatch):
    log = []
    saved = counting_saves(monkeypatch)
    model = fit(images, interrupted, log, fraction=0.2)
    assert any(line.startswith("resuming from checkpoint: stage 1") for line in log), log
    assert any("ignoring checkpoint stage3.ckpt" in line for line in log), log
    assert "stage1" not in saved and "stage3" in saved
    fresh = fit(images, tmp_path / "fresh", [], fraction=0.2)
    assert model.decision == fresh.decision and model.info["training"]["n_removed"] == 4
    assert (interrupted / "train_scores.csv").read_bytes() == (
        tmp_path / "fresh" / "train_scores.csv"
    ).read_bytes()


def test_damaged_checkpoints_are_detected_and_recomputed(
    images, interrupted, tmp_path, monkeypatch
):
    stage1, stage3 = (
        interrupted / CHECKPOINT_DIR / "stage1.ckpt",
        interrupted / CHECKPOINT_DIR / "stage3.ckpt",
    )
    blob = bytearray(stage1.read_bytes())
    blob[-5] ^= 0xFF  # one flipped bit in the stored tensors
    stage1.write_bytes(bytes(blob))
    stage3.write_bytes(stage3.read_bytes()[:100])  # truncated
    log = []
    saved = counting_saves(monkeypatch)
    model = fit(images, interrupted, log)
    assert any(
        "ignoring checkpoint stage1.ckpt: damaged (checksum mismatch)" in line for line in log
    ), log
    assert any("ignoring checkpoint stage3.ckpt: damaged" in line for line in log), log
    assert saved[:2] == ["stage1", "stage3"]
    assert files_in(interrupted) == {
        "robustsdd.json",
        "config.json",
        "state.safetensors",
        "train_scores.csv",
        "skipped.csv",
    }
    fresh = fit(images, tmp_path / "fresh", [])
    assert model.decision == fresh.decision
    assert (interrupted / "train_scores.csv").read_bytes() == (
        tmp_path / "fresh" / "train_scores.csv"
    ).read_bytes()


def test_no_resume_starts_afresh(images, interrupted, monkeypatch):
    log = []
    saved = counting_saves(monkeypatch)
    fit(images, interrupted, log, resume=False)
    assert not any(line.startswith("resuming") for line in log)
    assert any("removed the checkpoints of an earlier run" in line for line in log), log
    assert saved[:2] == ["stage1", "stage3"]


def test_interrupt_while_writing_the_model_leaves_the_earlier_one(images, tmp_path, monkeypatch):
    out = tmp_path / "model"
    earlier = fit(images, out, [], rule="none", decision_scores="removal")
    before = snapshot(out)
    save = Model.save

    def save_then_stop(self, path, **kw):  # Ctrl-C while the new model's files are written
        self.detector.save(path)
        raise Stop()

    with monkeypatch.context() as m:
        m.setattr(Model, "save", save_then_stop)
        with pytest.raises(Stop):
            fit(images, out, [])
    assert snapshot(out) == before  # not a mix of old and new files
    assert Model.load(out).decision == earlier.decision
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder
    log = []
    model = fit(images, out, log)  # resumes: every stage was done
    assert sum(line.startswith("resuming from checkpoint") for line in log) == 6, log
    assert Model.load(out).decision == model.decision != earlier.decision
    assert save is Model.save


@pytest.mark.filterwarnings("ignore:DifferNet:RuntimeWarning")
def test_nan_steps_are_reported_also_after_a_resume(images, tmp_path):
    """DifferNet's guard skips steps with a NaN/Inf loss; fit says so, resumed or not."""
    params = dict(n_blocks=2, hidden=16, epochs=3, finetune_epochs=1, lr=100.0, progress=False)

    def differnet_fit(out, log):
        return fit_folder(
            images,
            out,
            detector="differnet",
            detector_params=params,
            featurizer=Featurizer(**TINY),
            rule="fraction",
            report=False,
            progress=False,
            log=log.append,
        )

    whole = differnet_fit(tmp_path / "whole", [])
    note = [n for n in whole.info["notes"] if n.startswith("training skipped")]
    assert len(note) == 1 and "non-finite (NaN/Inf) loss" in note[0], whole.info["notes"]
    with pytest.MonkeyPatch.context() as m:
        interrupt_after(m, "decision_fold2of5")
        with pytest.raises(Stop):
            differnet_fit(tmp_path / "resumed", [])
    log = []
    resumed = differnet_fit(tmp_path / "resumed", log)
    assert sum(line.startswith("resuming from checkpoint") for line in log) == 3
    assert resumed.info["notes"] == whole.info["notes"]
    assert resumed.decision == whole.decision


def test_folder_swap_is_repaired_after_a_kill_between_the_renames(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "robustsdd.json").write_text("old")
    staging = staging_folder(target)
    (staging / "robustsdd.json").write_text("new")
    # killed after `target` was moved aside, before `staging` was moved in:
    os.rename(target, tmp_path / ".model.robustsdd-old")
    assert recover_folder_swap(target) == f"restored {target} from an interrupted replacement"
    assert (target / "robustsdd.json").read_text() == "old"
    assert not staging.exists() and not (tmp_path / ".model.robustsdd-old").exists()
    staging = staging_folder(target)
    (staging / "robustsdd.json").write_text("new")
    swap_in_folder(staging, target)
    assert (target / "robustsdd.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.slow
def test_signals_wait_for_the_end_of_a_deferred_block():
    reached = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                reached.append("end of block")  # not cut short by the signal
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reached == ["end of block"]


def test_resume_after_stage3_restores_every_fitted_attribute(images, tmp_path, monkeypatch):
    """A fit resumed from its stage-3 checkpoint reports what the uninterrupted fit did,
    repeated removal rounds included (the restored OneShotRemoval is complete)."""

    def fit_rounds(out, log):
        return fit_folder(
            images,
            out,
            detector="gaussian",
            featurizer=Featurizer(**TINY),
            rule="auto",
            z=1.0,
            rounds=4,
            progress=False,
            log=log.append,
        )

    fresh = fit_rounds(tmp_path / "fresh", [])
    assert any("removal rounds ran" in note for note in fresh.info["notes"]), fresh.info
    report = (tmp_path / "fresh" / "report.html").read_text()
    assert "rounds ran" in report
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        interrupt_after(m, "stage3")
        with pytest.raises(Stop):
            fit_rounds(out, [])
    log = []
    resumed = fit_rounds(out, log)
    assert any(line.startswith("resuming from checkpoint: stage 3") for line in log), log
    assert resumed.info == fresh.info
    assert_same_model(tmp_path / "fresh", out)
