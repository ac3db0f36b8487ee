"""The ensemble's fold models derived from its final PatchCore against fitted afresh.

Usage: python benchmarks/fold_fits.py [--data mono,poly] [--levels 0,0.1,0.2,0.3]
                                      [--seeds 10,11,12] [--jobs 2]

The ensemble standardises each member by out-of-fold scores: 5 fold models per member.
For PatchCore those were 5 greedy selections from scratch besides the final one — at
1,000 images most of a fit's time (BENCHMARKS.md §11). ``fold_fits="derived"`` (now the
default) grows each fold's bank from the final model's bank patches of the fold's own
images instead (:meth:`robustsdd.detectors.patchcore.PatchCore.subset_model`). This
reruns the ensemble's ``none`` cells of ``select_default.py`` (ELPV mono and poly, the
selection seeds 10–12, validation AUROC) with the derived fold models into
``benchmarks/results/scaling/fold_fits/seeds<first>-<last>/<data>/`` and sets them beside
the stored cells of ``benchmarks/results/select/seeds<first>-<last>/<data>/ensemble/``, made
with fold models fitted afresh (and before the bank bounds, which do not act on 100 cells
at 224 px). ``--seeds 0,1,2``: the same on the reporting seeds (test AUROC).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustsdd._io import atomic_write_bytes  # noqa: E402
from robustsdd.recipes import make_components  # noqa: E402
from select_default import _out_root, _pools, strategy_rows, sweep_with_report  # noqa: E402

OUT = Path("benchmarks/results/scaling/fold_fits")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mono,poly")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3")
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    lines = [
        "# Ensemble fold models: fitted afresh vs derived from the final PatchCore",
        "",
        f"Command: `python {' '.join(sys.argv)}`. Validation AUROC of the ensemble without "
        "cleaning per (data, level), mean over the seeds (per seed in brackets); "
        "`fit s`: median seconds of a group's fit (one process of two side by side).",
        "",
        "| data | level | AUROC afresh | AUROC derived | difference | fit s afresh | fit s derived |",
        "|---|---|---|---|---|---|---|",
    ]
    before_root = _out_root(args.seeds)  # select_default's cells of these seeds
    out = OUT / before_root.name
    for data in args.data.split(","):
        pool, test_pool = _pools(data)
        sweep_with_report(
            pool,
            test_pool,
            make_components("ensemble"),
            out / data,
            levels=args.levels,
            seeds=args.seeds,
            strategies="none",
            jobs=args.jobs,
            scoring=None,
            progress=False,
        )
        before = strategy_rows(before_root / data / "ensemble", "none")
        after = strategy_rows(out / data, "none")
        for level in sorted({key[0] for key in after}):
            keys = sorted(key for key in after if key[0] == level and key in before)
            a = [after[k]["auroc"] for k in keys]
            b = [before[k]["auroc"] for k in keys]
            per_seed = ", ".join(f"{x:.3f}→{y:.3f}" for x, y in zip(b, a))
            lines.append(
                f"| {data} | {level:g} | {statistics.mean(b):.4f} | {statistics.mean(a):.4f} "
                f"({per_seed}) | {statistics.mean(a) - statistics.mean(b):+.4f} | "
                f"{statistics.median(before[k]['fit_seconds'] for k in keys):.1f} | "
                f"{statistics.median(after[k]['fit_seconds'] for k in keys):.1f} |"
            )
    atomic_write_bytes(out / "comparison.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
