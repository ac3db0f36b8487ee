"""Nearest-neighbour search for PatchCore's scoring: robustsdd's exact torch search vs faiss.

Usage: python benchmarks/neighbour_search.py [--queries 78400,313600] [--banks 784,2048,8192]
                                            [--repeats 3]

PatchCore scores every query patch by its distance to the nearest memory-bank patch; in a
``fit`` of N images the out-of-fold scoring alone queries all N × 784 training patches. This
times that search on real patch features (the ensemble recipe's PatchCore columns of ELPV
cells; the bank a random subset of other cells' patches) for:

* ``torch``: :func:`robustsdd.detectors._neighbours.knn_distances`, exact, chunked matrix
  products (what robustsdd uses);
* ``faiss-flat``: faiss ``IndexFlatL2``, exact (Johnson et al., 2019; PyPI ``faiss-cpu``);
* ``faiss-hnsw``: faiss ``IndexHNSWFlat`` (M = 32, efSearch = 64), approximate; its build
  time is included, since a bank is searched once per fit.

Each is timed ``--repeats`` times (median), and each approximate result is compared with the
exact distances: the share of queries whose nearest distance differs by more than 1e-4
relative, and the largest relative error. faiss is not a robustsdd dependency; this script
needs ``pip install faiss-cpu``. Results: ``benchmarks/results/neighbour_search.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path("benchmarks/results/neighbour_search")


def patch_rows(n_rows: int, offset: int) -> np.ndarray:
    """``n_rows`` patch feature rows of ELPV cells, from image ``offset`` on."""
    from robustsdd.data import load_elpv
    from robustsdd.recipes import make_components

    parts = make_components("ensemble", progress=False)  # its PatchCore member's columns
    pool = load_elpv("both", include_uncertain=True)
    per_image = 784
    n_images = -(-n_rows // per_image)
    X = parts.featurizer.transform(pool.subset(range(offset, offset + n_images)))
    X = X[:, :, : parts.detector.patch_channels]
    return np.ascontiguousarray(X.reshape(-1, X.shape[2])[:n_rows], dtype=np.float32)


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main():
    import faiss

    from robustsdd.detectors._neighbours import knn_distances

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", default="78400,313600")
    ap.add_argument("--banks", default="784,2048,8192")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    queries = [int(v) for v in args.queries.split(",")]
    banks = [int(v) for v in args.banks.split(",")]
    all_queries = patch_rows(max(queries), 0)
    bank_pool = patch_rows(max(banks) * 8, 1500)  # other images
    rng = np.random.default_rng(0)
    rows = []
    for n_bank in banks:
        bank = bank_pool[np.sort(rng.choice(len(bank_pool), n_bank, replace=False))]
        for n_q in queries:
            q = all_queries[:n_q]
            t_torch, exact = timed(lambda: knn_distances(q, bank, 1), args.repeats)

            def flat():
                index = faiss.IndexFlatL2(bank.shape[1])
                index.add(bank)
                return np.sqrt(np.maximum(index.search(q, 1)[0][:, 0], 0))

            def hnsw():
                index = faiss.IndexHNSWFlat(bank.shape[1], 32)
                index.hnsw.efSearch = 64
                index.add(bank)
                return np.sqrt(np.maximum(index.search(q, 1)[0][:, 0], 0))

            row = {"bank": n_bank, "queries": n_q, "torch": t_torch}
            for name, fn in (("faiss-flat", flat), ("faiss-hnsw", hnsw)):
                seconds, d = timed(fn, args.repeats)
                rel = np.abs(d - exact) / np.maximum(exact, 1e-6)
                row[name] = seconds
                row[f"{name} differ"] = float((rel > 1e-4).mean())
                row[f"{name} max rel err"] = float(rel.max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    write(rows, " ".join(sys.argv[1:]))


def write(rows, argv: str) -> None:
    from robustsdd._io import atomic_write_bytes

    command = f"python benchmarks/neighbour_search.py {argv}".strip()
    lines = [
        "# Nearest-neighbour search: exact torch vs faiss (PatchCore scoring)",
        "",
        f"Command: `{command}`. Median seconds of the repeats; `differ`: share of queries "
        "whose nearest distance differs from the exact one by more than 1e-4 relative.",
        "",
        "| bank | queries | torch (exact) | faiss flat (exact) | faiss HNSW | HNSW differ "
        "| HNSW max rel. error | flat / torch | HNSW / torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bank']} | {r['queries']} | {r['torch']:.2f} | {r['faiss-flat']:.2f} | "
            f"{r['faiss-hnsw']:.2f} | {r['faiss-hnsw differ']:.3f} | "
            f"{r['faiss-hnsw max rel err']:.3f} | {r['faiss-flat'] / r['torch']:.2f} | "
            f"{r['faiss-hnsw'] / r['torch']:.2f} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(OUT.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(
        OUT.with_suffix(".json"),
        (json.dumps({"command": command, "rows": rows}, indent=1) + "\n").encode(),
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
