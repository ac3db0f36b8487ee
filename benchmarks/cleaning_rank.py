"""How well each cleaning candidate *ranks* and *cuts* contaminated training images.

Usage:
    python benchmarks/cleaning_rank.py [--data mono,poly,strings] [--seeds 10,11,12]
                                       [--levels 0.1,0.2,0.3] [--scorers ...]

For every (data set, level, seed) of the paper's protocol (the same training sets as
``select_default.py``: :func:`robustsdd.data.paper_split`, 100 images), the training
images' features under the default recipe (the ensemble's patch features) are scored by
each removal scorer in :data:`SCORERS`, and the training labels — used here only for
reporting — give:

* ``rank_auroc``: AUROC of the removal scores against the labels (defective = positive):
  how well the scorer orders the images, independent of any cut;
* ``precision`` / ``recall`` of the images the ``auto`` cut (median + 3 robust SD of the
  log scores) removes, and the share it removes (``removed``);
* ``seconds``: the scorer's wall time (the ensemble fit includes its members' final fits).

Every cut in :data:`CUTS` is then applied to the same scores (the rules of
:data:`robustsdd.cleaning.registry.RULES`), and the contamination estimate of
:func:`robustsdd.cleaning.estimate.estimate_contamination` (with its 90 % interval) is set
beside the true share: a second table, per scorer.

No test image is read: this measures the removal step alone, fast, on the selection seeds.
Results: ``benchmarks/results/cleaning/rank_seeds<first>-<last>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from elpv_strings import elpv_strings  # noqa: E402
from robustsdd._io import atomic_write_bytes  # noqa: E402
from robustsdd.cleaning.estimate import estimate_contamination  # noqa: E402
from robustsdd.cleaning.registry import RULES  # noqa: E402
from robustsdd.cleaning.rules import auto_cut  # noqa: E402
from robustsdd.cleaning.sparse_banks import sparse_bank_scores  # noqa: E402
from robustsdd.data import DEFECTIVE, open_source, paper_split  # noqa: E402
from robustsdd.detectors.ensemble import EnsembleDetector  # noqa: E402
from robustsdd.recipes import make_components  # noqa: E402

_MAD_TO_SD = 1.4826


def _z(scores: np.ndarray) -> np.ndarray:
    logs = np.log(np.maximum(scores, 1e-12))
    med = np.median(logs)
    mad = _MAD_TO_SD * np.median(np.abs(logs - med))
    return (logs - med) / (mad if mad > 0 else 1.0)


def _ensemble(X, patch_channels, seed):
    det = EnsembleDetector(patch_channels=patch_channels, random_state=seed).fit(X)
    return det


def _banks(share, n_banks=20, max_bank_rows=2048):
    def score(X, pc, seed, cache):
        return sparse_bank_scores(
            X[:, :, :pc],
            share=share,
            n_banks=n_banks,
            max_bank_rows=max_bank_rows,
            random_state=seed,
        )

    return score


def _oof(cache, name):
    det = cache["ensemble"]
    if name == "ensemble":
        return det.out_of_fold_scores_
    return det.member_oof_scores_[det.member_names_.index(name)]


def _hybrid(share):
    """Sparse-bank patch evidence in place of PatchCore's out-of-fold scores, averaged
    with the pooled members' out-of-fold z as the ensemble does."""

    def score(X, pc, seed, cache):
        banks = cache.setdefault(f"banks{share}", _banks(share)(X, pc, seed, cache))
        return np.exp(np.mean([_z(banks), _z(_oof(cache, "gaussian")), _z(_oof(cache, "knn"))], 0))

    return score


SCORERS = {
    "oof_ensemble": lambda X, pc, seed, cache: _oof(cache, "ensemble"),
    "oof_patchcore": lambda X, pc, seed, cache: _oof(cache, "patchcore"),
    "oof_gaussian": lambda X, pc, seed, cache: _oof(cache, "gaussian"),
    "banks_0.05": _banks(0.05),
    "banks_0.1": _banks(0.1),
    "banks_0.2": _banks(0.2),
    "banks_0.5": _banks(0.5),
    "hybrid_0.1": _hybrid(0.1),
    "hybrid_0.2": _hybrid(0.2),
}


#: cut name -> (rule, its settings)
CUTS = {
    "auto_3": ("auto", {"z": 3.0}),
    "auto_2": ("auto", {"z": 2.0}),
    "confident": ("confident", {}),
    "fdr_0.1": ("fdr", {"fdr": 0.1}),
    "fdr_0.2": ("fdr", {"fdr": 0.2}),
    "fdr_0.3": ("fdr", {"fdr": 0.3}),
}


def _pool(data):
    if data == "strings":
        return elpv_strings()
    return open_source("elpv", None, cell_type=data)[0]


