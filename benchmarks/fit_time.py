"""How long `fit` takes on 100 images with each detector's defaults, features cached.

Usage: python benchmarks/fit_time.py [--detectors gaussian,knn,patchcore,ensemble]
           [--repeats 3] [--data mono|strings] [--out PATH]

The inspector's job, timed as they run it: :func:`robustsdd.fit_images` (what ``robustsdd
fit`` and ``fit_folder`` run) on the 100 training images of the paper split (ELPV mono, or
the 300 × 900 strips of ``benchmarks/elpv_strings.py``; 20 % defective, seed 0), with the
recipe's features, cleaning (the ``auto`` cut on out-of-fold scores), decision threshold
(0.99 quantile of out-of-fold scores) and report — everything but the backbone, whose
features are read from a warm cache (one extraction first, not timed). Each repeat writes a
fresh model folder. Prints, and writes to ``benchmarks/results/fit_time_<data>.json`` (or
``--out``), the median seconds per detector over the repeats.

A detector may name a cleaning other than its default, ``name:rule`` or
``name:rule@scoring`` (e.g. ``ensemble:auto``, ``ensemble:fdr@sparse_banks``), to time what
a cleaning adds to the plain fit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from elpv_strings import elpv_strings  # noqa: E402
from robustsdd import fit_images  # noqa: E402
from robustsdd._io import atomic_write_bytes  # noqa: E402
from robustsdd.data import load_elpv, paper_split  # noqa: E402
from robustsdd.recipes import make_featurizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", default="gaussian,knn,patchcore,ensemble")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", choices=["mono", "strings"], default="mono")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pool = elpv_strings() if args.data == "strings" else load_elpv("mono")
    train, _ = paper_split(pool, n_train=100, contamination=0.2, random_state=0)
    result = {
        "command": "python benchmarks/fit_time.py " + " ".join(sys.argv[1:]),
        "data": args.data,
        "n_images": len(train),
        "seconds": {},
    }
    with tempfile.TemporaryDirectory(prefix="robustsdd-fit-time-") as work:
        for spec in args.detectors.split(","):
            name, _, cleaning = spec.partition(":")
            rule, _, scoring = cleaning.partition("@")
            make_featurizer(name, progress=False).transform(train)  # warm the cache
            times, removed = [], []
            for r in range(args.repeats):
                t = time.perf_counter()
                model = fit_images(
                    train,
                    Path(work) / f"{name}_{r}",
                    detector=name,
                    rule=rule or None,
                    scoring=scoring or None,
                    progress=False,
                    resume=False,
                    log=lambda _: None,
                )
                times.append(time.perf_counter() - t)
                removed.append(model.info["training"]["n_removed"])
            result["seconds"][spec] = {
                "median": statistics.median(times),
                "runs": times,
                "removed": removed,
            }
            print(
                f"{spec:10s} fit {statistics.median(times):6.1f} s median "
                f"(runs {', '.join(f'{t:.1f}' for t in times)}; removed {removed[0]})",
                flush=True,
            )
    out = args.out or Path("benchmarks/results") / f"fit_time_{args.data}.json"
    atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
