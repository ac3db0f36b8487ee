"""Sweep speed: the full default sweep against its feature-extraction floor, and a
naive loop that recomputes backbone features every epoch (as DifferNet's code does).

Usage:
  python benchmarks/sweep_speed.py floor-vs-sweep --cell-type mono --detector gaussian \\
      [--repeats 3] [--jobs 1]
  python benchmarks/sweep_speed.py naive --cell-type mono [--epochs 3]

floor-vs-sweep, repeated ``--repeats`` times, alternating, each run in a fresh
process with a fresh (empty) feature cache:
  * floor: the time to extract the features of the unique images the default sweep
    uses (its 11 levels x 3 seeds draw them), every view, with the features and the
    default engine of the detector's recipe (``robustsdd.recipes.make_featurizer``, as
    the sweep uses), measured around ``Featurizer.transform`` (no start-up, no data
    loading);
  * sweep: the wall time of ``robustsdd sweep --detector D --cell-type C --jobs J``
    from process start to exit (start-up, loading ELPV, extraction, every fit, the
    report), and the peak resident memory of its process tree (sampled /proc
    every 0.5 s, summed over the sweep and its workers).
Medians and the ratio sweep / floor are printed and written as JSON.

naive: DifferNet (CPU preset) on the 20 % / seed-0 training split, ``--epochs``
epochs each computed two ways: (a) cached — one flow epoch over pre-computed
features; (b) naive — the features of the training images recomputed by the
backbone (no cache), then the same flow epoch. The per-epoch medians give the
per-fit ratio; the sweep-level ratio is extrapolated from the number of
(image, view) epochs the default DifferNet sweep trains (printed with its formula).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _needed_images(cell_type: str):
    from robustsdd.data import open_source
    from robustsdd.experiments.sweep import DEFAULT_LEVELS, DEFAULT_SEEDS, _draw_splits

    pool, test_pool = open_source("elpv", None, cell_type=cell_type)
    splits = _draw_splits(
        pool,
        test_pool,
        DEFAULT_LEVELS,
        DEFAULT_SEEDS,
        n_train=100,
        n_test_good=100,
        n_test_defective=100,
    )
    need = sorted({int(i) for train, test in splits.values() for i in (*train.items, *test.items)})
    return pool.subset(need)


def floor_once(cell_type: str, detector: str) -> dict:
    """In this process: extract the sweep's unique images into an empty cache."""
    from robustsdd.recipes import make_featurizer

    images = _needed_images(cell_type)
    with tempfile.TemporaryDirectory() as cache:
        fz = make_featurizer(detector, cache_dir=cache, progress=False)
        fz.engine_name  # build the engine (export, probe check) outside the timing
        t = time.perf_counter()
        fz.transform(images)
        seconds = time.perf_counter() - t
    return {
        "images": len(images),
        "views": fz.views.n_views,
        "engine": fz.engine_name,
        "seconds": round(seconds, 2),
        "images_per_s": round(len(images) / seconds, 3),
    }


