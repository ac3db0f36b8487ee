"""Probe DifferNet settings and OSR scoring regimes on ELPV mono (how the CPU preset was chosen).

Usage:
    python benchmarks/probe_differnet.py '[{"lr": 1e-3, "batch_size": 64, "noise_std": 0.3}]' \
        --levels 0.2,0.5 --seeds 0

Each JSON object holds DifferNet keywords (on top of the class defaults) plus optional
"scoring" (default held_out_views), "threshold" (1.5) and "det" ("differnet" or "gaussian").
Per cell it prints what the selection used — training-set measures only: the AUROC of the
removal scores against the planted defective *training* images ("train-AUROC") and the
10th/50th/90th percentiles of good and defective training images' removal scores — and,
for the record, the test AUROC of baseline (stage 1) and OSR.
"""

import argparse
import itertools
import json
import time

import numpy as np

from robustsdd.cleaning import OneShotRemoval
from robustsdd.data import load_elpv, paper_split
from robustsdd.detectors.differnet import DifferNet
from robustsdd.metrics import detection_metrics, removal_metrics
from robustsdd.recipes import make_detector, make_featurizer


def pct(a):
    return "/".join(f"{v:.3g}" for v in np.percentile(a, [10, 50, 90])) if len(a) else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", help="JSON list of settings")
    ap.add_argument("--cell-type", default="mono")
    ap.add_argument("--levels", default="0.2,0.5")
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    pool = load_elpv(args.cell_type)
    featurizer = make_featurizer("differnet", progress=True)  # DifferNet's default features
    for cfg in json.loads(args.configs):
        det_name = cfg.pop("det", "differnet")
        scoring = cfg.pop("scoring", "held_out_views")
        threshold = cfg.pop("threshold", 1.5)
        for level, seed in itertools.product(
            [float(v) for v in args.levels.split(",")], [int(v) for v in args.seeds.split(",")]
        ):
            train, test = paper_split(pool, contamination=level, random_state=seed)
            X_train, X_test = featurizer.transform(train), featurizer.transform(test)
            det = (
                # Not the recipe: a probe is DifferNet's class defaults + cfg (it chose the preset).
                DifferNet(random_state=seed, **cfg)
                if det_name == "differnet"
                else make_detector("gaussian", params=cfg)
            )
            t = time.perf_counter()
            osr = OneShotRemoval(det, scoring=scoring, threshold=threshold, random_state=seed).fit(
                X_train
            )
            seconds = time.perf_counter() - t
            base = detection_metrics(test.labels, osr.baseline_detector_.decision_function(X_test))
            after = detection_metrics(test.labels, osr.decision_function(X_test))
            rs = osr.removal_scores_
            rm = removal_metrics(train.labels, osr.keep_mask_)
            train_auroc = detection_metrics(train.labels, rs)["auroc"]
            print(
                f"{det_name} {cfg} {scoring} level={level} seed={seed}: "
                f"train-AUROC {train_auroc:.3f} | good {pct(rs[train.labels == 0])} "
                f"defective {pct(rs[train.labels == 1])} | removed {rm['removed_good']} good + "
                f"{rm['removed_defective']} defective | test AUROC stage 1 {base['auroc']:.3f}, "
                f"OSR {after['auroc']:.3f} | {seconds:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
