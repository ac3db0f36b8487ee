"""Images → cached feature arrays ``(n_images, n_views, n_features)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .._errors import ConfigError
from .._hashing import image_digest
from .._io import StrPath
from .backbones import FeatureExtractor
from .cache import FeatureCache, default_cache_dir
from .engines import ENGINES, make_engine
from .storage import empty_features
from .views import ViewSpec, scaled_inputs

if TYPE_CHECKING:
    from ..data import ImageSet
    from ..executors import Executor

__all__ = ["Featurizer"]


@dataclass
class Featurizer:
    """Extracts (and caches) multi-scale pooled backbone features of every view of every image.

    For each image, each view (rotation/flip) is fed to the frozen backbone at
    every scale of ``views``; the pooled stage features of all scales are
    concatenated, giving ``n_features = len(scales) × Σ stage channels``.

    Parameters
    ----------
    backbone, weights, stages
        See :class:`FeatureExtractor`.
    views : ViewSpec
        Size, scales, rotations and flips.
    cache_dir : path, None or False
        Feature cache folder; None → :func:`default_cache_dir`; False → no cache.
    batch_size : int
        Images per backbone pass (each brings ``views.n_views`` tensors). The
        default 1 makes an image's features independent of which other images
        were computed with it (batched kernels can differ in the last float
        bits), so a cold and a warm cache give bit-identical features; on the
        CPUs measured it was also no slower than larger batches (BENCHMARKS.md).
    engine : "auto", "onnxruntime" or "torch"
        What runs the backbone (:mod:`robustsdd.features.engines`): ``"auto"``
        uses ONNX Runtime (faster on CPUs, BENCHMARKS.md §5) when it is installed and matches
        PyTorch on a probe batch, else PyTorch. The resolved name is
        :attr:`engine_name` and is part of the cache key.
    channels_last : bool
        With the PyTorch engine, run the backbone in channels-last memory format
        (same features to float rounding; faster with some torch builds).
    progress : bool
        Show a progress bar over images that must be computed.

    Examples
    --------
    >>> fz = Featurizer(weights=None, views=ViewSpec(size=32, scales=(1,), rotations=(0,),
    ...                 flips=False), cache_dir=False, progress=False)
    >>> import numpy as np
    >>> from robustsdd.data import ImageSet
    >>> imgs = ImageSet([np.zeros((40, 40), np.uint8)], [0], ["black"])
    >>> fz.transform(imgs).shape
    (1, 1, 320)
    """

    backbone: str = "efficientnet_lite0"
    weights: StrPath | None = "offline"
    stages: Sequence[int] = (-1,)
    views: ViewSpec = field(default_factory=ViewSpec)
    cache_dir: StrPath | Literal[False] | None = None
    batch_size: int = 1
    engine: str = "auto"
    channels_last: bool = True
    progress: bool = True

    def __post_init__(self):
        self.stages = tuple(int(s) for s in self.stages)
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.engine not in ENGINES:
            raise ConfigError(
                f"unknown engine {self.engine!r}; choose one of: {', '.join(ENGINES)}"
            )
        if self.views.geometry == "tile" and not self.tiles_supported:
            raise ConfigError(
                'geometry "tile" needs patch features (PatchCore): a pooled feature of a '
                "tile would describe part of an image, not the image"
            )
        self._extractor = None
        self._engine = None
        self.notes = []  # e.g. why engine="auto" fell back to PyTorch
        if self.cache_dir is False:
            self.cache = None
        else:
            self.cache = FeatureCache(self.cache_dir or default_cache_dir())
        self.n_computed = 0  # images whose features were computed (cache misses)

    #: Whether this kind of features can be computed tile by tile (``geometry="tile"``).
    tiles_supported = False
    #: Whether a set's features may hold NaN padding rows (patch grids of several sizes).
    pads = False

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.backbone, self.weights, self.stages)
        return self._extractor

    @property
    def engine_name(self) -> str:
        """The engine that computes features here ("onnxruntime" or "torch")."""
        return self._runner.name

    @property
    def _runner(self):
        if self._engine is None:
            self._engine, note = make_engine(
                self._backbone_module(), self.engine, self.channels_last
            )
            if note:
                self.notes.append(note)
        return self._engine

    def _backbone_module(self):
        """What the engine runs on a normalised batch: pooled features (N, F)."""
        return self.extractor

    @property
    def n_features(self) -> int:
        return self.extractor.n_features * len(self.views.scales)

    @property
    def feature_shape(self) -> tuple:
        """Shape of one image's features: (n_views, n_features), whatever its size."""
        return (self.views.n_views, self.n_features)

    def image_feature_shape(self, image_shape: Sequence[int]) -> tuple:
        """Shape of the features of an image of ``image_shape`` (H, W[, 3])."""
        return self.feature_shape

    def allocate(self, shapes: Sequence[tuple]) -> np.ndarray:
        """The output for images whose features have ``shapes`` (float32, uninitialised;
        memory-mapped when large, :func:`~robustsdd.features.storage.empty_features`)."""
        return empty_features((len(shapes), *self.feature_shape))

    def place(self, out: np.ndarray, i: int, features: np.ndarray) -> None:
        """Write image ``i``'s features into :meth:`allocate`'s output."""
        out[i] = features

    def assemble(self, feats: list) -> np.ndarray:
        """Per-image feature arrays → one float32 array (n, *shape)."""
        out = self.allocate([f.shape for f in feats])
        for i, f in enumerate(feats):
            self.place(out, i, f)
        return out

    @property
    def config_key(self) -> str:
        return f"{self.extractor.key}|engine={self.engine_name}||{self.views.key}"

    def to_dict(self) -> dict:
        """The settings needed to recompute the same features (for model configs)."""
        return {
            "backbone": self.backbone,
            "weights": self.weights
            if isinstance(self.weights, (str, type(None)))
            else str(self.weights),
            "weights_id": self.extractor.weights_id,
            "stages": list(self.stages),
            "views": self.views.to_dict(),
            "engine": self.engine_name,
        }

    def transform(self, images: ImageSet, executor: Executor | None = None) -> np.ndarray:
        """Features of every image of an :class:`ImageSet`: float32 (n, n_views, n_features).

        ``executor`` (a :class:`robustsdd.executors.Executor`; None: this process)
        computes the cache misses in worker processes or on Ray, with the same
        features; only this process writes the cache (:mod:`robustsdd.features.parallel`).
        """
        if executor is not None and not executor.serial:
            from .parallel import transform_parallel

            return transform_parallel(self, images, executor)
        n = len(images)
        key = self.config_key
        # First pass: what each image is (its digest) and the shape of its features, so the
        # output is allocated once. Images are not held between passes: a cache miss is
        # decoded again when computed, and memory stays bounded by one batch of images
        # plus the output (memory-mapped when large: robustsdd.features.storage).
        digests, shapes = [], []
        shrunk = Shrinkage(self.views)
        for i in range(n):
            rgb = images.rgb(i)
            shrunk.add(rgb.shape)
            digests.append(image_digest(rgb))
            shapes.append(self.image_feature_shape(rgb.shape))
        shrunk.report(self.notes)
        out = self.allocate(shapes)
        todo = []  # indices of cache misses
        for i in range(n):
            cached = self.cache.get(digests[i], key) if self.cache is not None else None
            if cached is not None and cached.shape == shapes[i]:
                self.place(out, i, cached)
            else:
                todo.append(i)
        if todo:
            bar = tqdm(
                total=len(todo), desc="features", unit="img", disable=not self.progress, leave=False
            )
            try:
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start : start + self.batch_size]
                    feats = self._compute([images.rgb(i) for i in chunk])
                    for i, f in zip(chunk, feats):
                        self.place(out, i, f)
                        if self.cache is not None:
                            self.cache.put(digests[i], key, f)
                    self.n_computed += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
        return out

    def _compute(self, rgbs: list) -> list:
        """Features of each image (a list of arrays of :meth:`image_feature_shape`)."""
        run = self._runner
        views = [v for rgb in rgbs for v in self.views.make(rgb)]
        rows: list = [None] * len(views)
        with torch.inference_mode():
            # Views of one shape share a pass (rotated rectangles have their sides swapped).
            for idx in _by_shape(views).values():
                batch = self.extractor.normalize(torch.stack([views[j] for j in idx]))
                per_scale = [run(x) for x in scaled_inputs(batch, self.views)]
                feats = np.concatenate(per_scale, axis=1).astype(np.float32, copy=False)
                for j, f in zip(idx, feats):
                    rows[j] = f
        v = self.views.n_views
        return [np.stack(rows[i * v : (i + 1) * v]) for i in range(len(rgbs))]


