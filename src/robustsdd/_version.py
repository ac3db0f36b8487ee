"""The installed robustsdd version, read once from the package metadata.

Modules that record the version (model files, checkpoints, sweep configs) import it
from here rather than from the package ``__init__``, which imports them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("robustsdd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