def run(args, partial: Path):
    """Score every group; each row is also appended to ``partial`` (JSON lines) at once,
    so an interrupted run keeps what it computed."""
    parts = make_components("ensemble", progress=False)
    fz, pc = parts.featurizer, parts.detector.patch_channels
    rows = []
    for data in args.data.split(","):
        pool = _pool(data)
        for level in [float(v) for v in args.levels.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                train, _ = paper_split(pool, contamination=level, random_state=seed)
                X = fz.transform(train)
                y = (np.asarray(train.labels) == DEFECTIVE).astype(int)
                t = time.perf_counter()
                cache = {"ensemble": _ensemble(X, pc, seed)}
                ens_seconds = time.perf_counter() - t
                for name in args.scorers.split(","):
                    t = time.perf_counter()
                    s = np.asarray(SCORERS[name](X, pc, seed, cache), dtype=np.float64)
                    seconds = time.perf_counter() - t + (ens_seconds if "oof" in name else 0)
                    cut = auto_cut(s, 3.0)
                    removed = s > cut
                    tp = int((removed & (y == 1)).sum())
                    row = {
                        "data": data,
                        "level": level,
                        "seed": seed,
                        "scorer": name,
                        "rank_auroc": float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None,
                        "precision": tp / removed.sum() if removed.any() else None,
                        "recall": tp / y.sum() if y.sum() else None,
                        "removed": float(removed.mean()),
                        "seconds": round(seconds, 2),
                        "scores": [round(float(v), 6) for v in s],
                        "labels": y.tolist(),
                    }
                    rows.append(row)
                    with partial.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(
                        json.dumps({k: v for k, v in row.items() if k not in ("scores", "labels")}),
                        flush=True,
                    )
    return rows


def summarise(rows, out: Path, command: str):
    cells = defaultdict(list)
    for r in rows:
        cells[(r["scorer"], r["data"], r["level"])].append(r)
    scorers = list(dict.fromkeys(r["scorer"] for r in rows))
    keys = sorted({(r["data"], r["level"]) for r in rows})

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return f"{np.mean(vals):.2f}" if vals else "–"

    lines = [
        "# Ranking and cut of the training images by removal scorer",
        "",
        f"Command: `{command}`",
        "",
        "Each cell: ranking AUROC / auto-cut precision / recall (means over seeds; – where "
        "the cut removed nothing). Median seconds per scorer in the last column.",
        "",
        "| scorer | " + " | ".join(f"{d} {int(round(100 * lv))} %" for d, lv in keys) + " | s |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for s in scorers:
        cols = []
        for k in keys:
            rs = cells[(s, *k)]
            cols.append(
                f"{mean([r['rank_auroc'] for r in rs])} / {mean([r['precision'] for r in rs])}"
                f" / {mean([r['recall'] for r in rs])}"
            )
        secs = np.median([r["seconds"] for d, lv in keys for r in cells[(s, d, lv)]])
        lines.append(f"| {s} | " + " | ".join(cols) + f" | {secs:.1f} |")
    lines += _cut_table(rows, scorers, keys, cells)
    atomic_write_bytes(out.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(rows, indent=1) + "\n").encode())
    print("\n".join(lines))


def _cut_table(rows, scorers, keys, cells) -> list[str]:
    """Precision / recall of every cut on every scorer's scores, and the estimate."""
    lines = [
        "",
        "## Cuts on the same scores",
        "",
        "Each cell: precision / recall of the removed images (means over seeds; at 0 %: "
        "how many good images were removed). Row `estimate`: estimated contamination "
        "[mean 90 % interval] vs the true share.",
    ]
    for scorer in scorers:
        lines += [
            "",
            f"### {scorer}",
            "",
            "| cut | " + " | ".join(f"{d} {int(round(100 * lv))} %" for d, lv in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        results = defaultdict(list)
        for d, lv in keys:
            for r in cells[(scorer, d, lv)]:
                s, y = np.asarray(r["scores"]), np.asarray(r["labels"], dtype=bool)
                est = estimate_contamination(s, random_state=r["seed"])
                results[("estimate", d, lv)].append((est.share, *est.interval))
                for name, (rule, settings) in CUTS.items():
                    removed = ~RULES[rule].cut(s, {**settings, "random_state": r["seed"]}).keep
                    tp = int((removed & y).sum())
                    results[(name, d, lv)].append(
                        (
                            tp / removed.sum() if removed.any() else np.nan,
                            tp / max(y.sum(), 1),
                            removed.sum(),
                        )
                    )
        est_cols = []
        for d, lv in keys:
            e = np.mean(results[("estimate", d, lv)], axis=0)
            est_cols.append(f"{e[0]:.2f} [{e[1]:.2f}, {e[2]:.2f}] vs {lv:.2f}")
        lines.append("| estimate | " + " | ".join(est_cols) + " |")
        for name in CUTS:
            cols = []
            for d, lv in keys:
                pr = np.array(results[(name, d, lv)], dtype=float)
                if lv == 0:  # nothing to find: how many good images were removed
                    cols.append(f"{pr[:, 2].mean():.1f} removed")
                    continue
                prec = np.nanmean(pr[:, 0]) if np.isfinite(pr[:, 0]).any() else float("nan")
                cols.append(f"{prec:.2f} / {pr[:, 1].mean():.2f}")
            lines.append(f"| {name} | " + " | ".join(cols) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mono,poly,strings")
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3")
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--from-json",
        default=None,
        help="tabulate stored rows (a results .json, or the .jsonl a run appends to) instead",
    )
    args = ap.parse_args()
    seeds = args.seeds.split(",")
    out = Path(args.out or f"benchmarks/results/cleaning/rank_seeds{seeds[0]}-{seeds[-1]}")
    if args.from_json:
        text = Path(args.from_json).read_text()
        rows = (
            [json.loads(line) for line in text.splitlines() if line.strip()]
            if args.from_json.endswith(".jsonl")
            else json.loads(text)
        )
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = run(args, out.with_suffix(".jsonl"))
    summarise(rows, out, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
