"""Screen an image set before training or scoring: bad files skipped (or fail), duplicates found.

:func:`screen_images` decodes every image once, through the same :func:`load_rgb` every later
stage uses, so an image that passes the screen can be decoded later too. Each decoded array is
hashed (:func:`~robustsdd._hashing.image_digest`) and then dropped: only paths, names
and 64-character digests are kept, whatever the size of the set.

Typical use (what ``robustsdd fit``/``score`` do with ``--on-bad-image``)::

    result = screen_images(images, on_bad_image="skip", skip_list=out_dir / "skipped.csv")
    for note in result.notes():
        print("note:", note)
    images = result.images          # the images that can be read

The skip list is a CSV with columns ``name, reason`` (one row per image that was not used);
it is written atomically and never inside the folder the images come from.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ConfigError, DataError
from .._hashing import image_digest
from .._io import atomic_write_bytes
from ._imageset import ImageSet

__all__ = [
    "ON_BAD_IMAGE",
    "DUPLICATES",
    "SkippedImage",
    "DuplicateGroup",
    "ScreenResult",
    "screen_images",
    "write_skip_list",
]

#: Choices of ``on_bad_image``: skip (and report) an unreadable image, or stop at the first one.
ON_BAD_IMAGE = ("skip", "fail")
#: Choices of ``duplicates``: keep every copy (report only) or keep only the first copy.
DUPLICATES = ("keep", "drop")


@dataclass(frozen=True)
class SkippedImage:
    """An image that is not in the screened set, and why."""

    name: str
    path: str | None
    reason: str
    kind: str = "unreadable"  # "unreadable" or "duplicate"


@dataclass(frozen=True)
class DuplicateGroup:
    """Images with the same decoded pixels: ``first`` (in set order) and the ``others``."""

    first: str
    others: tuple

    def describe(self) -> str:
        return f"{', '.join(self.others)}: same content as {self.first}"


@dataclass
class ScreenResult:
    """What :func:`screen_images` found.

    Attributes
    ----------
    images : ImageSet
        The images that can be decoded (without the later copies of duplicates when
        ``duplicates="drop"``), in their original order, with labels, masks and meta.
    skipped : list of SkippedImage
        Every image not in ``images``: unreadable files (reason = the DataError message,
        which starts with the image's name) and, with ``duplicates="drop"``, dropped copies.
    duplicates : list of DuplicateGroup
        One entry per group of images with identical decoded pixels (reported once per group).
    n_total : int
        Images screened.
    digests : list of str
        :func:`~robustsdd._hashing.image_digest` of each image in ``images``.
    skip_list : pathlib.Path or None
        Where the skip list was written, if it was.
    """

    images: ImageSet
    skipped: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    n_total: int = 0
    digests: list = field(default_factory=list)
    skip_list: Path | None = None

    @property
    def n_unreadable(self) -> int:
        return sum(s.kind == "unreadable" for s in self.skipped)

    def notes(self, max_listed: int = 5) -> list:
        """Human-readable lines (without a "note:" prefix) for what was skipped or duplicated."""
        lines = []
        bad = [s for s in self.skipped if s.kind == "unreadable"]
        if bad:
            where = f"; list in {self.skip_list}" if self.skip_list else ""
            lines.append(f"skipped {len(bad)} of {self.n_total} images that cannot be read{where}")
            lines += [f"  {s.reason}" for s in bad[:max_listed]]
            if len(bad) > max_listed:
                lines.append(f"  ... and {len(bad) - max_listed} more")
        if self.duplicates:
            n_copies = sum(len(g.others) for g in self.duplicates)
            action = (
                "dropped; the first of each group kept"
                if any(s.kind == "duplicate" for s in self.skipped)
                else "all kept"
            )
            lines.append(
                f"{len(self.duplicates)} group(s) of duplicate images ({n_copies} "
                f"extra copies, {action})"
            )
            lines += [f"  {g.describe()}" for g in self.duplicates[:max_listed]]
            if len(self.duplicates) > max_listed:
                lines.append(f"  ... and {len(self.duplicates) - max_listed} more groups")
        return lines


def screen_images(
    images: ImageSet,
    on_bad_image: str = "skip",
    *,
    duplicates: str = "keep",
    skip_list: str | os.PathLike | None = None,
    progress: bool = False,
) -> ScreenResult:
    """Decode every image once; skip (or fail on) unreadable ones; find duplicate files.

    Parameters
    ----------
    images : ImageSet
        The images to check (file paths or arrays).
    on_bad_image : {"skip", "fail"}, default "skip"
        ``"skip"``: leave out an image that cannot be decoded and report it; ``"fail"``:
        raise the first image's :class:`DataError` (its message names the file).
    duplicates : {"keep", "drop"}, default "keep"
        Images with identical decoded pixels are always reported, once per group.
        ``"drop"`` also leaves out every copy after the first (listed in ``skipped``).
    skip_list : path, optional
        Write the skip list CSV here (see :func:`write_skip_list`), also when it is empty
        and also when every image was skipped (the error then points to it).
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    ScreenResult

    Raises
    ------
    DataError
        If the set is empty, if every image was skipped, or (``"fail"``) at the first
        unreadable image.
    ConfigError
        For an unknown ``on_bad_image`` or ``duplicates``, or a ``skip_list`` inside the
        image folder.
    """

    if on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    if duplicates not in DUPLICATES:
        raise ConfigError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    where = images.meta.get("root") or images.source or "image set"
    if len(images) == 0:
        raise DataError(f"{where}: no images found")
    if skip_list is not None:
        _check_outside_inputs(Path(skip_list), images)

    indices = range(len(images))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="checking images", unit="img")
    kept, digests, skipped = [], [], []
    first_of: dict[str, int] = {}  # digest -> index of its first image
    copies: dict[int, list] = {}  # first index -> later indices with the same digest
    for i in indices:
        try:
            rgb = images.rgb(i)
        except DataError as exc:
            if on_bad_image == "fail":
                raise
            skipped.append(SkippedImage(images.names[i], _path_of(images.items[i]), str(exc)))
            continue
        digest = image_digest(rgb)
        del rgb  # never hold more than one decoded image
        if digest in first_of:
            first = first_of[digest]
            copies.setdefault(first, []).append(i)
            if duplicates == "drop":
                skipped.append(
                    SkippedImage(
                        images.names[i],
                        _path_of(images.items[i]),
                        f"{images.names[i]}: duplicate: same content as {images.names[first]}",
                        kind="duplicate",
                    )
                )
                continue
        else:
            first_of[digest] = i
        kept.append(i)
        digests.append(digest)

    groups = [
        DuplicateGroup(images.names[first], tuple(images.names[j] for j in later))
        for first, later in sorted(copies.items())
    ]
    result = ScreenResult(
        images=images.subset(kept),
        skipped=skipped,
        duplicates=groups,
        n_total=len(images),
        digests=digests,
    )
    if skip_list is not None:
        result.skip_list = write_skip_list(result, skip_list)
    if not kept:
        see = f"see {result.skip_list}" if result.skip_list else "first: " + skipped[0].reason
        raise DataError(f"{where}: all {len(images)} images were skipped as unreadable; {see}")
    return result


def write_skip_list(result: ScreenResult, path: str | os.PathLike) -> Path:
    """Write ``result.skipped`` as a UTF-8 CSV (columns ``name, reason``), atomically.

    Refuses (ConfigError) a path inside the folder the images came from.
    """
    path = Path(path)
    _check_outside_inputs(path, result.images)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "reason"])
    for s in result.skipped:
        writer.writerow([s.name, s.reason])
    # File names that are not valid UTF-8 (surrogate escapes) stay readable, and never crash.
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8", errors="backslashreplace"))


def _path_of(item) -> str | None:
    return str(item) if isinstance(item, (str, os.PathLike)) else None


def _check_outside_inputs(target: Path, images: ImageSet) -> None:
    root = images.meta.get("root")
    if not root:
        return
    folder, resolved = Path(root).resolve(), target.resolve()
    if folder == resolved or folder in resolved.parents:
        raise ConfigError(
            f"{target} is inside the image folder {root}; choose a place outside "
            "it (robustsdd never writes into the images it reads)"
        )
