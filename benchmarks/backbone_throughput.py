"""Backbone throughput: eager PyTorch, channels-last, torch.compile, ONNX Runtime, OpenVINO.

Usage: python benchmarks/backbone_throughput.py [--sizes 224,448] [--batches 1,8,32]
           [--modes eager,channels_last,compile,onnxruntime,openvino] [--repeats 5]
           [--out benchmarks/results/backbone_throughput.json]

The frozen EfficientNet-Lite0 with the offline ImageNet weights, pooled last-stage
features (what robustsdd extracts), torch.set_num_threads(2) / 2 runtime threads.
For every (mode, size, batch): two warm-up calls, then ``--repeats`` timings of
enough calls to last about a second; the median inputs/s is reported. Each
mode's features are compared with eager PyTorch (NCHW) on real ELPV images at
that size: ``max_rel_diff`` = max |difference| / max(1, max |eager feature|).
Then the whole default pipeline (8 views x 3 scales per image, the featurizer of
``robustsdd.recipes.make_featurizer()``) in images/s with ``engine="torch"`` and
``engine="onnxruntime"``.
OpenVINO and torch.compile are skipped with a note where they do not install or run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robustsdd import ViewSpec
from robustsdd.data import load_elpv
from robustsdd.features.backbones import FeatureExtractor
from robustsdd.features.engines import OnnxRuntimeEngine, TorchEngine, _export_onnx
from robustsdd.recipes import make_featurizer


def _median_rate(call, batch: int, repeats: int) -> float:
    call(), call()  # warm-up (first-call allocations, compilation)
    t = time.perf_counter()
    call()
    per_call = max(time.perf_counter() - t, 1e-4)
    n_calls = max(1, math.ceil(1.0 / per_call))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n_calls):
            call()
        rates.append(n_calls * batch / (time.perf_counter() - t))
    return statistics.median(rates)


def _runners(extractor, modes, notes):
    """{mode: function(normalised NCHW tensor) -> (N, F) array}."""
    out = {}
    if "eager" in modes:
        out["eager"] = TorchEngine(extractor, channels_last=False)
    if "channels_last" in modes:
        out["channels_last"] = TorchEngine(extractor, channels_last=True)
    if "compile" in modes:
        try:
            compiled = torch.compile(extractor.forward_normalized, dynamic=False)

            def run_compiled(x):
                with torch.inference_mode():
                    return compiled(x.contiguous(memory_format=torch.channels_last)).numpy()

            out["compile"] = run_compiled
        except Exception as exc:  # noqa: BLE001
            notes.append(f"torch.compile unavailable: {exc}")
    if "onnxruntime" in modes:
        out["onnxruntime"] = OnnxRuntimeEngine(extractor)
    if "openvino" in modes:
        try:
            import openvino as ov

            core = ov.Core()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "backbone.onnx"
                path.write_bytes(_export_onnx(extractor))
                model = core.read_model(str(path))
                compiled_ov = core.compile_model(
                    model,
                    "CPU",
                    {
                        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                        "INFERENCE_PRECISION_HINT": "f32",
                        "PERFORMANCE_HINT": "LATENCY",
                    },
                )
            request = compiled_ov.create_infer_request()
            out["openvino"] = lambda x: request.infer([x.numpy()])[0].copy()
            notes.append(f"openvino {ov.__version__}")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"OpenVINO unavailable: {exc}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="224,448")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default="eager,channels_last,compile,onnxruntime,openvino")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pipeline-images", type=int, default=24)
    ap.add_argument("--out", default="benchmarks/results/backbone_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    modes = args.modes.split(",")

    # Not the recipe: this part times the bare backbone under each engine, one view per input.
    extractor = FeatureExtractor("efficientnet_lite0", "offline")
    notes: list = []
    runners = _runners(extractor, modes, notes)
    elpv = load_elpv("mono").subset(range(max(batches)))
    rows = []
    for size in sizes:
        # Real images for the agreement check; the same tensor for every mode.
        views = ViewSpec(size=size, scales=(1,), rotations=(0,), flips=False)
        real = extractor.normalize(torch.cat([views.make(elpv.rgb(i)) for i in range(len(elpv))]))
        reference = runners["eager"](real) if "eager" in runners else None
        for mode, run in runners.items():
            t = time.perf_counter()
            feats = run(real)  # also the first call: compilation for torch.compile
            first_call_s = time.perf_counter() - t
            diff = (
                float(np.abs(feats - reference).max() / max(1.0, np.abs(reference).max()))
                if reference is not None
                else None
            )
            for batch in batches:
                x = real[:batch].contiguous()
                rate = _median_rate(lambda: run(x), batch, args.repeats)
                rows.append(
                    {
                        "mode": mode,
                        "size": size,
                        "batch": batch,
                        "inputs_per_s": round(rate, 2),
                        "max_rel_diff": diff,
                        "first_call_s": round(first_call_s, 2),
                    }
                )
                print(
                    f"{mode:>14} {size}px batch {batch:>2}: {rate:8.2f} inputs/s  "
                    f"(max rel diff {diff if diff is None else f'{diff:.1e}'})",
                    flush=True,
                )

    pipeline = {}
    images = load_elpv("mono").subset(range(args.pipeline_images))
    for engine in ("torch", "onnxruntime"):
        fz = make_featurizer(engine=engine, cache_dir=False, progress=False)
        fz.transform(images.subset(range(2)))  # warm-up
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            fz.transform(images)
            rates.append(len(images) / (time.perf_counter() - t))
        pipeline[engine] = round(statistics.median(rates), 2)
        print(
            f"default pipeline ({engine}): {pipeline[engine]:.2f} images/s "
            f"({fz.views.n_views} views x {len(fz.views.scales)} scales, median of 3)",
            flush=True,
        )

    result = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "rows": rows,
        "pipeline_images_per_s": pipeline,
        "notes": notes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