def _tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in kB (from /proc)."""
    children: dict = {}
    rss: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list, env: dict) -> dict:
    """Wall seconds and peak tree RSS of a command; raises if it fails."""
    peak = [0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return {"seconds": round(wall, 1), "peak_rss_mb": round(peak[0] / 1024, 1)}


def floor_vs_sweep(args) -> dict:
    floors, sweeps = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "ROBUSTSDD_CACHE_DIR": cache}
            floor = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "_floor",
                    "--cell-type",
                    args.cell_type,
                    "--detector",
                    args.detector,
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            floors.append(json.loads(floor.stdout.strip().splitlines()[-1]))
            print(f"[{repeat + 1}/{args.repeats}] floor: {floors[-1]}", flush=True)
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "ROBUSTSDD_CACHE_DIR": cache}
            cmd = [
                sys.executable,
                "-m",
                "robustsdd.cli",
                "sweep",
                "--detector",
                args.detector,
                "--cell-type",
                args.cell_type,
                "--jobs",
                str(args.jobs),
                "--quiet",
                "--out",
                out,
            ]
            sweeps.append(run_measured(cmd, env))
            print(f"[{repeat + 1}/{args.repeats}] sweep: {sweeps[-1]}", flush=True)
    floor_s = statistics.median(f["seconds"] for f in floors)
    sweep_s = statistics.median(s["seconds"] for s in sweeps)
    return {
        "cell_type": args.cell_type,
        "detector": args.detector,
        "jobs": args.jobs,
        "floor_runs": floors,
        "sweep_runs": sweeps,
        "floor_median_s": floor_s,
        "sweep_median_s": sweep_s,
        "ratio": round(sweep_s / floor_s, 2),
        "peak_rss_mb_max": max(s["peak_rss_mb"] for s in sweeps),
    }


def _flow_epoch_seconds(model, X) -> float:
    t = time.perf_counter()
    model.partial_fit(X)
    return time.perf_counter() - t


def naive(args) -> dict:
    from robustsdd.data import open_source, paper_split
    from robustsdd.recipes import make_detector, make_featurizer

    pool, _ = open_source("elpv", None, cell_type=args.cell_type)
    train, _ = paper_split(pool, contamination=0.2, random_state=0)
    # DifferNet's recipe (CPU preset, its features); the default cache: warm after the first call
    cached_fz = make_featurizer("differnet", progress=False)
    X = cached_fz.transform(train)
    model = make_detector(
        "differnet", seed=0, progress=False, params={"epochs": 1, "finetune_epochs": 1}
    ).fit(X)
    cached, naive_ = [], []
    for _ in range(args.epochs):
        cached.append(_flow_epoch_seconds(model, X))
        t = time.perf_counter()
        fresh = make_featurizer("differnet", cache_dir=False, progress=False)  # backbone again
        X_epoch = fresh.transform(train)
        naive_.append(time.perf_counter() - t + _flow_epoch_seconds(model, X_epoch))
        print(f"epoch: cached {cached[-1]:.2f} s, naive {naive_[-1]:.2f} s", flush=True)
    cached_s, naive_s = statistics.median(cached), statistics.median(naive_)
    extraction_per_image = (naive_s - cached_s) / len(train)
    # (image, view)-epochs one default DifferNet sweep group trains, per training image:
    # baseline 40 epochs x 8 views, OSR stage 1 40 x 4 held-in views, 3 fine-tunings 40 x 8
    # (kept images only: counted as all 100, an upper bound for a few percent).
    view_epochs_per_image = 40 * 8 + 40 * 4 + 3 * 40 * 8
    groups = 33
    extra_s = groups * len(train) * view_epochs_per_image / 8 * extraction_per_image
    return {
        "cell_type": args.cell_type,
        "epochs_timed": args.epochs,
        "engine": fresh.engine_name,
        "cached_epoch_s": round(cached_s, 3),
        "naive_epoch_s": round(naive_s, 3),
        "per_fit_ratio": round(naive_s / cached_s, 1),
        "extraction_s_per_image_all_views": round(extraction_per_image, 4),
        "sweep_extra_s_estimate": round(extra_s),
        "formula": "33 groups x 100 images x (40x8 + 40x4 + 3x40x8)/8 view-epochs x "
        "extraction s per image (8 views)",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["floor-vs-sweep", "naive", "_floor"])
    ap.add_argument("--cell-type", default="mono")
    ap.add_argument("--detector", default="gaussian")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    if args.mode == "_floor":
        print(json.dumps(floor_once(args.cell_type, args.detector)))
        return
    result = floor_vs_sweep(args) if args.mode == "floor-vs-sweep" else naive(args)
    result["command"] = "python benchmarks/sweep_speed.py " + " ".join(sys.argv[1:])
    name = (
        f"sweep_speed_{args.cell_type}_{args.detector}_jobs{args.jobs}.json"
        if args.mode == "floor-vs-sweep"
        else f"naive_loop_{args.cell_type}.json"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_runs")}, indent=1))


if __name__ == "__main__":
    main()
