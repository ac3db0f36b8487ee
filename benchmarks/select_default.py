"""Choose `fit`'s default by evidence: candidates × data sets × contamination levels.

Usage:
    python benchmarks/select_default.py run [--data mono,poly,strings] [--candidates ...]
                                            [--seeds 10,11,12] [--levels 0,0.1,0.2,0.3]
                                            [--jobs 2]
    python benchmarks/select_default.py table [--seeds 10,11,12] [--data ...] [--candidates ...]
    python benchmarks/select_default.py gap --candidates ensemble [--seeds ...] [--data ...]

A *pipeline* is a candidate (detector + its features, :data:`CANDIDATES`) with one
cleaning strategy (``none`` or the scale-free ``auto_3`` cut on out-of-fold scores; the
DifferNet candidate is the paper's OSR at 1.5 on held-out views, ``fit``'s earlier
default). Each runs the paper's protocol (:func:`robustsdd.experiments.sweep.run_sweep`:
100 training images at 0/10/20/30 % contamination, test 100 good + 100 defective) on
ELPV mono, ELPV poly and ELPV strings (three real cells side by side, a 300 × 900 strip,
``benchmarks/elpv_strings.py``).

**Selection never sees the reporting splits.** It runs on seeds 10, 11 and 12: each seed's
split draws its own training set *and a validation set* (100 good + 100 defective) from
the pool, so the test AUROC of the reporting seeds 0, 1 and 2 plays no part in the
choice. ``table`` ranks the pipelines at every (data set, level) by mean validation AUROC
over the seeds (1 = best, ties share the mean rank) and chooses the pipeline with the best
*worst-case* rank across data sets and levels (ties broken by the mean AUROC over all of
them): a default must not collapse on any data it may meet. It then states, for every
(data set, level), how far the choice is from the best single-detector pipeline. Run
``run`` and ``table`` again with ``--seeds 0,1,2`` for the reporting numbers.

Results: ``benchmarks/results/select/seeds<first>-<last>/<data>/<candidate>/`` (a sweep
report each; finished groups are reused when run again) and ``selection.md`` /
``selection.json`` beside them.

``gap`` reads the same cells of a candidate that ran with ``none`` and ``oracle`` among its
strategies (``run --strategies none,oracle,...``) and tabulates, per cleaning strategy and
(data set, level): mean AUROC, the share of the oracle gap it wins back ((strategy − none) /
(oracle − none), over the seeds' means) and the precision / recall of its removal
(``gap_<candidate>.md`` beside ``selection.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from elpv_strings import elpv_strings  # noqa: E402
from robustsdd._io import atomic_write_bytes  # noqa: E402
from robustsdd.data import open_source  # noqa: E402
from robustsdd.experiments.sweep import run_sweep  # noqa: E402
from robustsdd.experiments.sweep_report import write_report  # noqa: E402
from robustsdd.recipes import make_components  # noqa: E402

DATA = ("mono", "poly", "strings")
LEVELS = "0,0.1,0.2,0.3"
CLEANING = "none,auto_3@out_of_fold"

#: name -> (detector, make_components keywords, strategies)
CANDIDATES: dict[str, tuple[str, dict, str]] = {
    "gaussian": ("gaussian", {}, CLEANING),
    "knn": ("knn", {}, CLEANING),
    "patchcore": ("patchcore", {}, CLEANING),
    "ensemble": ("ensemble", {}, CLEANING),
    "gaussian_lite2": ("gaussian", {"backbone": "efficientnet_lite2"}, CLEANING),
    "knn_lite2": ("knn", {"backbone": "efficientnet_lite2"}, CLEANING),
    "patchcore_lite2": ("patchcore", {"backbone": "efficientnet_lite2"}, CLEANING),
    "ensemble_lite2": ("ensemble", {"backbone": "efficientnet_lite2"}, CLEANING),
    "gaussian_lite1": ("gaussian", {"backbone": "efficientnet_lite1"}, CLEANING),
    "patchcore_lite1": ("patchcore", {"backbone": "efficientnet_lite1"}, CLEANING),
    "differnet": ("differnet", {}, "none,osr_1.5@held_out_views"),
}
SINGLE = ("gaussian", "knn", "patchcore", "differnet")  # detectors that are not ensembles


def _out_root(seeds: str) -> Path:
    first, *_, last = [s.strip() for s in seeds.split(",")] * 2
    return Path("benchmarks/results/select") / f"seeds{first}-{last}"


def _pools(data: str):
    if data == "strings":
        return elpv_strings(), None
    return open_source("elpv", None, cell_type=data)


def run(args) -> None:
    root = _out_root(args.seeds)
    for data in args.data.split(","):
        pool, test_pool = _pools(data)
        for name in args.candidates.split(","):
            detector, options, strategies = CANDIDATES[name]
            strategies = args.strategies or strategies
            print(f"== {data} / {name}", flush=True)
            sweep_with_report(
                pool,
                test_pool,
                make_components(detector, **options),
                root / data / name,
                levels=args.levels,
                seeds=args.seeds,
                strategies=strategies,
                jobs=args.jobs,
                scoring=None,
                progress=not args.quiet,
            )


def sweep_with_report(pool, test_pool, parts, out: Path, **sweep):
    """:func:`run_sweep` of ``parts`` (a recipe's components) into ``out`` (its cells
    resume there), then the sweep report, with the command that ran it."""
    result = run_sweep(
        pool, test_pool, featurizer=parts.featurizer, detector=parts.detector, out_dir=out, **sweep
    )
    config = {**result.config, "command": "python " + " ".join(sys.argv)}
    write_report(result, out, config=config, stats=result.stats)
    return result


def strategy_rows(report: Path, strategy: str) -> dict:
    """Rows of one strategy of a sweep report folder (its ``cells.json``), by (level, seed)."""
    rows = json.loads((report / "cells.json").read_text())
    return {(r["level"], r["seed"]): r for r in rows if r["strategy"] == strategy}


def _rank(values: dict[str, float]) -> dict[str, float]:
    """1 = highest value; ties share the mean of their ranks."""
    order = sorted(values, key=lambda k: -values[k])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def table(args) -> None:
    root = _out_root(args.seeds)
    datas = args.data.split(",")
    # pipeline -> (data, level) -> [auroc per seed]
    cells: dict[str, dict[tuple[str, float], list[float]]] = defaultdict(lambda: defaultdict(list))
    for data in datas:
        for name in args.candidates.split(","):
            path = root / data / name / "cells.json"
            if not path.exists():
                continue
            for row in json.loads(path.read_text()):
                cells[f"{name} {row['strategy']}"][(data, float(row["level"]))].append(
                    float(row["auroc"])
                )
    # Rank where every pipeline has a number: (data set, level) cells some pipeline lacks
    # are left out and named; a pipeline with none of the rest is left out too.
    all_keys = {k for per in cells.values() for k in per}
    keys = sorted(set.intersection(*(set(per) for per in cells.values()))) if cells else []
    complete = {p: {k: per[k] for k in keys} for p, per in cells.items()}
    left_out = sorted(all_keys - set(keys))
    mean = {p: {k: float(np.mean(v)) for k, v in per.items()} for p, per in complete.items()}
    ranks: dict[str, dict] = defaultdict(dict)
    for k in keys:
        for p, r in _rank({p: m[k] for p, m in mean.items()}).items():
            ranks[p][k] = r
    summary = {
        p: {
            "worst_rank": max(ranks[p].values()),
            "mean_rank": float(np.mean(list(ranks[p].values()))),
            "mean_auroc": float(np.mean(list(mean[p].values()))),
            "min_auroc": float(min(mean[p].values())),
        }
        for p in mean
    }
    order = sorted(summary, key=lambda p: (summary[p]["worst_rank"], -summary[p]["mean_auroc"]))
    chosen = order[0] if order else None
    lines = [
        f"# Selection of `fit`'s default (seeds {args.seeds})",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        "Mean AUROC over the seeds at each data set and level; rank among all pipelines in "
        "brackets (1 = best). Ordered by worst-case rank, then mean AUROC.",
        "",
        "| pipeline | "
        + " | ".join(f"{d} {int(100 * lv)} %" for d, lv in keys)
        + " | worst rank | mean rank | mean |",
        "|---|" + "---|" * (len(keys) + 3),
    ]
    for p in order:
        s = summary[p]
        lines.append(
            f"| {'**' + p + '**' if p == chosen else p} | "
            + " | ".join(f"{mean[p][k]:.3f} ({ranks[p][k]:g})" for k in keys)
            + f" | {s['worst_rank']:g} | {s['mean_rank']:.1f} | {s['mean_auroc']:.3f} |"
        )
    if chosen is not None:
        singles = [p for p in mean if p.split()[0].split("_")[0] in SINGLE]
        gaps = {
            k: mean[chosen][k] - max(mean[p][k] for p in singles) if singles else float("nan")
            for k in keys
        }
        what = (
            "Chosen (best worst-case rank)"
            if args.seeds.replace(" ", "") == "10,11,12"
            else "Best worst-case rank on these seeds (reporting only: the choice is made "
            "on seeds 10-12)"
        )
        lines += ["", f"{what}: **{chosen}**."]
        if singles:
            lines += [
                "",
                "Chosen minus the best single-detector pipeline at each data set and level: "
                + ", ".join(f"{d} {int(100 * lv)} %: {g:+.3f}" for (d, lv), g in gaps.items()),
            ]
    if left_out:
        lines += [
            "",
            "Left out of the ranking (not every pipeline has them): "
            + ", ".join(f"{d} {int(100 * lv)} %" for d, lv in left_out)
            + ".",
        ]
    atomic_write_bytes(root / "selection.md", ("\n".join(lines) + "\n").encode())
    payload = {
        "seeds": args.seeds,
        "chosen": chosen,
        "summary": summary,
        "mean": {p: {f"{d} {lv}": v for (d, lv), v in m.items()} for p, m in mean.items()},
        "left_out": [f"{d} {lv}" for d, lv in left_out],
    }
    atomic_write_bytes(root / "selection.json", (json.dumps(payload, indent=1) + "\n").encode())
    print("\n".join(lines))


def gap_table(cells: Path) -> list[str]:
    """The gap table of one sweep's ``cells`` folder (markdown lines; none without both
    ``none`` and ``oracle``): per strategy and level, mean AUROC / share of the oracle gap
    won back / removal precision / recall, at 0 % AUROC and the good images removed; "–"
    where a strategy has fewer seeds than ``none``."""
    by = defaultdict(list)  # (strategy, level) -> rows
    for cell in sorted(cells.glob("*.json")):
        for row in json.loads(cell.read_text())["rows"]:
            by[(row["strategy"], float(row["level"]))].append(row)
    levels = sorted({lv for _, lv in by})
    strategies = list(dict.fromkeys(s for s, _ in by))
    if "none" not in strategies or "oracle" not in strategies:
        return []
    n_seeds = {lv: len(by[("none", lv)]) for lv in levels}
    lines = [
        "| strategy | " + " | ".join(f"{int(100 * lv)} %" for lv in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for strategy in strategies:
        cols = []
        for lv in levels:
            rows = by[(strategy, lv)]
            if len(rows) < n_seeds[lv]:
                cols.append("–")
                continue
            auroc = np.mean([r["auroc"] for r in rows])
            if lv == 0:
                good = np.mean([r["removed_good"] for r in rows])
                cols.append(f"{auroc:.3f} ({good:.1f} removed)")
                continue
            none = np.mean([r["auroc"] for r in by[("none", lv)]])
            oracle = np.mean([r["auroc"] for r in by[("oracle", lv)]])
            won = (auroc - none) / (oracle - none) if oracle > none else float("nan")
            prec = [r["removal_precision"] for r in rows if r["removal_precision"] is not None]
            rec = np.mean([r["removal_recall"] or 0.0 for r in rows])
            p_text = f"{np.mean(prec):.2f}" if prec else "–"
            cols.append(f"{auroc:.3f} / {100 * won:+.0f} % / {p_text} / {rec:.2f}")
        lines.append(f"| {strategy} | " + " | ".join(cols) + " |")
    return lines


def gap(args) -> None:
    root = _out_root(args.seeds)
    lines = [
        f"# Oracle gap won back by each cleaning (seeds {args.seeds})",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        "Each cell: mean AUROC / share of the oracle gap won back / removal precision / recall "
        "(means over the seeds; at 0 %: AUROC and the mean number of good images removed).",
    ]
    for name in args.candidates.split(","):
        for data in args.data.split(","):
            path = root / data / name / "cells"
            if not path.exists():
                continue
            table = gap_table(path)
            if table:
                lines += ["", f"## {name} on {data}", "", *table]
        text = "\n".join(lines) + "\n"
        atomic_write_bytes(root / f"gap_{name}.md", text.encode())
        print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "table", "gap"])
    ap.add_argument("--data", default=",".join(DATA))
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--levels", default=LEVELS, help="contamination levels (run only)")
    ap.add_argument(
        "--strategies",
        default=None,
        help="run only: strategies instead of each candidate's own (e.g. none,oracle)",
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    unknown = set(args.candidates.split(",")) - set(CANDIDATES)
    if unknown:
        ap.error(f"unknown candidates: {sorted(unknown)}; choose from {', '.join(CANDIDATES)}")
    {"run": run, "table": table, "gap": gap}[args.what](args)


if __name__ == "__main__":
    main()
