"""Cleaning's PatchCore models derived from stage 1 against fitted afresh.

Usage: python benchmarks/subset_fits.py [--data mono,poly,strings] [--levels 0,0.1,0.2,0.3]
                                        [--seeds 10,11,12] [--jobs 2]

One-Shot Removal with out-of-fold scores fits, besides stage 1, one model per fold and a
fine-tuned model on the kept images: for PatchCore, each a greedy selection from scratch.
``PatchCore(subset_fits="derived")`` (now the default) grows those banks from the stage-1
bank's patches of their own images instead
(:meth:`robustsdd.detectors.patchcore.PatchCore.subset_model`). This reruns PatchCore's
cells of ``select_default.py`` (``none`` and ``auto_3@out_of_fold``, the selection seeds
10–12, validation AUROC; strings at the levels stored there) with the derived models into
``benchmarks/results/scaling/subset_fits/seeds<first>-<last>/<data>/`` and sets them
beside the stored cells of ``benchmarks/results/select/seeds<first>-<last>/<data>/patchcore/``,
made with every model fitted afresh. ``none`` involves no subset model and must agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustsdd._io import atomic_write_bytes  # noqa: E402
from robustsdd.recipes import make_components  # noqa: E402
from select_default import CLEANING, _out_root, _pools, strategy_rows, sweep_with_report  # noqa: E402

OUT = Path("benchmarks/results/scaling/subset_fits")
CLEANED = "auto_3@out_of_fold"


def _line(data, level, before, after, keys) -> str:
    a = [after[k]["auroc"] for k in keys]
    b = [before[k]["auroc"] for k in keys]
    per_seed = ", ".join(f"{x:.3f}→{y:.3f}" for x, y in zip(b, a))

    def removed(rows):
        good = statistics.mean(rows[k]["removed_good"] for k in keys)
        bad = statistics.mean(rows[k]["removed_defective"] for k in keys)
        return f"{good:.1f} + {bad:.1f}"

    return (
        f"| {data} | {level:g} | {statistics.mean(b):.4f} | {statistics.mean(a):.4f} "
        f"({per_seed}) | {statistics.mean(a) - statistics.mean(b):+.4f} | {removed(before)} | "
        f"{removed(after)} | {statistics.median(before[k]['fit_seconds'] for k in keys):.1f} | "
        f"{statistics.median(after[k]['fit_seconds'] for k in keys):.1f} |"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mono,poly,strings")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3")
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    lines = [
        f"# PatchCore cleaning ({CLEANED}): fold and fine-tuned models fitted afresh vs derived",
        "",
        f"Command: `python {' '.join(sys.argv)}`. Validation AUROC per (data, level), mean over "
        "the seeds (per seed in brackets); removed: good + defective training images (mean); "
        "`fit s`: median seconds of the cleaned fit (one process of two side by side).",
        "",
        "| data | level | AUROC afresh | AUROC derived | difference | removed afresh | "
        "removed derived | fit s afresh | fit s derived |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    before_root = _out_root(args.seeds)  # select_default's cells of these seeds
    out = OUT / before_root.name
    agree, differences = {}, []
    for data in args.data.split(","):
        stored = before_root / data / "patchcore"
        before_cleaned = strategy_rows(stored, CLEANED)
        levels = sorted({level for level, _ in before_cleaned})
        wanted = [float(x) for x in args.levels.split(",")]
        pool, test_pool = _pools(data)
        sweep_with_report(
            pool,
            test_pool,
            make_components("patchcore"),
            out / data,
            levels=[x for x in wanted if x in levels],
            seeds=args.seeds,
            strategies=CLEANING,
            jobs=args.jobs,
            scoring=None,
            progress=False,
        )
        after_cleaned = strategy_rows(out / data, CLEANED)
        before_none, after_none = strategy_rows(stored, "none"), strategy_rows(out / data, "none")
        agree[data] = [before_none[k]["auroc"] == after_none[k]["auroc"] for k in after_none]
        for level in sorted({key[0] for key in after_cleaned}):
            keys = sorted(k for k in after_cleaned if k[0] == level and k in before_cleaned)
            lines.append(_line(data, level, before_cleaned, after_cleaned, keys))
            if all(agree[data]):
                differences += [
                    after_cleaned[k]["auroc"] - before_cleaned[k]["auroc"] for k in keys
                ]
    lines.append("")
    for data, same in agree.items():
        lines.append(
            f"- {data}: `none` (no subset model) agrees in {sum(same)} of {len(same)} cells"
        )
    lines.append(
        f"- mean difference over the data whose `none` agrees throughout: "
        f"{statistics.mean(differences):+.4f} ({len(differences)} cells; where `none` differs, "
        "the stored cells were made under other PatchCore defaults, e.g. before the bank "
        "bounds, and the rows compare different plain models too)"
    )
    atomic_write_bytes(out / "comparison.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
