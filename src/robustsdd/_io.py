"""Atomic file output: a reader never sees a half-written file, an interrupted run leaves none."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json"]


def atomic_write(target, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``target``, then rename it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def atomic_write_bytes(target, data: bytes) -> Path:
    return atomic_write(target, lambda f: f.write(data))


def atomic_write_json(target, obj) -> Path:
    return atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json_file(path: Path):
    """The JSON value in ``path``; ModelFileError naming the file if it cannot be read or
    parsed (model folders are where robustsdd reads its own JSON back)."""
    from ._errors import ModelFileError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc})") from None
