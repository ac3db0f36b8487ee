"""On-disk feature cache keyed by image *content*, backbone and views.

The backbone is frozen, so the features of one image under one extractor and
one set of views never change: they are computed once and every later epoch,
OSR stage, run or sweep cell reads them back. Keys hash the decoded pixels (not
the file name or path), so a renamed file still hits and an edited image misses.

Each entry is one file: a 32-byte SHA-256 of the payload followed by the
``.npy`` bytes. A damaged entry fails the checksum and counts as a miss; it is
then recomputed and replaced. Entries are written atomically (temp + rename),
so concurrent writers of the same key can only replace a whole file with an
identical one.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from .._io import StrPath, read_checksummed, write_checksummed

__all__ = ["FeatureCache", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$ROBUSTSDD_CACHE_DIR`` if set, else the user cache dir (e.g. ``~/.cache/robustsdd``)."""
    env = os.environ.get("ROBUSTSDD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("robustsdd")) / "features"


class FeatureCache:
    """A folder of cached feature arrays, with hit/miss counters.

    Parameters
    ----------
    root : path
        The cache folder (created on first write).

    Examples
    --------
    >>> import tempfile
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> cache.put("img", "cfg", np.ones((2, 3), np.float32))
    >>> cache.get("img", "cfg").shape, cache.hits
    ((2, 3), 1)
    """

    def __init__(self, root: StrPath):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path_for(self, image_key: str, config_key: str) -> Path:
        config_hash = hashlib.sha256(config_key.encode()).hexdigest()[:16]
        return self.root / config_hash / image_key[:2] / f"{image_key}.feat"

    def get(self, image_key: str, config_key: str) -> np.ndarray | None:
        """The cached array, or None (a miss; damaged entries count in ``corrupt`` too)."""
        path = self.path_for(image_key, config_key)
        try:
            array = np.load(io.BytesIO(read_checksummed(path)), allow_pickle=False)
        except OSError:  # absent (or unreadable)
            self.misses += 1
            return None
        except ValueError:  # damaged: checksum mismatch (ChecksumError) or not an array
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, image_key: str, config_key: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        write_checksummed(self.path_for(image_key, config_key), buffer.getvalue())
