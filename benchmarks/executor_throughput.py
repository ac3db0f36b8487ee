"""Feature-extraction throughput under the executors: local processes and Ray.

Usage: OMP_NUM_THREADS=1 python benchmarks/executor_throughput.py [--n-images 96] [--repeats 3]
           [--configs local:1,local:2,ray:1,ray:2]
           [--out benchmarks/results/executor_throughput.json]

Real ELPV mono images (the first ``--n-images``), robustsdd's default features
(``robustsdd.recipes.make_featurizer()``: offline EfficientNet-Lite0, 8 views x 3
scales at 224 px, ONNX Runtime), no cache. For each configuration, ``--repeats``
timed calls of ``make_featurizer(cache_dir=False).transform(images, executor=...)``, each on a fresh
featurizer (the driver's engine is built before the clock starts); the median
images/s is reported.

* ``local:1`` runs in this process with one thread (as one worker does);
* ``local:J`` spawns J worker processes per call, so its time includes their
  start (importing torch, building the engine): what a user pays per call;
* ``ray:J`` starts a local Ray instance with J CPUs once per configuration
  (its start is reported as ``ray_init_s``, not in the rate); the first call
  also starts the Ray workers, later calls reuse them (median of 3 = warm).

Besides the end-to-end rate, ``steady_images_per_s`` counts only the images
finished after every worker delivered its first chunk (start-up excluded), and
``driver_us_per_image`` is the driver's own cost per image (decode + SHA-256
digest), the ceiling of one driver.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from robustsdd._hashing import image_digest
from robustsdd.data import load_elpv
from robustsdd.executors import make_executor, start_ray
from robustsdd.recipes import make_featurizer


class _Timed:
    """An executor proxy that records when each chunk comes back."""

    def __init__(self, executor):
        self.executor = executor
        self.serial = executor.serial
        self.parallelism = executor.parallelism
        self.events = []  # (seconds, images in the chunk)

    def map_unordered(self, fn, items, shared=None):
        for item, result in self.executor.map_unordered(fn, items, shared):
            self.events.append((time.perf_counter(), len(item)))
            yield item, result


def _steady_rate(events, workers):
    if len(events) <= workers:
        return None
    t0 = events[workers - 1][0]
    done = sum(n for _, n in events[workers:])
    return done / (events[-1][0] - t0)


def run_config(kind, jobs, images, repeats, notes):
    result = {"executor": kind, "jobs": jobs, "runs_s": [], "steady_images_per_s": []}
    executor = make_executor(kind, jobs=jobs)
    if kind == "ray":
        t = time.perf_counter()
        start_ray(jobs=jobs)
        result["ray_init_s"] = round(time.perf_counter() - t, 2)
    try:
        for _ in range(repeats):
            fz = make_featurizer(cache_dir=False, progress=False)
            fz.config_key  # build the driver's engine outside the clock
            timed = None if executor.serial else _Timed(executor)
            t = time.perf_counter()
            X = fz.transform(images, executor=timed)
            seconds = time.perf_counter() - t
            assert X.shape[0] == len(images) and fz.n_computed == len(images)
            result["runs_s"].append(round(seconds, 2))
            if timed is not None:
                rate = _steady_rate(timed.events, jobs)
                result["steady_images_per_s"].append(None if rate is None else round(rate, 2))
            print(
                f"  {kind}:{jobs}  {seconds:.1f} s  {len(images) / seconds:.2f} img/s", flush=True
            )
    finally:
        executor.close()
        if kind == "ray":
            import ray

            ray.shutdown()
    result["images_per_s"] = round(len(images) / statistics.median(result["runs_s"]), 2)
    steady = [r for r in result["steady_images_per_s"] if r is not None]
    result["steady_median"] = round(statistics.median(steady), 2) if steady else None
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="local:1,local:2,ray:1,ray:2")
    ap.add_argument("--out", default="benchmarks/results/executor_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # local:1 = one worker with one thread, like each worker
    images = load_elpv("mono").subset(list(range(args.n_images)))
    t = time.perf_counter()
    for i in range(len(images)):
        image_digest(images.rgb(i))
    driver_us = (time.perf_counter() - t) / len(images) * 1e6
    notes = []
    results = []
    for spec in args.configs.split(","):
        kind, _, jobs = spec.partition(":")
        print(spec, flush=True)
        results.append(run_config(kind, int(jobs or 1), images, args.repeats, notes))
    by = {(r["executor"], r["jobs"]): r for r in results}
    overhead = {}
    for jobs in (1, 2):
        if ("local", jobs) in by and ("ray", jobs) in by:
            overhead[jobs] = round(
                by["local", jobs]["images_per_s"] / by["ray", jobs]["images_per_s"] - 1, 3
            )
    load = os.getloadavg()
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "loadavg_at_end": [round(x, 2) for x in load],
        },
        "n_images": len(images),
        "repeats": args.repeats,
        "driver_us_per_image": round(driver_us, 1),
        "results": results,
        "ray_slower_than_local_by": overhead,
        "notes": notes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    for r in results:
        print(
            f"{r['executor']}:{r['jobs']}  {r['images_per_s']} img/s end to end (runs "
            f"{r['runs_s']} s), steady {r['steady_median']} img/s"
            + (f", ray init {r['ray_init_s']} s" if "ray_init_s" in r else "")
        )


if __name__ == "__main__":
    main()
