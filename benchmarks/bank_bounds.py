"""What PatchCore's bank bounds cost in accuracy where they act: ELPV strings.

Usage: python benchmarks/bank_bounds.py [--levels 0,0.2] [--seeds 10,11,12] [--jobs 2]

PatchCore keeps at most ``max_bank`` = 2,048 patches, chosen among at most
``max_candidates`` = 100,000 drawn at random. On 100 square ELPV cells (784 patches each,
78,400 in all, a bank of 784) neither bound acts; on 100 strings of three cells
(300 × 900, 2,352 patches each: 235,200 patches, an unbounded bank of 2,352) both do. This
reruns the ensemble's ``none`` cells of ``select_default.py`` on strings (the selection
seeds, validation AUROC) with the bounds, into ``benchmarks/results/scaling/strings_bounded/``,
and sets them beside the stored cells of ``benchmarks/results/select/seeds10-12/strings/ensemble/``,
which were made before the bounds existed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from elpv_strings import elpv_strings  # noqa: E402
from robustsdd.recipes import make_components  # noqa: E402
from select_default import strategy_rows, sweep_with_report  # noqa: E402

OUT = Path("benchmarks/results/scaling/strings_bounded")
BEFORE = Path("benchmarks/results/select/seeds10-12/strings/ensemble")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="0,0.2")
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    sweep_with_report(
        elpv_strings(),
        None,
        make_components("ensemble"),
        OUT,
        levels=args.levels,
        seeds=args.seeds,
        strategies="none",
        jobs=args.jobs,
        scoring=None,
        progress=False,
    )
    before, after = strategy_rows(BEFORE, "none"), strategy_rows(OUT, "none")
    lines = [
        "# PatchCore bank bounds on ELPV strings (the ensemble, no cleaning)",
        "",
        f"Command: `python {' '.join(sys.argv)}`. Validation AUROC and fit seconds per "
        "(level, seed): before the bounds (stored select_default cells) and with them.",
        "",
        "| level | seed | AUROC before | AUROC bounded | fit s before | fit s bounded |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(after):
        b, a = before.get(key), after[key]
        lines.append(
            f"| {key[0]:g} | {key[1]} | {b['auroc']:.3f} | {a['auroc']:.3f} | "
            f"{b['fit_seconds']:.0f} | {a['fit_seconds']:.0f} |"
            if b
            else f"| {key[0]:g} | {key[1]} | – | {a['auroc']:.3f} | – | {a['fit_seconds']:.0f} |"
        )
    (OUT / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
