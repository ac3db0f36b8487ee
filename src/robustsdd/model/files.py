"""The files of a model folder: reading and validating ``robustsdd.json``, the backbone.

Every problem is a :class:`~robustsdd.ModelFileError` naming the file: missing,
garbled or foreign JSON, another format version, missing keys, a path that would
leave the model folder (``..``, absolute, or through a link), backbone weights that
differ from those the model was trained with.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

from .._errors import ConfigError, DataError, ModelFileError
from .._io import StrPath, atomic_write_bytes, read_json_file
from .._version import __version__
from ..detectors.base import MODEL_FORMAT_VERSION
from ..features import Featurizer, ViewSpec
from ..features.backbones import read_state_file
from ..features.patches import PatchFeaturizer

__all__ = [
    "MODEL_CONFIG",
    "MODEL_FORMAT",
    "BACKBONE_WEIGHTS",
    "read_model_config",
    "inside",
    "featurizer_from_config",
    "copy_backbone_weights",
    "weights_id_of_copy",
    "package_versions",
]

MODEL_CONFIG = "robustsdd.json"
MODEL_FORMAT = "robustsdd-model"
BACKBONE_WEIGHTS = "backbone.safetensors"
_REQUIRED_FILES = ("detector_config", "detector_state")
# Featurizer fields that say where or how fast features are computed, not what they are:
# chosen where the model is used. (Engines agree to ~1e-5; "auto" picks the same one on the
# same machine.)
_RUNTIME_FIELDS = {"cache_dir", "batch_size", "progress", "engine"}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {
        "robustsdd": __version__,
        "python": platform.python_version(),
    }
    for name in (
        "torch",
        "torchvision",
        "timm",
        "numpy",
        "scikit-learn",
        "Pillow",
        "safetensors",
        "FrEIA",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def read_model_config(config_path: Path) -> dict:
    folder = config_path.parent
    if not config_path.is_file():
        raise ModelFileError(
            f"{config_path}: missing; is {folder} a model folder written by `robustsdd fit`?"
        )
    config = read_json_file(config_path)
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_path}: not a robustsdd model config (foreign JSON)")
    if config.get("format") != MODEL_FORMAT:
        if "format" not in config and "robustsdd_version" in config:
            raise ModelFileError(
                f"{config_path}: made by robustsdd {config['robustsdd_version']}, an "
                f"incompatible version (no model format); this robustsdd reads model format "
                f"version {MODEL_FORMAT_VERSION}: refit the model"
            )
        raise ModelFileError(
            f"{config_path}: not a robustsdd model config (foreign JSON: "
            f"'format' is {config.get('format')!r}, not {MODEL_FORMAT!r})"
        )
    if config.get("format_version") != MODEL_FORMAT_VERSION:
        made_by = (
            (config.get("versions") or {}).get("robustsdd", "?")
            if isinstance(config.get("versions"), dict)
            else "?"
        )
        raise ModelFileError(
            f"{config_path}: model format version {config.get('format_version')!r} (made by "
            f"robustsdd {made_by}), an incompatible version; this robustsdd reads version "
            f"{MODEL_FORMAT_VERSION}: refit the model"
        )
    _require(config, config_path, "files", dict)
    _require(config, config_path, "features", dict)
    _require(config, config_path, "decision", dict)
    for key in _REQUIRED_FILES:
        if key not in config["files"]:
            raise ModelFileError(f"{config_path}: damaged: files.{key} is missing")
    features = config["features"]
    for key, kind in (("backbone", str), ("weights_id", str), ("stages", list), ("views", dict)):
        _require(features, config_path, key, kind, prefix="features.")
    threshold = config["decision"].get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise ModelFileError(
            f"{config_path}: damaged: decision.threshold must be a finite number, got {threshold!r}"
        )
    return config


def _require(d: dict, path: Path, key: str, kind: type, prefix: str = "") -> None:
    if not isinstance(d.get(key), kind):
        raise ModelFileError(f"{path}: damaged: {prefix}{key} is missing or not a {kind.__name__}")


def inside(folder: Path, rel: object, config_path: Path, key: str) -> Path:
    """``folder / rel``, refusing anything that could leave ``folder``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ModelFileError(f"{config_path}: {key} must be a file name, got {rel!r}")
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if (
        posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise ModelFileError(f"{config_path}: {key} = {rel!r} points outside the model folder")
    target = folder / posix
    try:
        target.resolve().relative_to(folder.resolve())
    except ValueError:  # a symbolic link out of the folder
        raise ModelFileError(
            f"{config_path}: {key} = {rel!r} points outside the model folder (through a link)"
        ) from None
    return target


def featurizer_from_config(
    features: dict,
    files: dict,
    config_path: Path,
    *,
    cache_dir: StrPath | Literal[False] | None,
    batch_size: int,
    engine: str | None,
    progress: bool,
) -> Featurizer:
    kinds = {"pooled": Featurizer, "patch": PatchFeaturizer}
    kind = kinds.get(features.get("kind", "pooled"))
    if kind is None:
        raise ModelFileError(
            f"{config_path}: features.kind must be one of "
            f"{', '.join(kinds)}, got {features.get('kind')!r}"
        )
    fields = {f.name for f in dataclasses.fields(kind)} - _RUNTIME_FIELDS
    kwargs = {k: v for k, v in features.items() if k in fields}
    weights = features.get("weights")
    if weights == "file":
        if "backbone_weights" not in files:
            raise ModelFileError(
                f"{config_path}: damaged: features.weights is 'file' but "
                "files.backbone_weights is missing"
            )
        kwargs["weights"] = files["backbone_weights"]
        if not files["backbone_weights"].is_file():
            raise ModelFileError(
                f"{files['backbone_weights']}: missing; the model folder is incomplete"
            )
    elif weights not in (None, "offline", "imagenet"):
        raise ModelFileError(
            f"{config_path}: features.weights must be 'offline', 'imagenet', "
            f"'file' or null, got {weights!r}"
        )
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    # Features computed by the engine the model was fitted with reproduce bit for bit.
    kwargs["engine"] = engine or ("torch" if features.get("engine") == "torch" else "auto")
    try:
        # Models saved before the geometry setting existed saw the centre square.
        kwargs["views"] = ViewSpec(**{"geometry": "crop", **features["views"]})
        featurizer = kind(**kwargs, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
        weights_id = featurizer.extractor.weights_id
    except ModelFileError:
        raise
    except ConfigError as exc:
        if engine and "engine" in str(exc):
            raise  # a bad --engine is the user's, not the file's
        raise ModelFileError(
            f"{config_path}: the feature settings cannot be used ({exc})"
        ) from None
    except (DataError, TypeError, ValueError) as exc:
        raise ModelFileError(
            f"{config_path}: the feature settings cannot be used ({exc})"
        ) from None
    if weights_id != features["weights_id"]:
        raise ModelFileError(
            f"{config_path}: the backbone weights found here ({weights_id}) "
            f"differ from those the model was trained with "
            f"({features['weights_id']})"
        )
    return featurizer


def copy_backbone_weights(source: StrPath, target: Path) -> None:
    """A safetensors copy of a local backbone weights file (no pickle, no outside path)."""
    from safetensors.torch import save as safetensors_bytes

    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in read_state_file(Path(source)).items()
    }
    atomic_write_bytes(target, safetensors_bytes(state))


def weights_id_of_copy(featurizer: Featurizer, path: Path) -> str:
    from ..features import FeatureExtractor

    return FeatureExtractor(featurizer.backbone, str(path), featurizer.stages).weights_id
