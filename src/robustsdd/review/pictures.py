"""Pictures for reports and heat-maps: thumbnails, anomaly-map overlays, the score histogram.

Everything returns bytes or PIL images; :func:`data_uri` embeds bytes in HTML, so a
report needs no file beside it. Matplotlib is used through its Agg canvas directly,
never through ``pyplot``'s global state.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

__all__ = [
    "thumbnail",
    "heatmap_overlay",
    "score_histogram_png",
    "png_bytes",
    "jpeg_bytes",
    "data_uri",
    "safe_stem",
]


def thumbnail(rgb: np.ndarray, size: int = 160) -> Image.Image:
    """The whole image, shrunk (never enlarged) to fit a ``size`` square."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


def heatmap_overlay(
    rgb: np.ndarray, amap: np.ndarray, size: int | None = None, alpha: float = 0.45
) -> Image.Image:
    """An anomaly map drawn over the whole image: as large as the image, or shrunk (aspect
    kept) to fit a ``size`` square.

    ``amap`` is in the image's coordinates (any resolution: it is resized onto the
    picture). Colours are relative within the map (its minimum to its maximum); the
    image's score, not the colour, says how anomalous the image is.
    """
    from matplotlib import colormaps

    picture = Image.fromarray(np.ascontiguousarray(rgb))
    if size is not None:
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    a = np.asarray(amap, dtype=np.float64)
    if a.ndim != 2 or not a.size:
        raise ValueError(f"an anomaly map must be a 2-D array, got shape {a.shape}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    span = a.max() - a.min()
    a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
    small = Image.fromarray((a * 255).astype(np.uint8))
    big = np.asarray(small.resize(picture.size, Image.Resampling.BILINEAR)) / 255.0
    colour = (colormaps["inferno"](big)[:, :, :3] * 255).astype(np.float64)
    blended = (1 - alpha) * np.asarray(picture, dtype=np.float64) + alpha * colour
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def score_histogram_png(
    scores: ArrayLike, keep: ArrayLike, *, lines: Mapping[str, float], xlabel: str
) -> bytes:
    """A histogram of training scores, kept and removed stacked, with labelled vertical lines.

    ``lines`` maps a label (e.g. ``"decision threshold 1.23"``) to its score.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = np.asarray(scores, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    finite = np.isfinite(s)
    values = s[finite]
    fig = Figure(figsize=(7.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if values.size:
        lo = min([values.min()] + [v for v in lines.values() if np.isfinite(v)])
        hi = max([values.max()] + [v for v in lines.values() if np.isfinite(v)])
        log = lo > 0 and hi / lo > 100  # held-out scores can span decades
        if log:
            bins = np.geomspace(lo, hi * 1.0001, 41)
            ax.set_xscale("log")
        else:
            bins = np.linspace(lo, hi + 1e-12 * max(1.0, abs(hi)), 41)
        groups = [(s[finite & keep], "#4c78a8", "kept"), (s[finite & ~keep], "#e45756", "removed")]
        groups = [g for g in groups if g[0].size]
        ax.hist(
            [g[0] for g in groups],
            bins=bins,  # type: ignore[arg-type]  # matplotlib takes an array of bin edges
            stacked=True,
            color=[g[1] for g in groups],
            label=[g[2] for g in groups],
        )
    styles = ["-", "--", ":"]
    for i, (label, value) in enumerate(lines.items()):
        if np.isfinite(value):
            ax.axvline(value, color="black", ls=styles[i % 3], lw=1.3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def safe_stem(name: str, limit: int = 60) -> str:
    """A file-name-safe stem from an image name (for heat-map files)."""
    stem = name.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return stem[:limit] or "image"
