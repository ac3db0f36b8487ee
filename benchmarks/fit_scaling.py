"""How `fit` scales with the number of training images: time per stage and peak memory.

Usage: python benchmarks/fit_scaling.py run [--sizes 100,300,1000] [--detector ensemble]
                                           [--label NAME] [--memory-limit-gb G]
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

Peak memory is the process's maximum resident set size (``ru_maxrss``) of each run, and its
largest anonymous resident memory (``RssAnon``, sampled): features above
``ROBUSTSDD_FEATURES_IN_MEMORY_MB`` are memory-mapped, and their file pages count in the first
but can be dropped by the system. ``--memory-limit-gb G`` runs each child in a cgroup (v1)
memory limit of G GB, page cache included: a run that completes fits in G. Beyond the
2,624 cells, N takes their mirror images (other pixels). ``table``
fits ``time ∝ N^a`` by least squares on log time vs log N for every stage (over the sizes
run), and writes ``benchmarks/results/scaling/<label>.{json,md,png}`` (label: the detector's
name unless ``--label`` gives another, e.g. to keep a run made before a change). A ``run``
adds its sizes to the rows already stored under the label.
"""

from __future__ import annotations

import argparse
import json
import os
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
    """The first n of a fixed shuffle of the ELPV cells; beyond the 2,624 cells, their mirror
    images (left-right) in the same order: other pixels, so other cache entries and patches."""
    from robustsdd.data import ImageSet, load_elpv

    pool = load_elpv("both", include_uncertain=True)
    if n > 2 * len(pool):
        raise SystemExit(f"--sizes: at most {2 * len(pool)} images (ELPV and mirrored), got {n}")
    order = np.random.default_rng(0).permutation(len(pool))
    first = pool.subset(order[: min(n, len(pool))])
    if n <= len(pool):
        return first
    extra = pool.subset(order[: n - len(pool)])
    mirrored = [np.ascontiguousarray(extra.rgb(i)[:, ::-1]) for i in range(len(extra))]
    return ImageSet(
        items=list(first.items) + mirrored,
        labels=np.concatenate([first.labels, extra.labels]),
        names=list(first.names) + [f"mirrored-{name}" for name in extra.names],
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


class AnonymousPeak:
    """Largest anonymous resident memory (``RssAnon``: heap, arrays — what the operating
    system cannot drop) seen by sampling ``/proc/self/status`` every 50 ms. ``ru_maxrss``
    also counts the file pages of memory-mapped features, which it can drop."""

    def __init__(self):
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def stop_mb(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak_kb / 1024


def one(args) -> None:
    """One N, one phase, in this process; prints a JSON line."""
    from robustsdd.recipes import make_featurizer

    anonymous = AnonymousPeak()
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
    row["peak_anon_mb"] = anonymous.stop_mb()
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


_CGROUP_ROOT = Path("/sys/fs/cgroup/memory")  # cgroup v1 memory controller


def _limited(limit_gb: float | None):
    """(preexec_fn, cgroup folder) that runs a child inside a memory cgroup of ``limit_gb``
    (page cache included: the kernel drops clean file pages before it kills), or (None, None)."""
    if not limit_gb:
        return None, None
    group = _CGROUP_ROOT / f"robustsdd-scaling-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(int(limit_gb * 2**30)))
    except OSError as err:
        raise SystemExit(
            f"--memory-limit-gb needs a writable cgroup v1 memory controller: {err}"
        ) from err

    def enter():
        (group / "cgroup.procs").write_text(str(os.getpid()))

    return enter, group


def _child(n: int, phase: str, detector: str, cache: str, limit_gb: float | None = None) -> dict:
    cmd = [sys.executable, __file__, "one", "--n", str(n), "--phase", phase]
    cmd += ["--detector", detector, "--cache", cache]
    enter, group = _limited(limit_gb)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=enter)
    finally:
        if group is not None:
            group.rmdir()
    if done.returncode != 0:
        killed = " (killed: over the memory limit?)" if done.returncode == -9 else ""
        raise SystemExit(f"N={n} {phase} failed{killed}:\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def run(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.label or args.detector}.json"
    stored = json.loads(path.read_text()) if path.exists() else {"rows": []}
    rows = {r["n"]: r for r in stored["rows"]}
    for n in [int(v) for v in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="robustsdd-scaling-cache-") as cache:
            extract = _child(n, "extract", args.detector, cache, args.memory_limit_gb)
            fit = _child(n, "fit", args.detector, cache, args.memory_limit_gb)
        rows[n] = {
            "n": n,
            **{k: fit[k] for k in ("features", "train", "threshold", "write", "fit")},
            "extract": extract["extract"],
            "peak_mb_extract": extract["peak_mb"],
            "peak_mb_fit": fit["peak_mb"],
            "peak_anon_mb_extract": extract["peak_anon_mb"],
            "peak_anon_mb_fit": fit["peak_anon_mb"],
            "memory_limit_gb": args.memory_limit_gb,
        }
        print(json.dumps({k: round(v, 1) for k, v in rows[n].items()}), flush=True)
        stored = {
            "command": "python benchmarks/fit_scaling.py run --sizes "
            + ",".join(str(k) for k in sorted(rows))
            + f" --detector {args.detector}"
            + (f" --label {args.label}" if args.label else "")
            + (f" --memory-limit-gb {args.memory_limit_gb:g}" if args.memory_limit_gb else ""),
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
        "`fit / extract` = that over the cold extraction; peak memory in MB: resident "
        "(`ru_maxrss`, which counts the file pages of memory-mapped features too) and "
        "anonymous (`RssAnon`, sampled every 50 ms: what the system cannot drop); "
        "`limit`: the memory cgroup each run was held in, GB (– none).",
        "",
        "| N | extract (cold) | features (cache read) | train | threshold | write | fit "
        "| fit / extract | peak MB extract | peak MB fit | anon MB extract | anon MB fit "
        "| limit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mb(value):
        return "–" if value is None else f"{value:.0f}"

    for r in rows:
        limit = r.get("memory_limit_gb")
        lines.append(
            f"| {r['n']} | {r['extract']:.1f} | {r['features']:.1f} | {r['train']:.1f} | "
            f"{r['threshold']:.1f} | {r['write']:.1f} | {r['fit']:.1f} | "
            f"{r['fit'] / r['extract']:.2f} | {mb(r['peak_mb_extract'])} | "
            f"{mb(r['peak_mb_fit'])} | {mb(r.get('peak_anon_mb_extract'))} | "
            f"{mb(r.get('peak_anon_mb_fit'))} | {f'{limit:g}' if limit else '–'} |"
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
    ap.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="run every child in a memory cgroup of this size (needs cgroup v1, root)",
    )
    args = ap.parse_args()
    {"run": run, "table": table, "one": one}[args.command](args)


if __name__ == "__main__":
    main()
