"""Calibration of the decision threshold on real data: ELPV mono, paper split (100 train, 20 %
defective), DifferNet cpu preset (fit defaults); share of held-out good/defective test images
labelled anomalous under the removal-stage and the out-of-fold thresholds.

Usage: python benchmarks/decision_threshold.py {out_of_fold|removal} [WORK_DIR]
(WORK_DIR, default a temporary folder: the training images written as PNG and the model.)
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from robustsdd import fit_folder
from robustsdd.data import load_elpv, paper_split

work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="robustsdd-"))
train, test = paper_split(load_elpv("mono"), n_train=100, contamination=0.2, random_state=0)
img_dir = work / "train"
shutil.rmtree(img_dir, ignore_errors=True)
for i in range(len(train)):
    p = img_dir / f"cell_{i:03d}_{'d' if train.labels[i] else 'g'}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(train.rgb(i)).save(p)
t = time.time()
model = fit_folder(img_dir, work / "model", decision_scores=sys.argv[1], progress=False)
fit_s = time.time() - t
t = time.time()
s = model.score(test)
pred_s = time.time() - t
good, bad = s[test.labels == 0], s[test.labels == 1]
print(
    json.dumps(
        {
            "decision_scores": sys.argv[1],
            "threshold": model.threshold,
            "desc": model.decision["description"],
            "fit_s": round(fit_s),
            "score_s": round(pred_s),
            "removed": model.info["training"]["n_removed"],
            "good flagged": float(np.mean(good > model.threshold)),
            "defective flagged": float(np.mean(bad > model.threshold)),
            "good test score p50/p90/p99": np.percentile(good, [50, 90, 99]).round(3).tolist(),
        }
    )
)
