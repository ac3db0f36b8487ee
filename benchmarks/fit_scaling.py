"""How `fit` scales with the number of training images: time per stage and peak memory.

Usage: python benchmarks/fit_scaling.py run [--sizes 100,300,1000] [--detector ensemble]
                                           [--label NAME]
       python benchmarks/fit_scaling.py table [--label NAME]

The inspector's job at growing N: :func:`robustsdd.fit_images` with a detector's ``fit``
defaults (the ensemble: no cleaning, decision threshold from out-of-fold scores, report) on
the first N images of a fixed shuffle (seed 0) of all 2,624 ELPV cells (mono and poly, every
label: real pixels; the labels play no part in the cost). Each N runs in a fresh process,
twice:

* ``extract``: the recipe's features into an empty cache (cold: decoding, the backbone, the
  cache write) — the floor every fit pays once;
* ``fit``: ``fit_images`` reading those features from the now warm cache, with its stages
  timed by wrapping the library's functions (nothing in the library changes):
  ``features`` (cache read), ``train`` (the detector's fit, or stage 1 + removal + fine-tune
  with cleaning — for the ensemble this includes its members' out-of-fold fits),
  ``threshold`` (decision-threshold calibration), ``write`` (report, scores, model files).

Peak memory is the process's maximum resident set size (``ru_maxrss``) of each run. ``table``
fits ``time ∝ N^a`` by least squares on log time vs log N for every stage (over the sizes
run), and writes ``benchmarks/results/scaling/<label>.{json,md,png}`` (label: the detector's
name unless ``--label`` gives another, e.g. to keep a run made before a change). A ``run``
adds its sizes to the rows already stored under the label.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path("benchmarks/results/scaling")
STAGES = ("extract", "features", "train", "threshold", "write", "fit")


def _images(n: int):
    from robustsdd.data import load_elpv

    pool = load_elpv("both", include_uncertain=True)
    if n > len(pool):
        raise SystemExit(f"--sizes: at most {len(pool)} ELPV images, got {n}")
    order = np.random.default_rng(0).permutation(len(pool))
    return pool.subset(order[:n])


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def one(args) -> None:
    """One N, one phase, in this process; prints a JSON line."""
    from robustsdd.recipes import make_featurizer

    images = _images(args.n)
    featurizer = make_featurizer(args.detector, cache_dir=args.cache, progress=False)
    row: dict = {"n": args.n, "phase": args.phase}
    if args.phase == "extract":
        t = time.perf_counter()
        featurizer.transform(images)
        row["extract"] = time.perf_counter() - t
    else:
        row.update(_timed_fit(images, featurizer, args.detector))
    row["peak_mb"] = _peak_mb()
    print("RESULT " + json.dumps(row), flush=True)


def _timed_fit(images, featurizer, detector) -> dict:
    """``fit_images`` with its stages timed by wrapping the functions it calls."""
    from robustsdd import fit_images
    from robustsdd.workflow import fit as fit_module

    times = dict.fromkeys(("features", "train", "threshold", "write"), 0.0)

    def timed(stage, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[stage] += time.perf_counter() - t

        return wrapper

    featurizer.transform = timed("features", featurizer.transform)
    for stage, name in (
        ("train", "_fit_plain"),
        ("train", "_fit_osr"),
        ("threshold", "decide"),
        ("write", "_write_model_folder"),
    ):
        setattr(fit_module, name, timed(stage, getattr(fit_module, name)))
    with tempfile.TemporaryDirectory(prefix="robustsdd-scaling-") as work:
        t = time.perf_counter()
        fit_images(
            images,
            Path(work) / "model",
            detector=detector,
            featurizer=featurizer,
            progress=False,
            resume=False,
            log=lambda _: None,
        )
        total = time.perf_counter() - t
    return {**times, "fit": total}


def _child(n: int, phase: str, detector: str, cache: str) -> dict:
    cmd = [sys.executable, __file__, "one", "--n", str(n), "--phase", phase]
    cmd += ["--detector", detector, "--cache", cache]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"N={n} {phase} failed:\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def run(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.label or args.detector}.json"
    stored = json.loads(path.read_text()) if path.exists() else {"rows": []}
    rows = {r["n"]: r for r in stored["rows"]}
    for n in [int(v) for v in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="robustsdd-scaling-cache-") as cache:
            extract = _child(n, "extract", args.detector, cache)
            fit = _child(n, "fit", args.detector, cache)
        rows[n] = {
            "n": n,
            **{k: fit[k] for k in ("features", "train", "threshold", "write", "fit")},
            "extract": extract["extract"],
            "peak_mb_extract": extract["peak_mb"],
            "peak_mb_fit": fit["peak_mb"],
        }
        print(json.dumps({k: round(v, 1) for k, v in rows[n].items()}), flush=True)
        stored = {
            "command": "python benchmarks/fit_scaling.py run --sizes "
            + ",".join(str(k) for k in sorted(rows))
            + f" --detector {args.detector}"
            + (f" --label {args.label}" if args.label else ""),
            "detector": args.detector,
            "rows": [rows[k] for k in sorted(rows)],
        }
        path.write_text(json.dumps(stored, indent=1) + "\n")
    table(args)


def exponent(ns, seconds) -> float | None:
    """Least-squares slope of log seconds on log N (None with fewer than 2 sizes)."""
    ns, seconds = np.asarray(ns, float), np.asarray(seconds, float)
    ok = seconds > 0
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(ns[ok]), np.log(seconds[ok]), 1)[0])


def table(args) -> None:
    from robustsdd._io import atomic_write_bytes

    label = args.label or args.detector
    stored = json.loads((OUT / f"{label}.json").read_text())
    args.detector = stored["detector"]
    rows = stored["rows"]
    ns = [r["n"] for r in rows]
    lines = [
        f"# `fit` cost against N ({args.detector}, its `fit` defaults)",
        "",
        f"Command: `{stored['command']}`, then `python benchmarks/fit_scaling.py table"
        + (f" --label {args.label}`." if args.label else "`."),
        "",
        "Seconds per stage; `fit` = everything after extraction with features cached; "
        "`fit / extract` = that over the cold extraction; peak resident memory in MB.",
        "",
        "| N | extract (cold) | features (cache read) | train | threshold | write | fit "
        "| fit / extract | peak MB extract | peak MB fit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['extract']:.1f} | {r['features']:.1f} | {r['train']:.1f} | "
            f"{r['threshold']:.1f} | {r['write']:.1f} | {r['fit']:.1f} | "
            f"{r['fit'] / r['extract']:.2f} | {r['peak_mb_extract']:.0f} | {r['peak_mb_fit']:.0f} |"
        )
    slopes = {s: exponent(ns, [r[s] for r in rows]) for s in STAGES}
    lines += [
        "",
        "Exponent a of time ∝ N^a (least squares over the sizes above):",
        "",
        "| " + " | ".join(STAGES) + " |",
        "|" + "---|" * len(STAGES),
        "| " + " | ".join("–" if a is None else f"{a:.2f}" for a in slopes.values()) + " |",
        "",
    ]
    atomic_write_bytes(OUT / f"{label}.md", "\n".join(lines).encode())
    _plot(rows, args.detector, label)
    print("\n".join(lines))


def _plot(rows, detector, label) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in STAGES:
        ax.loglog(ns, [max(r[stage], 1e-2) for r in rows], marker="o", label=stage)
    ax.set_xlabel("training images N")
    ax.set_ylabel("seconds")
    ax.set_title(f"fit cost against N ({detector})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"{label}.png", dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["run", "table", "one"])
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--detector", default="ensemble")
    ap.add_argument("--label", default=None)
    ap.add_argument("--n", type=int)
    ap.add_argument("--phase", choices=["extract", "fit"])
    ap.add_argument("--cache")
    args = ap.parse_args()
    {"run": run, "table": table, "one": one}[args.command](args)


if __name__ == "__main__":
    main()
