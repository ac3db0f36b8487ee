"""Per-stage checkpoints of ``robustsdd fit``: an interrupted fit resumes where it stopped.

A fit runs stages that cost minutes each with DifferNet: stage 1 (train on every image
and score them for removal), stage 3 (remove, fine-tune) and the ``n_folds`` fits that
give the out-of-fold decision scores. After each, :class:`FitCheckpoints` writes one file
into ``MODEL_DIR/.partial/``; rerunning the same command reads them back instead of
training again, and the finished model folder no longer holds them.

Each file is ``MAGIC`` + the SHA-256 of the payload + the payload, a safetensors blob
(tensors only, no pickle) holding the stage's detector state and score arrays, with the
stage's *key* in its metadata. The key hashes everything the stage's result depends on:
the features of every training image (so new, changed, removed or reordered images, or
another backbone, all change it), the image names, the detector and its parameters, the
seed and the cleaning settings. A file whose key differs (another command or other
images) is ignored and recomputed; one whose checksum fails (damaged) likewise; either
way with a note. Files are written atomically (temp file + rename), so a file is either
complete or absent.

A checkpointed detector is read back into a clone of the current detector; the
uninterrupted path reads its own checkpoint back too, so a resumed fit gives bit-for-bit
the scores of an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._hashing import array_digest, json_digest
from .._io import ChecksumError, StrPath, read_checksummed, write_checksummed
from .._version import __version__
from ..detectors.base import BaseDetector, fitted_from_state, result_params

__all__ = ["FitCheckpoints", "Checkpoint", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = ".partial"
MAGIC = b"robustsdd-checkpoint-1\n"
_FORMAT = 2  # 2: stage 3 holds the whole fitted OneShotRemoval


class Checkpoint:
    """One stage read back: ``detector`` (or None), ``arrays`` (name → ndarray), ``info``."""

    def __init__(self, stage: str, detector: BaseDetector | None, arrays: dict, info: dict):
        self.stage, self.detector, self.arrays, self.info = stage, detector, arrays, info


class _Damaged(Exception):
    pass


class _Stale(Exception):
    pass


class FitCheckpoints:
    """The checkpoints of one fit, in ``folder`` (``MODEL_DIR/.partial``).

    Parameters
    ----------
    folder : path
        Where the checkpoint files go (created on the first save).
    resume : bool
        Read checkpoints of an earlier, interrupted run. False: delete them first.
    log : callable(str), optional
        Where notes go (resuming, ignoring a stale or damaged file); default stderr.
    """

    def __init__(
        self, folder: StrPath, *, resume: bool = True, log: Callable[[str], None] | None = None
    ):
        self.folder = Path(folder)
        self.resume = bool(resume)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.base: str | None = None
        self.resumed: list = []  # stages read back, in order (for tests and messages)
        if not self.resume and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
            self.log("not resuming (--no-resume): removed the checkpoints of an earlier run")

    def bind(
        self, X: ArrayLike, names: Iterable[object], detector: BaseDetector, **settings: Any
    ) -> None:
        """Fix what every stage depends on: the features ``X``, the image ``names``, the
        ``detector`` (name and parameters) and ``settings`` (JSON-able)."""
        params = result_params(detector)
        self.base = json_digest(
            {
                "format": _FORMAT,
                "robustsdd": __version__,
                "features": array_digest(X),
                "names": json_digest(list(map(str, names))),
                "detector": [
                    type(detector).__module__,
                    type(detector).__qualname__,
                    getattr(detector, "registry_name", None),
                    params,
                ],
                "settings": settings,
            }
        )

    def key(self, stage: str, **inputs: Any) -> str:
        if self.base is None:
            raise RuntimeError("FitCheckpoints.bind() first")
        return json_digest({"base": self.base, "stage": stage, "inputs": inputs})

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.ckpt"

    # -- writing --------------------------------------------------------------------------
    def save(
        self,
        stage: str,
        *,
        detector: BaseDetector | None = None,
        arrays: dict | None = None,
        info: dict | None = None,
        inputs: dict | None = None,
    ) -> None:
        """Write the stage's checkpoint atomically."""
        from safetensors.torch import save as safetensors_bytes

        tensors = {}
        if detector is not None:
            for k, v in detector._get_state().items():
                tensors[f"detector.{k}"] = v.detach().cpu().contiguous().clone()
        for k, v in (arrays or {}).items():
            tensors[f"array.{k}"] = torch.from_numpy(np.array(v, copy=True))
        meta = {
            "robustsdd_checkpoint": str(_FORMAT),
            "stage": stage,
            "key": self.key(stage, **(inputs or {})),
            "detector": getattr(detector, "registry_name", "") if detector is not None else "",
            "info": json.dumps(info or {}, default=str),
        }
        write_checksummed(self.path(stage), safetensors_bytes(tensors, metadata=meta), MAGIC)

    # -- reading --------------------------------------------------------------------------
    def load(
        self,
        stage: str,
        *,
        detector: BaseDetector | None = None,
        inputs: dict | None = None,
        describe: str | None = None,
        quiet: bool = False,
    ) -> Checkpoint | None:
        """The stage's checkpoint, or None when there is none, or it is stale or damaged
        (then deleted, with a note). ``detector``: the unfitted detector the stored state is
        loaded into (a clone of it is returned as ``Checkpoint.detector``)."""
        path = self.path(stage)
        if not path.is_file():
            return None
        try:
            ckpt = self._read(path, stage, detector, self.key(stage, **(inputs or {})))
        except _Stale:
            self._discard(
                path,
                f"ignoring checkpoint {path.name}: it was made by a different "
                f"command or from different images; recomputing {stage}",
            )
            return None
        except _Damaged as exc:
            self._discard(
                path, f"ignoring checkpoint {path.name}: damaged ({exc}); recomputing {stage}"
            )
            return None
        self.resumed.append(stage)
        if not quiet:
            self.log(f"resuming from checkpoint: {describe or stage} done ({path})")
        return ckpt

    def reload(
        self, stage: str, *, detector: BaseDetector | None = None, inputs: dict | None = None
    ) -> Checkpoint:
        """Read back a checkpoint this run just wrote (so an uninterrupted run continues
        from exactly what a resumed one would)."""
        return self._read(self.path(stage), stage, detector, self.key(stage, **(inputs or {})))

    def _read(self, path: Path, stage: str, detector, key: str) -> Checkpoint:
        from safetensors.torch import load as safetensors_load

        try:
            payload = read_checksummed(path, MAGIC)
        except OSError as exc:
            raise _Damaged(f"cannot be read: {exc}") from None
        except ChecksumError as exc:
            raise _Damaged(str(exc)) from None
        try:
            meta = _safetensors_metadata(payload)
            tensors = safetensors_load(payload)
        except Exception as exc:  # safetensors raises its own error types
            raise _Damaged(f"unreadable: {exc}") from None
        if meta.get("stage") != stage or meta.get("key") != key:
            raise _Stale()
        try:
            info = json.loads(meta.get("info", "{}"))
        except json.JSONDecodeError as exc:
            raise _Damaged(f"unreadable metadata: {exc}") from None
        arrays = {
            k[len("array.") :]: v.numpy() for k, v in tensors.items() if k.startswith("array.")
        }
        fitted = None
        if detector is not None:
            if meta.get("detector") != getattr(detector, "registry_name", ""):
                raise _Stale()
            state = {
                k[len("detector.") :]: v for k, v in tensors.items() if k.startswith("detector.")
            }
            try:
                fitted = fitted_from_state(detector, state)
            except Exception as exc:  # state that does not fit the detector
                raise _Damaged(
                    f"detector state does not load: {type(exc).__name__}: {exc}"
                ) from None
        return Checkpoint(stage, fitted, arrays, info)

    def _discard(self, path: Path, message: str) -> None:
        self.log(message)
        try:
            path.unlink()
        except OSError:
            pass

    def clear(self) -> None:
        """Delete every checkpoint (after the model folder is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _safetensors_metadata(payload: bytes) -> dict:
    (n,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    return meta
