"""Decode any image (file or array) to one canonical form: (H, W, 3) ``uint8`` RGB.

Every later stage (views, features, reports) relies on that single form, so all the
awkward cases are settled here: EXIF orientation, palette and alpha modes, 16- and
32-bit grayscale, float arrays, and every way a file can be broken. Each failure is a
:class:`~robustsdd.DataError` whose message starts with the file path (or name).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .._errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "load_rgb", "list_images"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

#: Images with more pixels than this are refused (decompression-bomb guard). Pillow's own
#: guard (``2 * Image.MAX_IMAGE_PIXELS``) may refuse smaller ones first; both give DataError.
MAX_PIXELS = 200_000_000

_16BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I;16S"}


def load_rgb(item: str | os.PathLike | np.ndarray, name: str | None = None) -> np.ndarray:
    """Load an image file or convert an array to an (H, W, 3) ``uint8`` RGB array.

    Parameters
    ----------
    item : str, os.PathLike or numpy.ndarray
        A file Pillow can read, or an array of shape (H, W), (H, W, 1), (H, W, 3) or
        (H, W, 4) (alpha dropped) with dtype ``uint8``, ``uint16`` (scaled by 1/257),
        ``bool`` (0/255) or float in [0, 1] (scaled by 255).
    name : str, optional
        Used in error messages instead of the path (and for arrays).

    Returns
    -------
    numpy.ndarray
        A new (H, W, 3) ``uint8`` array.

    Raises
    ------
    DataError
        If the file is missing, empty, not an image, truncated or too large, or the
        array has an unsupported shape, dtype or value range.

    Examples
    --------
    >>> load_rgb(np.zeros((4, 5), dtype=np.uint8)).shape
    (4, 5, 3)
    """
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item, name or "<array>")
    if isinstance(item, (str, os.PathLike)):
        return _load_file(Path(item), name)
    raise DataError(
        f"{name or '<item>'}: expected a file path or a numpy array, got {type(item).__name__}"
    )


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder``, sorted by relative path, hidden files and folders skipped.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to search.
    recursive : bool, default True
        Whether to search subfolders.

    Returns
    -------
    list of pathlib.Path
        Files whose extension (any case) is in :data:`IMAGE_EXTENSIONS`.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_unlistable):
        # Pruning in place stops os.walk from descending into hidden folders (.git, .cache).
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for fn in filenames:
            if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / fn)
    # Sorting by path parts (not the joined string) gives the same order on every OS.
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _unlistable(err: OSError) -> None:
    # os.walk skips a folder it cannot list unless told otherwise; missing images silently
    # would change what is trained on, so it is an error naming the folder.
    what = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
    raise DataError(f"{err.filename}: cannot list folder: {what}") from err


def _load_file(path: Path, name: str | None) -> np.ndarray:
    label = name or str(path)
    info = _stat_file(path, label)
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{label}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would block or never end; only regular files are read.
        raise DataError(f"{label}: not a regular file (a pipe, socket or device?)")
    if info.st_size == 0:
        raise DataError(f"{label}: empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            n_pixels = img.width * img.height
            if n_pixels > MAX_PIXELS:
                raise DataError(
                    f"{label}: image is too large ({img.width}x{img.height} = {n_pixels:,} pixels; "
                    f"limit {MAX_PIXELS:,})"
                )
            # load() forces the full decode here, so a truncated file fails now, not later.
            img.load()
            upright = ImageOps.exif_transpose(img)
            return _pil_to_rgb(upright, label)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{label}: image is too large (decompression-bomb guard): {e}") from e
    except PermissionError as e:
        raise DataError(f"{label}: permission denied") from e
    except Image.UnidentifiedImageError as e:
        raise DataError(f"{label}: not an image, or a format Pillow cannot read") from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise DataError(f"{label}: cannot decode image (damaged or truncated?): {e}") from e


def _stat_file(path: Path, label: str) -> os.stat_result:
    """``os.stat`` of ``path`` (following links), with every failure as a DataError naming it."""
    try:
        return path.stat()
    except OSError as e:
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            what = "a loop of links" if e.errno == errno.ELOOP else "a missing file"
            raise DataError(f"{label}: broken symbolic link (it points to {target}, {what})") from e
        if e.errno == errno.ENOENT:
            raise DataError(f"{label}: file not found") from e
        if e.errno in (errno.EACCES, errno.EPERM):
            raise DataError(f"{label}: permission denied") from e
        raise DataError(f"{label}: cannot read file: {e.strerror or e}") from e


def _pil_to_rgb(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if mode in _16BIT_MODES:
        return _gray_to_rgb(_scale_uint16(np.asarray(img)))
    if mode == "I":
        return _gray_to_rgb(_scale_int32(np.asarray(img, dtype=np.int64), label))
    if mode == "F":
        return _gray_to_rgb(_scale_float(np.asarray(img, dtype=np.float64), label, allow_255=True))
    try:
        if mode == "La":
            # Premultiplied gray + alpha: Pillow converts it only to LA (not to RGB or RGBA).
            img = img.convert("LA")
        elif mode in ("P", "PA", "RGBa"):
            # Via RGBA so palette transparency and premultiplied alpha are handled by Pillow
            # (a direct P -> RGB warns for byte transparency).
            img = img.convert("RGBA")
        return np.array(img.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as e:
        raise DataError(f"{label}: unsupported image mode {mode!r}: {e}") from e


def _array_to_rgb(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[:, :, :1] if arr.shape[2] == 1 else arr[:, :, :3]  # drop alpha
    elif arr.ndim != 2:
        raise DataError(
            f"{label}: unsupported array shape {arr.shape}; "
            "expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{label}: empty image array of shape {arr.shape}")
    if arr.dtype.byteorder not in ("=", "|") and arr.dtype.kind in "uifb":
        arr = arr.astype(arr.dtype.newbyteorder("="))  # e.g. big-endian uint16 from a file
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = _scale_uint16(arr)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * np.uint8(255)
    elif np.issubdtype(arr.dtype, np.floating):
        out = _scale_float(arr.astype(np.float64), label, allow_255=False)
    else:
        raise DataError(
            f"{label}: unsupported array dtype {arr.dtype}; "
            "use uint8, uint16, bool or float in [0, 1]"
        )
    return (
        _gray_to_rgb(out) if out.ndim == 2 or out.shape[2] == 1 else np.array(out, dtype=np.uint8)
    )


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    if gray.ndim == 3:
        gray = gray[:, :, 0]
    return np.repeat(gray[:, :, None], 3, axis=2).astype(np.uint8, copy=False)


def _scale_uint16(a: np.ndarray) -> np.ndarray:
    # 65535 / 257 == 255 exactly: the full 16-bit range maps onto the full 8-bit range.
    # Integer rounding, (a + 128) // 257, equals rint(a / 257) (a / 257 is never exactly
    # x.5) and needs 4 bytes a pixel instead of 16 on the way, which matters for big images.
    return ((np.asarray(a).astype(np.uint32) + 128) // 257).astype(np.uint8)


def _scale_int32(a: np.ndarray, label: str) -> np.ndarray:
    if a.size and a.min() < 0:
        raise DataError(f"{label}: 32-bit image has negative pixel values (min {a.min()})")
    # Some decoders hand out 16-bit grayscale as 32-bit mode "I"; such data never exceed
    # 65535, and scaling it by the 32-bit range would make it black.
    if not a.size or a.max() <= 65535:
        return _scale_uint16(a)
    return np.rint(a * (255.0 / (2**31 - 1))).astype(np.uint8)


def _scale_float(a: np.ndarray, label: str, allow_255: bool) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise DataError(f"{label}: image contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(a * 255.0).astype(np.uint8)
    # Float image files (mode "F") are written on either scale; arrays must use [0, 1].
    if allow_255 and lo >= 0.0 and hi <= 255.0:
        return np.rint(a).astype(np.uint8)
    expected = "[0, 1] or [0, 255]" if allow_255 else "[0, 1]"
    raise DataError(f"{label}: float values in [{lo:g}, {hi:g}], expected {expected}")