def _by_shape(tensors: Sequence[torch.Tensor]) -> dict:
    """Indices of ``tensors`` grouped by shape, in first-seen order."""
    groups: dict = {}
    for j, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(j)
    return groups


class Shrinkage:
    """Counts images that reach the backbone at a low resolution, for one note per call.

    Two cases lose detail without cropping anything: an image more elongated than
    ``views.max_aspect`` (``"keep_aspect"`` shrinks it below the input size) and an image
    shrunk more than :data:`SHRINK_NOTE` times (small details are averaged away;
    ``geometry="tile"`` keeps them, with patch features).
    """

    def __init__(self, views: ViewSpec):
        self.views = views
        self.elongated = self.huge = 0

    def add(self, shape: Sequence[int]) -> None:
        if self.views.geometry != "keep_aspect":
            return  # crop/squash/pad are chosen knowingly; tiles keep the resolution
        h, w = int(shape[0]), int(shape[1])
        if max(h, w) > self.views.max_aspect * min(h, w):
            self.elongated += 1
        elif self.views.placement(h, w).shrink > SHRINK_NOTE:
            self.huge += 1

    def report(self, notes: list) -> None:
        v = self.views
        if self.elongated:
            notes.append(
                f"{self.elongated} image(s) are more elongated than 1:{v.max_aspect:g}: "
                f"seen whole, with the short side below {v.size} px (raise max_aspect to "
                "see them larger)"
            )
        if self.huge:
            notes.append(
                f"{self.huge} image(s) were shrunk more than {SHRINK_NOTE}x to {v.size} px "
                "on the short side: defects a few pixels wide may vanish (geometry "
                '"tile" keeps the full resolution, with patch features)'
            )


#: Shrink factor above which a note says that small details may be lost: at 2.7x (600 px
#: images at 224) resizing already lost 6-14 px defects that tiles found (BENCHMARKS.md §8).
SHRINK_NOTE = 2
