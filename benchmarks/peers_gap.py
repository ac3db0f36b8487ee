"""Why anomalib's PatchCore scores above robustsdd's in §12: the bank's share, on the same splits.

Usage: python benchmarks/peers_gap.py [--seeds 0] [--levels 0,0.1,0.2,0.3] [--ratios 0.01,0.1]

A diagnosis, not a choice: anomalib keeps 10 % of the training patches in its bank
(``coreset_sampling_ratio=0.1``) where robustsdd's PatchCore keeps 1 % (at most 2,048), and it
re-weights the image score by the bank's 9 nearest patches. This refits robustsdd's
PatchCore (its recipe's features, no cleaning) with each ``--ratios`` share and no bank
bound on the splits of ``benchmarks/peers.py`` (ELPV mono, the paper protocol), so the share's
part in the gap can be read off. Seeds 0–2 are reporting seeds: nothing here may pick a
default (that needs the selection seeds 10–12, as in ``select_default.py``).
Results: ``benchmarks/results/peers/peers_gap.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from robustsdd._io import atomic_write_bytes
from robustsdd.data import open_source, paper_split
from robustsdd.recipes import make_components

OUT = Path("benchmarks/results/peers/peers_gap.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3")
    ap.add_argument("--ratios", default="0.01,0.1")
    args = ap.parse_args()
    pool, test_pool = open_source("elpv", None, cell_type="mono")
    ratios = [float(r) for r in args.ratios.split(",")]
    lines = [
        "# robustsdd PatchCore: share of patches in the bank (ELPV mono, no cleaning)",
        "",
        f"Command: `python {' '.join(sys.argv)}`. Test AUROC per (seed, level); fit seconds "
        "(median over the cells) in the last row. No bank bound (`max_bank=None`).",
        "",
        "| seed | level | " + " | ".join(f"bank {r:.0%}" for r in ratios) + " |",
        "|---|---|" + "---|" * len(ratios),
    ]
    seconds: dict[float, list[float]] = {r: [] for r in ratios}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for level in [float(v) for v in args.levels.split(",")]:
            train, test = paper_split(
                pool, contamination=level, test_pool=test_pool, random_state=seed
            )
            row = []
            for ratio in ratios:
                parts = make_components(
                    "patchcore",
                    detector_params={"coreset_ratio": ratio, "max_bank": None},
                    seed=seed,
                    progress=False,
                )
                X_train = parts.featurizer.transform(train)
                X_test = parts.featurizer.transform(test)
                t = time.perf_counter()
                parts.detector.fit(X_train)
                seconds[ratio].append(time.perf_counter() - t)
                auroc = roc_auc_score(test.labels, parts.detector.decision_function(X_test))
                row.append(f"{auroc:.3f}")
            lines.append(f"| {seed} | {level:g} | " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    med = [sorted(v)[len(v) // 2] for v in seconds.values()]
    lines.append("| fit s | | " + " | ".join(f"{m:.1f}" for m in med) + " |")
    atomic_write_bytes(OUT, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
