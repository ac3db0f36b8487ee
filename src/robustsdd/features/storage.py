"""Where an assembled features array lives: in memory, or beyond a size in a memory-mapped file.

Patch features outgrow memory long before images do: the ensemble's features of one ELPV
cell are 1.5 MB (784 patches × 472 channels, float32), so 3,000 cells need 4.4 GB. Up to
``ROBUSTSDD_FEATURES_IN_MEMORY_MB`` megabytes (default 1024) an array is allocated in memory;
a larger one is a :class:`numpy.memmap` over an anonymous temporary file (in ``TMPDIR``,
unnamed, so the operating system frees it with the array, also after a crash). Its pages
are then file cache, which the operating system can write out and drop under memory
pressure instead of failing, and the detectors read such arrays in blocks of images
(:func:`image_blocks`) rather than copying them whole. The cost is disk writes of the
array's size once, which the backbone's time dwarfs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np

__all__ = ["empty_features", "in_memory_limit", "image_blocks"]

_DEFAULT_MB = 1024
# Bytes of one block of images read at once by detectors that stream big arrays.
_BLOCK_BYTES = 64 * 2**20


def in_memory_limit() -> int:
    """Largest features array (bytes) kept in memory: ``ROBUSTSDD_FEATURES_IN_MEMORY_MB``
    megabytes (default 1024; 0: every array is memory-mapped)."""
    raw = os.environ.get("ROBUSTSDD_FEATURES_IN_MEMORY_MB", "").strip()
    if not raw:
        return _DEFAULT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(
            f"ROBUSTSDD_FEATURES_IN_MEMORY_MB must be a number of megabytes, got {raw!r}"
        ) from None
    if mb < 0:
        raise ValueError(f"ROBUSTSDD_FEATURES_IN_MEMORY_MB must be >= 0, got {raw!r}")
    return int(mb * 2**20)


def empty_features(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array of ``shape``: in memory up to :func:`in_memory_limit`
    bytes, memory-mapped from an anonymous temporary file beyond it."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes <= in_memory_limit() or nbytes == 0:
        return np.empty(shape, dtype=np.float32)
    # TemporaryFile has no name on Linux (O_TMPFILE) or is unlinked at once elsewhere; the
    # mapping holds its own reference to the file, so closing ours leaves the array valid.
    with tempfile.TemporaryFile(prefix="robustsdd-features-") as handle:
        _reserve(handle.fileno(), nbytes)
        return np.memmap(handle, dtype=np.float32, mode="w+", shape=shape)


def _reserve(fd: int, nbytes: int) -> None:
    """Claim the file's disk space now: writing a mapped page on a full disk later would kill
    the process (SIGBUS) instead of raising an error that says what is wrong."""
    if not hasattr(os, "posix_fallocate"):
        return  # not on this system: the space is claimed as the array is written
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        raise OSError(
            err.errno,
            f"no room for {nbytes / 2**30:.1f} GiB of features in {tempfile.gettempdir()} "
            f"({err.strerror}): set TMPDIR to a folder on a disk with space, or raise "
            "ROBUSTSDD_FEATURES_IN_MEMORY_MB to keep them in memory",
        ) from err


def image_blocks(X: np.ndarray, block_bytes: int = _BLOCK_BYTES) -> Iterator[slice]:
    """Slices of axis 0 of ``X`` holding about ``block_bytes`` each (at least one image)."""
    n = len(X)
    per_image = max(1, int(np.prod(X.shape[1:], dtype=np.int64)) * X.itemsize)
    step = max(1, block_bytes // per_image)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))
