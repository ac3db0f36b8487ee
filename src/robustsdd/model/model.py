"""A saved model: detector, feature settings and decision threshold, in one folder.

A model folder (written by :func:`robustsdd.fit_folder` or ``robustsdd fit``) holds

``robustsdd.json``
    The model config: everything needed to score a new image (backbone, weights
    source and id, views, preprocessing), the decision threshold and how it was
    chosen, the cleaning settings, package versions and the names of the files below.
``config.json`` + ``state.safetensors``
    The detector (see :mod:`robustsdd.detectors.base`); safetensors, never pickles.
``backbone.safetensors``
    Only for a backbone with weights from a local file: a copy of those weights, so
    the folder is complete on its own.
``train_scores.csv``, ``report.html``
    Every training image's scores, and the review report.

Loading validates every file: a missing, garbled or foreign file, or one made by
an incompatible version, is a :class:`~robustsdd.ModelFileError` naming the file,
and no path in ``robustsdd.json`` may point outside the folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np

from .._errors import ConfigError, DataError, ModelFileError
from .._io import StrPath, atomic_write_bytes, atomic_write_json, json_safe
from ..data import UNKNOWN, ImageSet, load_unlabeled
from ..data.geometry import map_to_image
from ..detectors.base import (
    DETECTOR_CONFIG,
    DETECTOR_STATE,
    MODEL_FORMAT_VERSION,
    BaseDetector,
    load_detector_files,
    localizes,
)
from ..features import Featurizer
from .files import (
    BACKBONE_WEIGHTS,
    MODEL_CONFIG,
    MODEL_FORMAT,
    copy_backbone_weights,
    featurizer_from_config,
    inside,
    package_versions,
    read_model_config,
    weights_id_of_copy,
)
from .predictions import Predictions, check_output_outside, collect_images

__all__ = ["Model", "MODEL_CONFIG", "MODEL_FORMAT", "as_imageset"]

#: Images to score: an ImageSet, a folder, or image paths and decoded arrays.
Images: TypeAlias = "ImageSet | StrPath | Iterable[StrPath | np.ndarray]"


class Model:
    """A trained detector with the feature settings and decision threshold it was fitted with.

    Build one with :func:`robustsdd.fit_folder` or read a folder with :meth:`load`.

    Parameters
    ----------
    detector : BaseDetector
        The fitted (fine-tuned) detector.
    featurizer : Featurizer
        Computes the features the detector was trained on.
    decision : dict
        ``threshold`` (a score above it is anomalous) and how it was chosen
        (``method``, ``quantile``, ``description``, ...).
    info : dict, optional
        Anything else to record (training set, cleaning, notes).

    Examples
    --------
    >>> model = Model.load("model/")                              # doctest: +SKIP
    >>> result = model.predict(["new_images/"])                   # doctest: +SKIP
    >>> result.to_csv("results.csv"); result.n_anomalous          # doctest: +SKIP
    """

    def __init__(
        self,
        detector: BaseDetector,
        featurizer: Featurizer,
        decision: dict,
        info: dict | None = None,
    ):
        self.detector = detector
        self.featurizer = featurizer
        self.decision = dict(decision)
        self.info = dict(info or {})
        self.path: Path | None = None
        self.config: dict | None = None

    # -- reading and writing ------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: StrPath,
        *,
        cache_dir: StrPath | Literal[False] | None = None,
        batch_size: int = 1,
        engine: str | None = None,
        progress: bool = False,
    ) -> Model:
        """Read and validate a model folder.

        Parameters
        ----------
        path : str or os.PathLike
            The folder written by ``robustsdd fit`` / :func:`fit_folder`.
        cache_dir : path, None or False
            Feature cache for scoring (None: the default cache; False: none).
        batch_size : int
            Images per backbone pass (see :class:`Featurizer`).
        engine : "auto", "onnxruntime", "torch" or None
            What runs the backbone. None: the engine the model was fitted with ("torch"
            stays "torch"; "onnxruntime" becomes "auto", which falls back to PyTorch where
            ONNX Runtime is missing), so scores reproduce the training scores.
        progress : bool
            Show the backbone's progress bar when scoring.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ModelFileError(f"{folder}: model folder missing (not found or not a folder)")
        config_path = folder / MODEL_CONFIG
        config = read_model_config(config_path)
        files = {
            key: inside(folder, rel, config_path, f"files.{key}")
            for key, rel in config["files"].items()
        }
        detector = load_detector_files(files["detector_config"], files["detector_state"])
        featurizer = featurizer_from_config(
            config["features"],
            files,
            config_path,
            cache_dir=cache_dir,
            batch_size=batch_size,
            engine=engine,
            progress=progress,
        )
        model = cls(
            detector,
            featurizer,
            config["decision"],
            {k: v for k, v in config.items() if k not in ("decision",)},
        )
        model.path, model.config = folder, config
        return model

    def save(self, path: StrPath, *, extra_files: dict | None = None) -> Path:
        """Write the detector, a backbone-weights copy if needed, and ``robustsdd.json`` (last).

        ``extra_files`` maps names (e.g. ``"report"``) to files already written inside
        ``path``; they are recorded in the config.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.detector.save(folder)
        files = {"detector_config": DETECTOR_CONFIG, "detector_state": DETECTOR_STATE}
        features = self.feature_config()
        if features["weights"] == "file":
            weights = self.featurizer.weights
            assert weights is not None, "feature_config says 'file' for a weights path only"
            copy_backbone_weights(weights, folder / BACKBONE_WEIGHTS)
            files["backbone_weights"] = BACKBONE_WEIGHTS
            features["weights_id"] = weights_id_of_copy(self.featurizer, folder / BACKBONE_WEIGHTS)
        elif (folder / BACKBONE_WEIGHTS).is_file():
            (folder / BACKBONE_WEIGHTS).unlink()  # left by an earlier fit into this folder
        for key, rel in (extra_files or {}).items():
            inside(folder, rel, folder / MODEL_CONFIG, f"files.{key}")
            files[key] = rel
        config = {
            **{
                k: v
                for k, v in self.info.items()
                if k not in ("format", "format_version", "files", "features", "decision")
            },
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "versions": package_versions(),
            "files": files,
            "features": features,
            "preprocessing": self.preprocessing(),
            "detector": {
                "name": self.detector.registry_name,
                "localizes": localizes(self.detector),
            },
            "decision": json_safe(self.decision),
        }
        atomic_write_json(folder / MODEL_CONFIG, json_safe(config))
        self.path, self.config = folder, config
        return folder

    def feature_config(self) -> dict:
        """The feature settings as recorded in ``robustsdd.json``."""
        features = dict(self.featurizer.to_dict())
        features.setdefault("channels_last", bool(self.featurizer.channels_last))
        weights = self.featurizer.weights
        if weights not in (None, "random", "offline", "imagenet"):
            features["weights"] = "file"
            features["weights_file"] = BACKBONE_WEIGHTS
            features["weights_origin"] = {
                "name": Path(str(weights)).name,
                "weights_id": self.featurizer.extractor.weights_id,
            }
        return features

    def preprocessing(self) -> dict:
        """How an image becomes the backbone's input (recorded for readers of the config)."""
        fx = self.featurizer.extractor
        views = self.featurizer.views
        return {
            "decode": "Pillow; EXIF orientation applied; grayscale, 16-bit, palette, RGBA and "
            "CMYK converted to 8-bit RGB (alpha dropped)",
            "geometry": views.geometry,
            "resize": GEOMETRY_WORDS[views.geometry].format(
                size=views.size, long=int(views.max_aspect * views.size)
            )
            + " (bilinear, antialiased when shrinking)",
            "input_range": [0.0, 1.0],
            "normalize_mean": [float(v) for v in fx.mean.flatten()],
            "normalize_std": [float(v) for v in fx.std.flatten()],
            "views": f"{len(views.rotations)} rotation(s)"
            + (" x 2 mirror" if views.flips else "")
            + f" at scales {list(views.scales)}",
        }

    # -- scoring ------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The decision threshold: a score above it is anomalous."""
        return float(self.decision["threshold"])

    @property
    def localizes(self) -> bool:
        """Whether the detector produces anomaly maps (heat-maps)."""
        return localizes(self.detector)

    def features(self, images: Images) -> np.ndarray:
        """Backbone features ``(n_images, n_views, n_features)`` of ``images``."""
        return self.featurizer.transform(as_imageset(images))

    def score(self, images: Images) -> np.ndarray:
        """Anomaly scores (higher = more anomalous) of an ImageSet, a folder, or a list of
        image paths or arrays."""
        return np.asarray(self.detector.decision_function(self.features(images)), np.float64)

    def anomaly_maps(self, images: Images) -> list[np.ndarray]:
        """One anomaly map per image, in the image's own pixels: a list of (H_i, W_i)
        float arrays (images may differ in size). Higher = more anomalous; pixels the
        geometry never showed the backbone (outside a ``"crop"`` square) get the map's
        minimum."""
        imgs = as_imageset(images)
        self._check_localizes()
        return self.maps_of(self.features(imgs), [imgs.rgb(i).shape for i in range(len(imgs))])

    def maps_of(self, X: np.ndarray, image_shapes: Sequence) -> list[np.ndarray]:
        """Anomaly maps from already computed features ``X`` of images of ``image_shapes``."""
        self._check_localizes()
        return map_patch_scores(self.detector, self.featurizer, X, image_shapes)

    def _check_localizes(self) -> None:
        if not self.localizes:
            raise ConfigError(
                f"the {self.detector.registry_name} detector does not localise "
                "anomalies: it gives one score per image, no heat-map"
            )

    def predict(
        self,
        paths: StrPath | Sequence[StrPath],
        *,
        threshold: float | None = None,
        batch_size: int = 64,
        progress: bool = False,
        heatmap_dir: StrPath | None = None,
    ) -> Predictions:
        """Score image files and folders (searched recursively) in batches.

        Parameters
        ----------
        paths : path or sequence of paths
            Image files and folders.
        threshold : float, optional
            Overrides the model's decision threshold.
        batch_size : int
            Images decoded and scored at a time (bounds memory, not the result).
        progress : bool
            Show a progress bar.
        heatmap_dir : path, optional
            Write a heat-map PNG per image there (detectors that localise only).

        Returns
        -------
        Predictions
            ``path``, ``score``, ``label`` (``"anomalous"`` if score > threshold) per image.
        """
        from tqdm.auto import tqdm

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if threshold is None:
            threshold, source = self.threshold, self.decision.get("description", "the model")
        else:
            threshold, source = float(threshold), "given"
            if not math.isfinite(threshold):
                raise ConfigError(f"threshold must be a finite number, got {threshold}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if heatmap_dir is not None:
            if not self.localizes:
                raise ConfigError(
                    f"--heatmaps: the {self.detector.registry_name} detector does "
                    "not localise anomalies (one score per image, no heat-map)"
                )
            check_output_outside(heatmap_dir, paths, what="heat-map folder")
        names, files = collect_images(paths)
        scores = np.empty(len(files))
        heatmaps: list[str] | None = [] if heatmap_dir is not None else None
        bar = tqdm(total=len(files), desc="scoring", unit="img", disable=not progress)
        try:
            for start in range(0, len(files), int(batch_size)):
                idx = range(start, min(start + int(batch_size), len(files)))
                batch = ImageSet(
                    [files[i] for i in idx], np.full(len(idx), UNKNOWN), [names[i] for i in idx]
                )
                X = self.featurizer.transform(batch)
                scores[start : start + len(idx)] = self.detector.decision_function(X)
                if heatmaps is not None:
                    assert heatmap_dir is not None, "heatmaps is a list only with a folder"
                    rgbs = [batch.rgb(j) for j in range(len(batch))]  # decoded once
                    maps = self.maps_of(X, [rgb.shape for rgb in rgbs])
                    heatmaps += _write_heatmaps(batch.names, rgbs, maps, Path(heatmap_dir), start)
                bar.update(len(idx))
        finally:
            bar.close()
        return Predictions(
            paths=names,
            scores=scores,
            threshold=threshold,
            threshold_source=source,
            heatmaps=heatmaps,
        )

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return (
            f"Model({self.detector.registry_name}, backbone {self.featurizer.backbone}, "
            f"threshold {self.threshold:.4g}{where})"
        )


# ---------------------------------------------------------------------------------------------
def as_imageset(images: Images) -> ImageSet:
    """An ImageSet from an ImageSet, a folder, or a list of image paths or arrays."""
    if isinstance(images, ImageSet):
        return images
    if isinstance(images, (str, os.PathLike)):
        if Path(images).is_dir():
            return load_unlabeled(images)
        images = [images]
    items = list(images)
    if not items:
        raise DataError("no images given")
    names = [f"array{i}" if isinstance(x, np.ndarray) else str(x) for i, x in enumerate(items)]
    items = [x if isinstance(x, np.ndarray) else Path(x) for x in items]
    return ImageSet(items, np.full(len(items), UNKNOWN), names)


#: How each geometry brings an image to the backbone, for the model config's readers.
GEOMETRY_WORDS = {
    "keep_aspect": "whole image, aspect kept: short side {size} px, long side at most "
    "{long} px, both rounded to multiples of 32",
    "squash": "whole image resized to {size}x{size} (aspect not kept)",
    "pad": "whole image, long side {size} px, centred on a {size}x{size} canvas of its mean colour",
    "crop": "centre square (side = the shorter image side) resized to {size}x{size}",
    "tile": "whole image at its own resolution (short side at least {size} px, sides rounded "
    "to multiples of 32) in overlapping {size}x{size} tiles",
}


def map_patch_scores(
    detector: BaseDetector, featurizer: Featurizer, X: np.ndarray, image_shapes: Sequence
) -> list[np.ndarray]:
    """A localising detector's maps of ``X`` in the images' own pixels.

    Patch detectors on patch features (PatchCore) give per-patch scores, placed on each
    image's own grid; any other localising detector's ``anomaly_maps(X)`` is taken as
    maps over the backbone input and drawn back through the geometry.
    """
    score_maps = getattr(featurizer, "score_maps", None)
    patch_scores = getattr(detector, "patch_scores", None)
    if score_maps is not None and patch_scores is not None:
        return score_maps(patch_scores(X), image_shapes)
    maps = np.asarray(detector.anomaly_maps(X), dtype=np.float64)
    views = featurizer.views
    return [
        map_to_image(m, views.placement(int(s[0]), int(s[1])), (int(s[0]), int(s[1])))
        for m, s in zip(maps, image_shapes)
    ]


def _write_heatmaps(
    names: Sequence[str], rgbs: Sequence, maps: Sequence, folder: Path, start: int
) -> list:
    from ..review.pictures import heatmap_overlay, png_bytes, safe_stem

    out = []
    for j, (name, rgb, amap) in enumerate(zip(names, rgbs, maps)):
        target = folder / f"{start + j:05d}_{safe_stem(name)}.png"
        atomic_write_bytes(target, png_bytes(heatmap_overlay(rgb, amap)))
        out.append(str(target))
    return out
