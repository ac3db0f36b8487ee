"""Patch features for PatchCore-style detectors: one vector per image location.

PatchCore (Roth et al., CVPR 2022) describes each location of an image by the
feature maps of two intermediate backbone stages, each averaged over its 3×3
neighbourhood (so a patch sees a little context), the coarser map resized to
the finer one, and the two concatenated. A :class:`PatchFeaturizer` computes
exactly that for every view of every image and caches it like the pooled
features: an image's features are ``(n_views × h × w, channels)``, view-major,
row-major within a view, on the image's grid ``(h, w)`` (:meth:`PatchFeaturizer.image_grid`).

Geometry. With the default ``"keep_aspect"`` the grid follows the image's shape (a
300 × 900 image at size 224 has a 28 × 84 grid), so images of different shapes have
different numbers of patches; a set's features are then padded to the largest count with
rows of NaN (:meth:`PatchFeaturizer.assemble`), which :class:`~robustsdd.PatchCore`
skips. Rotated and mirrored views are turned back to the image's orientation after the
backbone, so the patch at a grid position is the same image location in every view. With
``"tile"`` an image is seen at its own resolution in overlapping tiles, and each grid
cell takes its feature from the tile in which it lies most centrally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ConfigError
from ..data.geometry import STRIDE, map_to_image, tile_starts
from .backbones import FeatureExtractor
from .extract import Featurizer, _by_shape
from .storage import empty_features
from .views import ViewSpec

__all__ = ["PatchFeatures", "PatchFeaturizer", "scores_to_maps"]


class PatchFeatures(nn.Module):
    """Normalised images (N, 3, H, W) → patch features (N, h × w, C).

    ``extractor`` is a :class:`~robustsdd.features.FeatureExtractor` whose stages
    give the maps; ``pool`` is the side of the local averaging window (odd).
    """

    def __init__(self, extractor: FeatureExtractor, pool: int = 3):
        super().__init__()
        self.body = extractor.body
        self.pool = int(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.body(x)
        if isinstance(maps, torch.Tensor):
            maps = [maps]
        if self.pool > 1:
            # count_include_pad=False: border patches average their real neighbours only.
            maps = [
                F.avg_pool2d(
                    m, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False
                )
                for m in maps
            ]
        size = maps[0].shape[-2:]
        maps = [
            m
            if m.shape[-2:] == size
            else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        patches = torch.cat(maps, dim=1)  # (N, C, h, w)
        return patches.flatten(2).transpose(1, 2)


@dataclass
class PatchFeaturizer(Featurizer):
    """Per-location features of every view of every image, cached.

    Defaults follow the PatchCore-like floor of issue 6: EfficientNet-Lite0
    stages 2 and 3 (40 + 112 channels at strides 8 and 16), 3×3 average pooling,
    one view at 224 px (a 28 × 28 grid for a square image). Features of several scales
    cannot share a grid, so ``views.scales`` must be ``(1,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from robustsdd.data import ImageSet
    >>> from robustsdd.features import ViewSpec
    >>> fz = PatchFeaturizer(weights=None, views=ViewSpec(size=64, scales=(1,), rotations=(0,),
    ...                      flips=False), cache_dir=False, progress=False, engine="torch")
    >>> fz.patch_grid, fz.transform(ImageSet([np.zeros((70, 70), np.uint8)], [0], ["a"])).shape
    ((8, 8), (1, 64, 152))
    >>> fz.image_grid((64, 256))  # keep_aspect: the grid follows the image
    (8, 32)
    """

    stages: Sequence[int] = (2, 3)
    pool: int = 3

    tiles_supported = True
    pads = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.views.scales != (1.0,):
            raise ConfigError(f"patch features use one input scale; got scales {self.views.scales}")
        if self.pool < 1 or self.pool % 2 == 0:
            raise ConfigError(f"pool must be a positive odd number, got {self.pool}")
        if self.views.geometry == "tile" and self.views.size % STRIDE:
            raise ConfigError(
                f'geometry "tile" needs a size that is a multiple of {STRIDE} (tiles fall on '
                f"the patch grid), got {self.views.size}"
            )
        self._grids: dict = {}  # input (H, W) -> patch grid (h, w)
        self._offset: tuple[float, float] | None = None

    def _backbone_module(self):
        return PatchFeatures(self.extractor, self.pool)

    @property
    def n_features(self) -> int:
        return self.extractor.n_features  # channels of the chosen stages

    def _input_grid(self, h: int, w: int) -> tuple[int, int]:
        """The patch grid of an (h, w) backbone input, probed once per input shape."""
        if (h, w) not in self._grids:
            body = self.extractor.body  # built outside inference mode: its weights stay usable
            with torch.inference_mode():
                maps = body(torch.zeros(1, 3, h, w))
            first = maps[0] if isinstance(maps, (list, tuple)) else maps
            self._grids[h, w] = (int(first.shape[-2]), int(first.shape[-1]))
        return self._grids[h, w]

    @property
    def patch_grid(self) -> tuple:
        """(h, w) of the patch grid of a ``views.size`` square input (that of the first
        stage's map); an image's own grid is :meth:`image_grid`."""
        return self._input_grid(self.views.size, self.views.size)

    def _tile_stride(self) -> int:
        """Input pixels per patch-grid cell with tiles (the tile side over its grid)."""
        side = self.views.size
        g = self.patch_grid[0]
        if side % g:
            raise ConfigError(f"geometry 'tile': a {side} px tile has a {g}-cell grid, not exact")
        return side // g

    def image_grid(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """The patch grid (h, w) of an image of ``image_shape`` (H, W[, 3]), in the image's
        orientation; every view of the image is turned back onto it."""
        H, W = self.views.placement(int(image_shape[0]), int(image_shape[1])).input_shape
        if self.views.geometry == "tile":
            stride = self._tile_stride()
            return (H // stride, W // stride)
        return self._input_grid(H, W)

    def image_feature_shape(self, image_shape: Sequence[int]) -> tuple:
        h, w = self.image_grid(image_shape)
        return (self.views.n_views * h * w, self.n_features)

    @property
    def feature_shape(self) -> tuple:
        """Shape of the features of a square image (others: :meth:`image_feature_shape`)."""
        h, w = self.patch_grid
        return (self.views.n_views * h * w, self.n_features)

    def allocate(self, shapes: Sequence[tuple]) -> np.ndarray:
        """Output for per-image patch features of ``shapes``: (n, most patches, C); images
        with fewer patches (other shapes, other grids) get rows of NaN at the end."""
        longest = max((int(s[0]) for s in shapes), default=self.feature_shape[0])
        return empty_features((len(shapes), longest, self.n_features))

    def place(self, out: np.ndarray, i: int, features: np.ndarray) -> None:
        out[i, : len(features)] = features
        out[i, len(features) :] = np.nan

    def score_maps(self, patch_scores: np.ndarray, image_shapes: Sequence) -> list:
        """Patch scores (n, n_patches) → one map per image in its own pixels, (H_i, W_i).

        Each view's patch scores are interpolated between the centres of their features
        (:attr:`grid_offset`), the views combined by their maximum (so a map's peak is at
        most the image's score, equal up to interpolation), and the map drawn back onto
        the image through the geometry (:func:`~robustsdd.data.geometry.map_to_image`).
        """
        grids = [self.image_grid(shape) for shape in image_shapes]
        return scores_to_maps(patch_scores, grids, image_shapes, self.views, self.grid_offset)

    @property
    def grid_offset(self) -> tuple[float, float]:
        """Where a grid cell's features are centred, relative to the cell's geometric centre,
        in input pixels (rows, columns), measured once on this backbone.

        Strided convolutions with asymmetric ("same") padding centre their outputs up and to
        the left of the cell they are stored in: EfficientNet-Lite0 stages 2+3 by about
        8 input pixels, a whole cell. Maps drawn without this correction put a defect about
        a cell below and to the right of where it is. Measured by planting small bright
        dots on a grey input and locating the cell that responds (sub-cell centroid).
        """
        if self._offset is None:
            self._offset = _measure_grid_offset(
                PatchFeatures(self.extractor, self.pool), self.extractor.normalize
            )
        return self._offset

    def _compute(self, rgbs: list) -> list:
        run = self._runner
        views = [v for rgb in rgbs for v in self.views.make(rgb)]
        grids: list = [None] * len(views)  # (h, w, C) per view, in the view's orientation
        with torch.inference_mode():
            if self.views.geometry == "tile":
                for j, view in enumerate(views):
                    grids[j] = self._tiled(view)
            else:
                for shape, idx in _by_shape(views).items():
                    batch = self.extractor.normalize(torch.stack([views[j] for j in idx]))
                    h, w = self._input_grid(*shape[-2:])
                    for j, f in zip(idx, run(batch)):
                        grids[j] = f.reshape(h, w, -1)
        turns = self.views.view_transforms()
        v = len(turns)
        out = []
        for i in range(len(rgbs)):
            own = [_unturn(grids[i * v + t], *turns[t]) for t in range(v)]
            out.append(np.concatenate([g.reshape(-1, g.shape[-1]) for g in own]))
        return [f.astype(np.float32, copy=False) for f in out]

    def _tiled(self, view: torch.Tensor) -> np.ndarray:
        """Patch features (h, w, C) of a large view from overlapping tiles."""
        side, stride = self.views.size, self._tile_stride()
        H, W = view.shape[-2:]
        rows = tile_starts(H, side, self.views.tile_overlap, STRIDE)
        cols = tile_starts(W, side, self.views.tile_overlap, STRIDE)
        tiles = torch.stack([view[:, r : r + side, c : c + side] for r in rows for c in cols])
        g = side // stride
        feats = np.concatenate(
            [
                self._runner(self.extractor.normalize(tiles[s : s + 8]))
                for s in range(0, len(tiles), 8)
            ]
        ).reshape(len(rows), len(cols), g, g, -1)
        # Each cell from the tile whose centre is nearest (context on every side).
        ry, oy = _owners(H // stride, [r // stride for r in rows], g)
        rx, ox = _owners(W // stride, [c // stride for c in cols], g)
        return feats[ry[:, None], rx[None, :], oy[:, None], ox[None, :]]

    @property
    def config_key(self) -> str:
        return f"{super().config_key}|patches|pool={self.pool}"

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "kind": "patch",
            "pool": self.pool,
            "patch_grid": list(self.patch_grid),
        }


def _owners(length: int, starts: list, g: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``length`` grid cells along an axis: the tile (of side ``g`` cells,
    starting at ``starts``) whose centre is nearest, and the cell's offset in that tile."""
    cells = np.arange(length) + 0.5
    centres = np.asarray(starts, dtype=np.float64) + g / 2
    tile = np.abs(cells[:, None] - centres[None, :]).argmin(axis=1)
    return tile, np.arange(length) - np.asarray(starts)[tile]


def _unturn(grid: np.ndarray, quarter_turns: int, mirrored: bool) -> np.ndarray:
    """A view's patch grid (h, w, C) turned back to the image's orientation: undoes the
    mirror (applied last, across the width) and then the counter-clockwise turns."""
    if mirrored:
        grid = grid[:, ::-1]
    if quarter_turns:
        grid = np.rot90(grid, k=-quarter_turns, axes=(0, 1))
    return np.ascontiguousarray(grid)


def scores_to_maps(
    patch_scores: np.ndarray,
    grids: Sequence,
    image_shapes: Sequence,
    views: ViewSpec,
    offset: tuple[float, float] = (0.0, 0.0),
) -> list:
    """Patch scores (n, n_patches) → maps in the images' own pixels, given each image's
    patch grid (:meth:`PatchFeaturizer.image_grid`) and the backbone's
    :attr:`~PatchFeaturizer.grid_offset`: what :meth:`PatchFeaturizer.score_maps` does,
    without a backbone (cheap to send to worker processes).

    Each view's grid is interpolated to the input's pixels with the cells centred where
    their features are (the offset turned like the view), and the views' maps are
    combined by their maximum.
    """
    maps = []
    turns = views.view_transforms()
    for row, (h, w), shape in zip(np.asarray(patch_scores, dtype=np.float64), grids, image_shapes):
        where = views.placement(int(shape[0]), int(shape[1]))
        per_view = row[: views.n_views * h * w].reshape(views.n_views, h, w)
        full = None
        for grid, (quarter_turns, mirrored) in zip(per_view, turns):
            shift = _image_frame(offset, quarter_turns, mirrored)
            m = grid_to_input(grid, where.input_shape, shift)
            full = m if full is None else np.maximum(full, m)
        assert full is not None, "a ViewSpec has at least one view"
        maps.append(map_to_image(full, where, (int(shape[0]), int(shape[1]))))
    return maps


def grid_to_input(
    grid: np.ndarray, input_shape: Sequence[int], offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """A patch grid (h, w) interpolated (bilinear, edges held) onto the input's (H, W)
    pixels, cell (i, j) centred at ``((i + 0.5) H / h + offset[0], (j + 0.5) W / w +
    offset[1])``.

    >>> grid_to_input(np.array([[0.0, 1.0]]), (1, 4)).round(2).tolist()  # centres at 1 and 3
    [[0.0, 0.25, 0.75, 1.0]]
    >>> grid_to_input(np.array([[0.0, 1.0]]), (1, 4), (0, -1)).round(2).tolist()  # 0 and 2
    [[0.25, 0.75, 1.0, 1.0]]
    """
    rows = _interpolation(int(input_shape[0]), grid.shape[0], offset[0])
    cols = _interpolation(int(input_shape[1]), grid.shape[1], offset[1])
    return rows @ np.asarray(grid, dtype=np.float64) @ cols.T


def _interpolation(n_pixels: int, n_cells: int, offset: float) -> np.ndarray:
    """(n_pixels, n_cells) linear-interpolation weights from cell centres to pixels."""
    stride = n_pixels / n_cells
    u = (np.arange(n_pixels) + 0.5 - offset) / stride - 0.5  # fractional cell of each pixel
    u = np.clip(u, 0, n_cells - 1)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, n_cells - 1)
    t = u - lo
    out = np.zeros((n_pixels, n_cells))
    out[np.arange(n_pixels), lo] += 1 - t
    out[np.arange(n_pixels), hi] += t
    return out


def _image_frame(offset: tuple[float, float], quarter_turns: int, mirrored: bool) -> tuple:
    """A displacement (rows, columns) in a view's frame, in the image's frame: undoes the
    mirror, then the counter-clockwise turns (as :func:`_unturn` does to the grid)."""
    dy, dx = float(offset[0]), float(offset[1])
    if mirrored:
        dx = -dx
    for _ in range(quarter_turns):
        dy, dx = dx, -dy
    return dy, dx


def _measure_grid_offset(module: nn.Module, normalize) -> tuple[float, float]:
    """The mean displacement from a responding cell's centre to the dot that excited it."""
    side, dot = 160, 4
    positions = [56, 63, 70, 77, 84, 91, 98]  # interior, at every phase of an 8 px cell
    base = torch.full((1, 3, side, side), 0.5)
    batch = base.repeat(len(positions), 1, 1, 1)
    for b, p in enumerate(positions):  # a dot on the diagonal at p: both axes at once
        batch[b, :, p : p + dot, p : p + dot] = 1.0
    with torch.inference_mode():
        out = module(normalize(torch.cat([base, batch]))).numpy()
    n_cells = int(round(np.sqrt(out.shape[1])))
    stride = side / n_cells
    reference = out[0].reshape(n_cells, n_cells, -1)
    shifts = []
    for b, p in enumerate(positions):
        response = np.linalg.norm(out[b + 1].reshape(n_cells, n_cells, -1) - reference, axis=2)
        r, c = np.unravel_index(response.argmax(), response.shape)
        r0, c0 = max(0, r - 1), max(0, c - 1)
        window = response[r0 : r + 2, c0 : c + 2] ** 2
        cy = (window.sum(1) * np.arange(r0, r0 + window.shape[0])).sum() / window.sum()
        cx = (window.sum(0) * np.arange(c0, c0 + window.shape[1])).sum() / window.sum()
        centre = p + dot / 2
        shifts.append((centre - (cy + 0.5) * stride, centre - (cx + 0.5) * stride))
    dy, dx = np.mean(shifts, axis=0)
    return float(dy), float(dx)
