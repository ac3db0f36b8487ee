"""The contamination sweep: outputs, determinism across jobs, resume, reuse rules, the CLI verb."""

import argparse
import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from robustsdd import ConfigError, DifferNet, Featurizer, GaussianDetector, ViewSpec, cli
from robustsdd.cli.sweep import add_sweep_parser, cmd_sweep
from robustsdd.data import ImageSet
from robustsdd.experiments.sweep import (
    ROW_COLUMNS,
    cell_path,
    parse_levels,
    parse_seeds,
    parse_strategies,
    parse_strategy,
    run_sweep,
)
from robustsdd.experiments.sweep_report import (
    PAPER_KSDD2,
    _reference,
    format_removal_table,
    read_rows,
    removal_table,
    write_report,
)

LEVELS, STRATEGIES, SEEDS = (0.0, 0.5), ("none", "osr_1.5"), (0, 1)
SPLIT = dict(n_train=20, n_test_good=5, n_test_defective=5)
OUTPUTS = (
    "cells.csv",
    "cells.json",
    "removal_table.md",
    "auroc_vs_contamination.png",
    "summary.md",
)


def scratched(rng, defective):
    img = rng.normal(128, 12, size=(40, 40)).clip(0, 255)
    if defective:
        img[8:32, 18:22] = 255  # a bright scratch
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    labels = [0] * 30 + [1] * 16
    return ImageSet(
        [scratched(rng, y) for y in labels],
        labels,
        [f"img{i:02d}" for i in range(len(labels))],
        source="fixture",
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep-cache")


def featurizer(cache_dir):
    return Featurizer(
        weights=None,
        views=ViewSpec(size=32, scales=(1.0,), rotations=(0, 180), flips=True),
        cache_dir=cache_dir,
        progress=False,
    )


def sweep(pool, fz, out, *, detector=None, jobs=1, **kw):
    kw = {"levels": LEVELS, "strategies": STRATEGIES, "seeds": SEEDS, **SPLIT, **kw}
    return run_sweep(
        pool,
        featurizer=fz,
        detector=detector or GaussianDetector(),
        out_dir=out,
        jobs=jobs,
        progress=False,
        **kw,
    )


def comparable(rows):
    """Rows without timings, NaN as None (NaN != NaN), for exact comparison."""
    return [
        {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in r.items()
            if k != "fit_seconds"
        }
        for r in rows
    ]


@pytest.fixture(scope="module")
def first(pool, cache_dir, tmp_path_factory):
    """One sweep, run once for the module: (rows, out_dir, featurizer)."""
    out = tmp_path_factory.mktemp("sweep")
    fz = featurizer(cache_dir)
    rows = sweep(pool, fz, out)
    write_report(rows, out)
    return rows, out, fz


# -- parsing ------------------------------------------------------------------------------------
def test_parse_strategy():
    assert parse_strategy("none") is None
    assert parse_strategy("osr_1.5") == {"rule": "score_threshold", "threshold": 1.5}
    assert parse_strategy("fraction_0.1") == {"rule": "fraction", "fraction": 0.1}
    assert parse_strategy("min_size_0.8") == {"rule": "min_size", "min_size": 0.8}
    assert parse_strategy("min_size_80") == {"rule": "min_size", "min_size": 80}
    assert parse_strategy("osr_2@in_sample") == {
        "rule": "score_threshold",
        "threshold": 2.0,
        "scoring": "in_sample",
    }
    assert parse_strategy("auto_2.5_r3@ensemble") == {
        "rule": "auto",
        "z": 2.5,
        "rounds": 3,
        "scoring": "ensemble",
    }
    assert parse_strategy("confident") == {"rule": "confident"}
    assert parse_strategy("oracle") == {"rule": "oracle"}
    assert parse_strategies("none, osr_1.0,osr_2.0") == ("none", "osr_1.0", "osr_2.0")
    assert parse_levels("0,0.1,1") == (0.0, 0.1, 1.0)
    assert parse_seeds("0,1,2") == (0, 1, 2)


@pytest.mark.parametrize(
    "spec",
    [
        "osr",
        "osr_",
        "osr_x",
        "bogus",
        "Osr_1.5",
        "fraction_1.5",
        "min_size_0",
        "min_size_2.5",
        "osr_nan",
        "none@in_sample",
        "osr_1.5@nope",
        1.5,
        "oracle@out_of_fold",
        "confident_2",
        "auto_3_r0",
        "min_size_80_r2",
        "confident_rx",
    ],
)
def test_bad_strategies_raise_config_error(spec):
    with pytest.raises(ConfigError):
        parse_strategy(spec)


def test_bad_lists_raise_config_error(pool, tmp_path):
    for bad in ("none,none", ""):
        with pytest.raises(ConfigError):
            parse_strategies(bad)
    for bad in ("0,50", "0.1,0.1", "x"):
        with pytest.raises(ConfigError):
            parse_levels(bad)
    with pytest.raises(ConfigError):
        parse_seeds("-1")
    # Nothing is computed before the configuration is checked.
    fz = Featurizer(weights=None, cache_dir=False, progress=False)
    with pytest.raises(ConfigError, match="unknown strategy"):
        sweep(pool, fz, tmp_path, strategies=["none", "osr_1.5", "trim_10"])
    with pytest.raises(ConfigError):
        sweep(pool, fz, tmp_path, scoring="sometimes")
    assert fz.n_computed == 0 and not (tmp_path / "cells").exists()


# -- outputs ------------------------------------------------------------------------------------
def test_rows_cover_the_grid_in_order(first):
    rows, out, fz = first
    assert len(rows) == len(LEVELS) * len(STRATEGIES) * len(SEEDS)
    assert [(r["level"], r["strategy"], r["seed"]) for r in rows] == [
        (lv, s, sd) for lv in LEVELS for s in STRATEGIES for sd in SEEDS
    ]
    assert rows.stats["computed"] == 4 and rows.stats["reused"] == 0
    # Each image was extracted once for the whole sweep, though groups share images.
    assert rows.stats["features_computed"] == fz.n_computed <= 46
    for r in rows:
        assert set(ROW_COLUMNS) <= set(r)
        assert 0 <= r["auroc"] <= 1
        assert r["train_defective"] == round(20 * r["level"])
        assert r["kept"] + r["removed_good"] + r["removed_defective"] == 20
        if r["strategy"] == "none":
            assert (r["removed_good"], r["removed_defective"], r["kept"]) == (0, 0, 20)
            assert not r["guard_fired"]
    assert len(list((out / "cells").glob("*.json"))) == len(LEVELS) * len(SEEDS)


def test_report_files(first):
    rows, out, _ = first
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0
    with open(out / "cells.csv") as f:
        reader = csv.DictReader(f)
        table = list(reader)
    assert tuple(reader.fieldnames[: len(ROW_COLUMNS)]) == ROW_COLUMNS
    assert len(table) == len(rows)
    assert float(table[0]["auroc"]) == rows[0]["auroc"]  # full precision
    assert comparable(read_rows(out / "cells.json")) == comparable(rows)
    with Image.open(out / "auroc_vs_contamination.png") as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 200
    summary = (out / "summary.md").read_text()
    for strategy in STRATEGIES:
        assert strategy in summary
    assert "Area under the curve" in summary and "50%" in summary
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_removal_table_is_the_mean_of_the_rows(first):
    rows, out, _ = first
    table = removal_table(rows)
    assert [(t["level"], t["strategy"]) for t in table] == [(lv, "osr_1.5") for lv in LEVELS]
    for t in table:
        cell = [r for r in rows if r["level"] == t["level"] and r["strategy"] == "osr_1.5"]
        assert t["removed_good"] == np.mean([r["removed_good"] for r in cell])
        assert t["removed_defective"] == np.mean([r["removed_defective"] for r in cell])
        assert t["removed_total"] == t["removed_good"] + t["removed_defective"]
        assert (t["train_good"], t["train_defective"]) == (20 - 20 * t["level"], 20 * t["level"])
    text = (out / "removal_table.md").read_text()
    assert text == format_removal_table(rows)
    lines = [ln for ln in text.splitlines() if ln.startswith("| 50%")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    t = table[1]
    assert cells[1:] == [f"{v:g}" for v in (t["train_good"], t["train_defective"])] + [
        f"{v:.2f}".rstrip("0").rstrip(".")
        for v in (t["removed_good"], t["removed_defective"], t["removed_total"])
    ]


def test_paper_reference_only_for_ksdd2(first, tmp_path):
    rows, _, _ = first
    assert _reference({"data": {"source": "ksdd2:train"}}) is PAPER_KSDD2
    assert _reference(rows.config) is None
    paths = write_report(rows, tmp_path, config={**rows.config, "data": {"source": "ksdd2:train"}})
    with Image.open(paths["auroc_vs_contamination.png"]) as im:
        im.load()


# -- determinism and resume ---------------------------------------------------------------------
@pytest.mark.slow
def test_jobs_do_not_change_the_numbers(first, pool, cache_dir, tmp_path):
    rows, out, _ = first
    fz = featurizer(cache_dir)
    parallel = sweep(pool, fz, tmp_path, jobs=2)
    assert parallel.stats["computed"] == 4 and fz.n_computed == 0  # features from the cache
    assert comparable(parallel) == comparable(rows)


def test_resume_recomputes_nothing(first, pool, cache_dir, monkeypatch):
    rows, out, _ = first

    def no_fit(self, X, y=None):
        raise AssertionError("a resumed sweep fitted a detector")

    monkeypatch.setattr(GaussianDetector, "fit", no_fit)
    fz = featurizer(cache_dir)
    again = sweep(pool, fz, out)
    assert again.stats["computed"] == 0 and again.stats["reused"] == 4
    assert fz.n_computed == 0 and again.stats["features_computed"] == 0
    assert comparable(again) == comparable(rows)
    assert [r["fit_seconds"] for r in again] == [r["fit_seconds"] for r in rows]


def test_changed_config_does_not_reuse_stale_cells(first, pool, cache_dir, tmp_path):
    rows, out, _ = first
    fz = featurizer(cache_dir)
    for cell in (out / "cells").glob("*.json"):
        (tmp_path / cell.name).write_bytes(cell.read_bytes())
    other = sweep(pool, fz, tmp_path, detector=GaussianDetector(shrinkage=0.2))
    assert other.stats["computed"] == 4
    assert comparable(other) != comparable(rows)
    stored = json.loads(cell_path(tmp_path, 0.5, 0).read_text())
    assert stored["config_hash"] == other.config["config_hash"] != rows.config["config_hash"]
    new_seed = sweep(pool, fz, out, seeds=[0, 7])
    assert new_seed.stats["computed"] == 2 and new_seed.stats["reused"] == 2
    smaller = sweep(pool, fz, tmp_path / "n", n_train=16)
    assert smaller.config["config_hash"] != rows.config["config_hash"]
    # A damaged cell file (e.g. from a full disk) is recomputed, not trusted or fatal.
    cell_path(tmp_path, 0.0, 1).write_text('{"rows": [')
    repaired = sweep(pool, fz, tmp_path, detector=GaussianDetector(shrinkage=0.2))
    assert repaired.stats["computed"] == 1 and comparable(repaired) == comparable(other)


def test_added_strategy_computes_only_what_is_missing(
    first, pool, cache_dir, tmp_path, monkeypatch
):
    rows, out, _ = first
    for cell in (out / "cells").glob("*.json"):
        (tmp_path / "cells").mkdir(exist_ok=True)
        (tmp_path / "cells" / cell.name).write_bytes(cell.read_bytes())
    calls = []
    original = GaussianDetector.fit

    def counting_fit(self, X, y=None):
        calls.append(len(X))
        return original(self, X, y)

    monkeypatch.setattr(GaussianDetector, "fit", counting_fit)
    more = sweep(pool, featurizer(cache_dir), tmp_path, strategies=STRATEGIES + ("osr_2.0",))
    assert more.stats["computed"] == 4
    # osr_2.0 alone per group: stage 1 and stage 3; `none` and osr_1.5 came from disk.
    assert len(calls) == 2 * 4
    assert comparable([r for r in more if r["strategy"] != "osr_2.0"]) == comparable(rows)
    monkeypatch.setattr(GaussianDetector, "fit", original)
    together = sweep(
        pool, featurizer(cache_dir), tmp_path / "t", strategies=STRATEGIES + ("osr_2.0",)
    )
    assert comparable(together) == comparable(more)  # a reused stage 1 changes nothing


def test_oracle_and_refining_strategies_in_a_sweep(pool, cache_dir, tmp_path):
    rows = sweep(
        pool,
        featurizer(cache_dir),
        tmp_path,
        levels=(0.5,),
        seeds=(0,),
        strategies=("oracle", "confident_r2@out_of_fold", "auto_3_r3@ensemble"),
    )
    by_name = {r["strategy"]: r for r in rows}
    oracle = by_name["oracle"]
    assert (oracle["removed_defective"], oracle["removed_good"]) == (10, 0)
    assert oracle["removal_precision"] == oracle["removal_recall"] == 1.0
    for r in rows:
        assert r["kept"] + r["removed_good"] + r["removed_defective"] == 20
    summary = write_report(rows, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "an upper bound" in text and "up to 3 rounds" in text and summary


def test_patch_detectors_get_a_pixel_auroc_where_masks_exist(tmp_path):
    from robustsdd.detectors import PatchCore
    from robustsdd.features.patches import PatchFeaturizer

    rng = np.random.default_rng(1)
    labels = [0] * 30 + [1] * 16
    images = [scratched(rng, y) for y in labels]
    masks = []
    for y in labels:
        mask = np.zeros((40, 40), bool)
        if y:
            mask[8:32, 18:22] = True  # where scratched() draws the scratch
        masks.append(mask if y else None)
    with_masks = ImageSet(
        images, labels, [f"m{i:02d}" for i in range(46)], masks=masks, source="fixture-masks"
    )
    fz = PatchFeaturizer(
        weights=None,
        views=ViewSpec(size=32, scales=(1.0,), rotations=(0,), flips=False),
        cache_dir=False,
        progress=False,
    )
    rows = sweep(
        with_masks,
        fz,
        tmp_path,
        detector=PatchCore(coreset="none"),
        levels=(0.0,),
        seeds=(0,),
        strategies=("none", "auto_3"),
        scoring=None,
    )
    for r in rows:
        assert 0.5 < r["pixel_auroc"] <= 1.0  # a bright scratch is found where it is
    write_report(rows, tmp_path)
    assert "Pixel AUROC" in (tmp_path / "summary.md").read_text()
    rows = sweep(
        ImageSet(images, labels, [f"m{i:02d}" for i in range(46)], source="no-masks"),
        fz,
        tmp_path / "none",
        detector=PatchCore(coreset="none"),
        levels=(0.0,),
        seeds=(0,),
        strategies=("none",),
    )
    assert math.isnan(rows[0]["pixel_auroc"])


def test_tiny_differnet_sweep(pool, cache_dir, tmp_path):
    det = DifferNet(n_blocks=2, hidden=16, epochs=2, finetune_epochs=1)
    kw = dict(levels=[0.5], seeds=[0], strategies=["none", "osr_1.5", "osr_2.0"])
    rows = sweep(pool, featurizer(cache_dir), tmp_path, detector=det, **kw)
    assert len(rows) == 3 and all(np.isfinite(r["auroc"]) for r in rows)
    alone = sweep(
        pool,
        featurizer(cache_dir),
        tmp_path / "alone",
        detector=det,
        **{**kw, "strategies": ["osr_2.0"]},
    )
    assert comparable(alone) == comparable(rows[2:])  # stage-1 reuse gives the same numbers
    again = sweep(
        pool, featurizer(cache_dir), tmp_path, detector=det.set_params(progress=True), **kw
    )
    assert again.stats["computed"] == 0  # the progress display is not part of the config


# -- command line -------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for cls, n in (("good", 24), ("defect", 12)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(scratched(rng, cls == "defect")).save(root / cls / f"{cls}_{i:02d}.png")
    return root


def cli_args(folder, out, *extra):
    return [
        "sweep",
        "--source",
        "folder",
        "--root",
        str(folder),
        "--n-train",
        "12",
        "--n-test-good",
        "4",
        "--n-test-defective",
        "4",
        "--levels",
        "0,0.5",
        "--strategies",
        "none,osr_1.5",
        "--seeds",
        "0,1",
        "--detector",
        "gaussian",
        "--weights",
        "random",
        "--image-size",
        "32",
        "--scales",
        "1",
        "--rotations",
        "0",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def parse(argv):
    parser = argparse.ArgumentParser(prog="robustsdd")
    sub = parser.add_subparsers(dest="verb", required=True)
    add_sweep_parser(sub)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def test_cmd_sweep_writes_the_report(folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = parse(cli_args(folder, out))
    assert cmd_sweep(args) == 0
    for name in OUTPUTS:
        assert (out / name).is_file()
    text = capsys.readouterr().out
    assert "4 of 4 (level, seed) groups computed" in text and "osr_1.5" in text
    assert "robustsdd sweep" in (out / "summary.md").read_text()
    assert cmd_sweep(parse(cli_args(folder, out))) == 0
    assert "0 of 4 (level, seed) groups computed" in capsys.readouterr().out


def test_cmd_sweep_rejects_single_split_flags(folder, tmp_path):
    for flag in (["--contamination", "0.2"], ["--seed", "3"], ["--strategies", "osr"]):
        args = parse(cli_args(folder, tmp_path / "x") + flag)
        with pytest.raises(ConfigError):
            cmd_sweep(args)


def test_cli_main_sweep(folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(cli_args(folder, out)) == 0
    assert (out / "summary.md").is_file()
    assert cli.main(cli_args(folder, out, "--levels", "0,50")) == 2  # a percentage, not a share


def _slow_for_level_zero(group):
    """A stand-in worker task: the level-0 group takes far longer than the others."""
    import time

    time.sleep(6.0 if group.level == 0 else 0.0)
    return [{"level": group.level}]


@pytest.mark.slow
def test_parallel_groups_are_yielded_as_they_finish():
    # A finished group must reach the caller (and so its cell file) while a slow one still
    # runs; otherwise an interrupted parallel sweep would lose every finished group.
    import time
    from types import SimpleNamespace

    from robustsdd.experiments.sweep import _execute

    groups = [SimpleNamespace(level=level) for level in (0, 0.5, 1.0)]
    order, when = [], []
    for group, _ in _execute(groups, (None, None), jobs=2, run=_slow_for_level_zero):
        order.append(group.level)
        when.append(time.monotonic())
    assert sorted(order) == [0, 0.5, 1.0]
    assert order[-1] == 0
    assert when[-1] - when[0] > 3.0  # the fast groups arrived well before the slow one ended
