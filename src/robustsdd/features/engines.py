"""What runs the frozen backbone: PyTorch itself, or ONNX Runtime.

The backbone never trains, so any runtime that computes the same numbers will
do, and on a CPU the choice matters: ONNX Runtime ran EfficientNet-Lite0 2.4x
faster than eager PyTorch at 224² (batches of 8) on the 2-core machines this
project is built on, and the whole default feature pipeline 1.9x faster
(BENCHMARKS.md §5, ``benchmarks/backbone_throughput.py``).

``engine="auto"`` (the default) uses ONNX Runtime when it is installed and the
exported graph reproduces PyTorch on a probe batch (:data:`MATCH_TOLERANCE`),
and PyTorch otherwise; ``"torch"`` and ``"onnxruntime"`` ask for one of them
(the latter fails clearly if it cannot be used). The engine is part of the
feature-cache key: two engines agree to about 1e-5, not bit for bit, and the
cache promises bit-identical features for the same settings.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import nn

from .._errors import ConfigError

__all__ = [
    "ENGINES",
    "MATCH_TOLERANCE",
    "PooledFeatures",
    "TorchEngine",
    "OnnxRuntimeEngine",
    "make_engine",
]

ENGINES = ("auto", "onnxruntime", "torch")
# Largest |difference| allowed between an engine's features and eager PyTorch's,
# relative to the largest |feature| of the probe (float32 kernels differ in the
# order they sum in; measured differences are ~2e-6 relative, BENCHMARKS.md §5).
MATCH_TOLERANCE = 1e-4


class PooledFeatures(nn.Module):
    """Normalised images (N, 3, H, W) → pooled stage features (N, F): what the
    default :class:`~robustsdd.features.Featurizer` computes."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Module's __getattr__ is typed Tensor | Module; this is the extractor's method.
        pooled = cast("Callable[[torch.Tensor], torch.Tensor]", self.extractor.forward_normalized)
        return pooled(x)


def _as_module(backbone: nn.Module) -> nn.Module:
    # A FeatureExtractor itself stands for its pooled features.
    return PooledFeatures(backbone) if hasattr(backbone, "forward_normalized") else backbone


class TorchEngine:
    """Eager PyTorch, channels-last by default (1.8x faster than NCHW with an earlier
    torch build here; on par with it in BENCHMARKS.md §5)."""

    name = "torch"

    def __init__(self, module: nn.Module, channels_last: bool = True):
        module = _as_module(module).eval()
        self.channels_last = bool(channels_last)
        self.module = module.to(memory_format=torch.channels_last) if channels_last else module

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """The module's output for a normalised batch (N, 3, H, W), as float32 numpy."""
        with torch.inference_mode():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.module(x).float().numpy()


class OnnxRuntimeEngine:
    """The module exported to ONNX (in memory, batch and image size dynamic) and
    run by ONNX Runtime on the CPU with as many threads as torch uses."""

    name = "onnxruntime"

    def __init__(self, module: nn.Module):
        import onnxruntime as ort  # optional at import time of the package

        model = _export_onnx(_as_module(module))
        options = ort.SessionOptions()
        # The thread count torch uses (OMP_NUM_THREADS, or 1 in a sweep worker).
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]


def _export_onnx(module: nn.Module) -> bytes:
    """ONNX bytes of ``module``'s forward, with dynamic batch and image size.

    Uses the TorchScript exporter (``dynamo=False``): under a second, where the
    dynamo exporter took 40 s for this model and needs onnxscript.
    """
    buffer = io.BytesIO()
    probe = torch.zeros(1, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _as_module(module).eval(),
            (probe,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
            dynamo=False,
            input_names=["x"],
            output_names=["features"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}},
        )
    return buffer.getvalue()


def _probe_batch() -> torch.Tensor:
    # Two sizes, as the multi-scale views feed several; fixed, so the check repeats.
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 96, 96, generator=gen)


def check_match(engine, reference: TorchEngine, tolerance: float = MATCH_TOLERANCE) -> float:
    """Relative max |difference| of ``engine`` to ``reference`` on a probe batch;
    raises ConfigError above ``tolerance``."""
    worst = 0.0
    for x in (_probe_batch(), _probe_batch()[:, :, :64, :80]):
        ref = reference(x)
        got = engine(x)
        if got.shape != ref.shape or not np.all(np.isfinite(got)):
            raise ConfigError(
                f"the {engine.name} engine gave features of shape {got.shape} "
                f"(expected {ref.shape}) or non-finite values"
            )
        rel = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
        worst = max(worst, rel)
    if worst > tolerance:
        raise ConfigError(
            f"the {engine.name} engine's features differ from PyTorch's by "
            f"{worst:.2e} (relative), above the tolerance {tolerance:g}"
        )
    return worst


def make_engine(
    module: nn.Module, engine: str = "auto", channels_last: bool = True
) -> tuple[TorchEngine | OnnxRuntimeEngine, str | None]:
    """Build the engine named by ``engine`` that runs ``module`` (a
    :class:`FeatureExtractor`, for its pooled features, or any module of a
    normalised image batch, e.g. :class:`~robustsdd.features.patches.PatchFeatures`).

    Returns ``(engine, note)``; ``note`` is None, or says why ``"auto"`` fell back
    to PyTorch.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    reference = TorchEngine(module, channels_last=channels_last)
    if engine == "torch":
        return reference, None
    try:
        fast = OnnxRuntimeEngine(module)
        check_match(fast, reference)
        return fast, None
    except Exception as exc:  # noqa: BLE001 - any failure means: use PyTorch
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if engine == "onnxruntime":
            raise ConfigError(f"the onnxruntime engine cannot be used: {reason}") from None
        return reference, f"ONNX Runtime not used ({reason}); features computed by PyTorch"
