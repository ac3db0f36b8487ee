"""Atomic file output: a reader never sees a half-written file, an interrupted run leaves none."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_json_file",
    "json_safe",
    "write_checksummed",
    "read_checksummed",
    "ChecksumError",
    "staging_folder",
    "swap_in_folder",
    "recover_folder_swap",
    "deferred_signals",
]

#: A path argument: a string or an ``os.PathLike`` such as :class:`~pathlib.Path`.
StrPath: TypeAlias = "str | os.PathLike[str]"


def atomic_write(target: StrPath, write: Callable[[BinaryIO], object]) -> Path:
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


def atomic_write_bytes(target: StrPath, data: bytes) -> Path:
    return atomic_write(target, lambda f: f.write(data))


def atomic_write_json(target: StrPath, obj: Any) -> Path:
    return atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy numbers and arrays, tuples and paths made plain JSON values;
    non-finite floats become None (JSON has no NaN).

    >>> import numpy as np
    >>> json_safe({"a": np.float32(0.5), "b": (1, np.int64(2)), "c": float("nan")})
    {'a': 0.5, 'b': [1, 2], 'c': None}
    """
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# -- checksummed files ----------------------------------------------------------------------
# A file robustsdd reads back later (a cached feature array, a checkpoint) is written as
# ``magic`` + SHA-256(payload) + payload, atomically: a damaged or foreign file is detected on
# read, never silently used.
class ChecksumError(ValueError):
    """A checksummed file is damaged (checksum mismatch) or not of the expected kind."""


def write_checksummed(target: StrPath, payload: bytes, magic: bytes = b"") -> Path:
    """Write ``magic + sha256(payload) + payload`` to ``target`` atomically."""
    return atomic_write_bytes(target, magic + hashlib.sha256(payload).digest() + payload)


def read_checksummed(path: StrPath, magic: bytes = b"") -> bytes:
    """The payload of a file written by :func:`write_checksummed`.

    Raises OSError when the file cannot be read and :class:`ChecksumError` when it is
    not such a file or its checksum fails.
    """
    blob = Path(path).read_bytes()
    head = len(magic) + hashlib.sha256().digest_size
    if len(blob) < head or not blob.startswith(magic):
        raise ChecksumError("not a robustsdd file of the expected kind")
    digest, payload = blob[len(magic) : head], blob[head:]
    if hashlib.sha256(payload).digest() != digest:
        raise ChecksumError("checksum mismatch")
    return payload


def read_json_file(path: StrPath) -> Any:
    """The JSON value in ``path``; ModelFileError naming the file if it cannot be read or
    parsed (model folders are where robustsdd reads its own JSON back)."""
    from ._errors import ModelFileError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc})") from None


# -- whole folders --------------------------------------------------------------------------
# A folder is replaced by building the new one beside it and renaming (two renames: the old
# one aside, the new one in). At every moment ``target`` is the old complete folder, absent,
# or the new complete folder; an interruption between the renames is repaired by
# :func:`recover_folder_swap` on the next run.
def _sibling(target: Path, tag: str) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.robustsdd-{tag}"


def staging_folder(target: StrPath) -> Path:
    """A new, empty folder beside ``target`` to build its replacement in (an earlier,
    unfinished one is deleted)."""
    staging = _sibling(Path(target), "new")
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    elif staging.exists() or staging.is_symlink():
        staging.unlink()
    staging.mkdir(parents=True)
    return staging


def swap_in_folder(staging: StrPath, target: StrPath) -> None:
    """Put the complete folder ``staging`` at ``target``, replacing what was there."""
    staging, target = Path(staging), Path(target)
    old = _sibling(target, "old")
    if old.exists():
        shutil.rmtree(old)
    with deferred_signals():  # SIGINT/SIGTERM wait until both renames are done
        moved = target.exists()
        if moved:
            os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            if moved:
                os.rename(old, target)  # the earlier folder back in place
            raise
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder_swap(target: StrPath) -> str | None:
    """Repair what an interrupted :func:`swap_in_folder` left; say what was done, or None."""
    target = Path(target)
    old, staging = _sibling(target, "old"), _sibling(target, "new")
    note = None
    if old.is_dir() and not old.is_symlink():
        if target.exists() or target.is_symlink():
            shutil.rmtree(old, ignore_errors=True)  # the new folder was already in place
        else:
            os.rename(old, target)  # interrupted between the renames: put the old one back
            note = f"restored {target} from an interrupted replacement"
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)
    return note


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def deferred_signals(
    signums: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver them (main thread only;
    elsewhere, or for signals with no Python handler to restore, a plain block)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in signums:
        if signal.getsignal(signum) is None:  # set outside Python: cannot be restored
            continue
        previous[signum] = signal.signal(signum, lambda s, f: received.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
