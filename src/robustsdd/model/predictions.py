"""What ``predict`` returns and writes: one record per image (path, score, label)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import ConfigError, DataError
from .._io import StrPath, atomic_write_bytes
from ..data import list_images

__all__ = ["Predictions", "collect_images", "check_output_outside", "ANOMALOUS", "NORMAL"]

ANOMALOUS, NORMAL = "anomalous", "normal"


@dataclass
class Predictions:
    """Scores of a set of images and their labels under a decision threshold.

    Attributes
    ----------
    paths : list of str
        Each image's path (folders expanded, recursively).
    scores : numpy.ndarray
        Anomaly scores (higher = more anomalous).
    threshold : float
        A score above it is labelled ``"anomalous"``, else ``"normal"``.
    threshold_source : str
        Where the threshold came from (the model's fit-time choice, or "given").
    heatmaps : list of str, optional
        The heat-map PNG written for each image.
    """

    paths: list
    scores: np.ndarray
    threshold: float
    threshold_source: str = ""
    heatmaps: list | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labels(self) -> list:
        # NaN (an image the detector cannot score) is not trusted as normal.
        return [NORMAL if s <= self.threshold else ANOMALOUS for s in self.scores]

    @property
    def n_anomalous(self) -> int:
        return sum(label == ANOMALOUS for label in self.labels)

    @property
    def records(self) -> list:
        """One dict per image: ``path``, ``score``, ``label`` (and ``heatmap``)."""
        out = []
        for i, (path, score, label) in enumerate(zip(self.paths, self.scores, self.labels)):
            rec = {"path": path, "score": float(score), "label": label}
            if self.heatmaps is not None:
                rec["heatmap"] = self.heatmaps[i]
            out.append(rec)
        return out

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def csv_text(self) -> str:
        rows = io.StringIO()
        writer = csv.writer(rows)
        columns = ["path", "score", "label"] + (["heatmap"] if self.heatmaps is not None else [])
        writer.writerow(columns)
        for rec in self.records:
            rec["score"] = f"{rec['score']:.8g}"
            writer.writerow([rec[c] for c in columns])
        return rows.getvalue()

    def to_dict(self) -> dict:
        return {
            "threshold": float(self.threshold),
            "threshold_source": self.threshold_source,
            "n_images": len(self),
            "n_anomalous": self.n_anomalous,
            "results": [
                {**r, "score": r["score"] if np.isfinite(r["score"]) else None}
                for r in self.records
            ],
        }

    def to_csv(self, path: StrPath) -> Path:
        """Write ``path,score,label[,heatmap]`` rows (atomically)."""
        return atomic_write_bytes(path, self.csv_text().encode())

    def to_json(self, path: StrPath) -> Path:
        """Write the threshold and one record per image (atomically)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write_bytes(path, text.encode())

    def write(self, path: StrPath) -> Path:
        """Write CSV or JSON, by the file's extension."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.to_csv(path)
        if suffix == ".json":
            return self.to_json(path)
        raise ConfigError(f"{path}: results go to a .csv or a .json file")


def collect_images(paths: Sequence) -> tuple[list, list]:
    """Expand files and folders (recursively) into (names, file paths), in the given order."""
    names, files = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise DataError(f"{path}: no images found in this folder")
            files += found
            names += [str(f) for f in found]
        elif path.is_file():
            files.append(path)
            names.append(str(path))
        else:
            raise DataError(f"{path}: no such file or folder")
    if not files:
        raise DataError("no images given")
    return names, files


def check_output_outside(out: StrPath, inputs: Sequence[StrPath], *, what: str) -> None:
    """Refuse an output folder inside an input folder (never write into the user's data)."""
    target = Path(out).resolve()
    for p in inputs:
        folder = Path(p).resolve()
        if not folder.is_dir():
            folder = folder.parent
        if target == folder or folder in target.parents:
            raise ConfigError(
                f"{what} {out} is inside the input folder {p}; choose a folder "
                "outside it (robustsdd never writes into the images it reads)"
            )
