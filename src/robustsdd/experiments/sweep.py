"""The paper's sweep (Fig. 3, Table 1): contamination levels × cleaning strategies × seeds.

A sweep is a grid of *groups*, one per (level, seed): one seeded paper split
(:func:`robustsdd.data.paper_split`), on which every strategy is trained and
tested. Within a group the work is shared:

* the features of every image of every group are extracted once, up front
  (the backbone is frozen, docs/design.md §4; cache misses are computed on the
  executor, the cache is written by this process); groups only fit detectors
  on feature arrays, which each worker receives once;
* the strategies are fitted by :func:`robustsdd.cleaning.fit_settings`, the
  path every workflow trains by: One-Shot Removal strategies that score training
  images the same way share one stage-1 model (same result as fitting each
  alone), so thresholds 1.0, 1.5 and 2.0 cost one stage-1 fit.

Groups (and the extraction of features not yet cached) run on an executor
(:mod:`robustsdd.executors`): this process, ``jobs`` local processes, or Ray.
Every random choice derives from the seed, so the rows are the same whatever
the executor and ``jobs`` are and however often a sweep was interrupted and resumed. Each
finished group is written to ``out_dir/cells/level=<l>_seed=<s>.json`` with a
hash of everything that determines its numbers; a later sweep with the same
configuration reads it back instead of recomputing.

Strategies are named by short specs (:func:`~robustsdd.cleaning.parse_strategy`,
declared with the rules in :mod:`robustsdd.cleaning.registry`): ``none`` (the
plain detector), ``osr_<t>`` (drop training images scoring above ``t``,
Sec. 4.3), ``fraction_<f>`` and ``min_size_<m>`` (Algorithm 1), ``auto_<z>`` and
``confident`` (cuts read off the scores), and ``oracle`` (drops exactly the
defective training images: the bound no cleaning can beat, for benchmarks only).
``_r<n>`` repeats the removal up to ``n`` rounds; a suffix ``@<scoring>``
overrides the sweep's scoring regime for one strategy, e.g.
``osr_1.5@in_sample`` for the paper's literal reading or
``auto_3_r3@ensemble`` for SRR-like refinement.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from sklearn.base import clone
from tqdm.auto import tqdm

from .._errors import ConfigError
from .._io import StrPath, atomic_write_json, json_safe
from .._version import __version__
from ..cleaning import SCORING_REGIMES, OneShotRemoval, fit_settings, parse_strategy
from ..data import DEFECTIVE, GOOD, ImageSet, paper_split
from ..data.masks import image_masks
from ..detectors.base import result_params
from ..executors import make_executor
from ..features.patches import scores_to_maps
from ..features.views import ViewSpec
from ..metrics import detection_metrics, pixel_auroc, removal_metrics
from ..recipes import paper_cleaning

if TYPE_CHECKING:
    from ..detectors.base import BaseDetector
    from ..executors import Executor
    from ..features import Featurizer

__all__ = [
    "parse_strategy",
    "parse_strategies",
    "parse_levels",
    "parse_seeds",
    "run_sweep",
    "sweep_config",
    "config_hash",
    "cell_path",
    "SweepResult",
    "row_from_json",
    "DEFAULT_LEVELS",
    "DEFAULT_STRATEGIES",
    "DEFAULT_SEEDS",
    "ROW_COLUMNS",
]

DEFAULT_LEVELS = tuple(i / 10 for i in range(11))
DEFAULT_STRATEGIES = ("none", "osr_1.0", "osr_1.5", "osr_2.0")
DEFAULT_SEEDS = (0, 1, 2)

#: Columns of a sweep row, in the order of ``cells.csv``.
ROW_COLUMNS = (
    "level",
    "strategy",
    "seed",
    "auroc",
    "ap",
    "pixel_auroc",
    "removed_good",
    "removed_defective",
    "kept",
    "removal_precision",
    "removal_recall",
    "guard_fired",
    "fit_seconds",
    "n_train",
    "train_good",
    "train_defective",
)

# Bump when the meaning of a cell file's rows changes: older files are then recomputed.
CELL_FORMAT = 2  # 2: pixel_auroc


# ---------------------------------------------------------------------------------------------
# parsing
def parse_strategies(specs: str | Iterable[str]) -> tuple[str, ...]:
    """Validate strategy specs (a comma-separated string or a sequence); keep their order."""
    names = _split(specs)
    for name in names:
        parse_strategy(name)
    _check_unique(names, "strategies")
    return names


def parse_levels(levels: str | Iterable[float | str]) -> tuple[float, ...]:
    """Contamination levels as shares in [0, 1] (a comma-separated string or a sequence).

    Levels are rounded to 6 decimals, so ``0.1 * 3`` and ``0.3`` name the same level
    (and the same cell file).
    """
    out = []
    for item in _split(levels):
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"levels: {item!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"levels are shares of defective training images in [0, 1], got "
                f"{item!r}" + (" (a percentage?)" if 1 < value <= 100 else "")
            )
        out.append(round(value, 6))
    _check_unique(out, "levels")
    return tuple(out)


def parse_seeds(seeds: str | Iterable[int | str]) -> tuple[int, ...]:
    """Seeds as non-negative integers (a comma-separated string or a sequence)."""
    out = []
    for item in _split(seeds):
        try:
            value = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"seeds: {item!r} is not an integer") from None
        if value < 0 or (isinstance(item, float) and item != value):
            raise ConfigError(f"seeds must be integers >= 0, got {item!r}")
        out.append(value)
    _check_unique(out, "seeds")
    return tuple(out)


def _split(values) -> tuple:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    values = tuple(values)
    if not values:
        raise ConfigError("an empty list (of levels, strategies or seeds) makes no sweep")
    return values


def _check_unique(values, what):
    if len(set(values)) != len(values):
        raise ConfigError(f"{what}: each value may appear once, got {list(values)}")


# ---------------------------------------------------------------------------------------------
# configuration identity
def _detector_params(detector) -> dict:
    # random_state is left out: the sweep sets it to each group's seed.
    return result_params(detector, ignore=("random_state",))


def _data_id(images: ImageSet | None):
    """Name, size and a digest of the names and labels of a source (pixels are not read)."""
    if images is None:
        return None
    h = hashlib.sha256()
    for name, label in zip(images.names, images.labels.tolist()):
        h.update(f"{name}\t{label}\n".encode())
    return {
        "source": images.source,
        "n": len(images),
        "good": images.n_good,
        "defective": images.n_defective,
        "digest": h.hexdigest()[:16],
    }


def sweep_config(
    pool: ImageSet,
    test_pool: ImageSet | None,
    *,
    featurizer: Featurizer,
    detector: BaseDetector,
    scoring: str = "held_out_views",
    n_train: int = 100,
    n_test_good: int = 100,
    n_test_defective: int = 100,
) -> dict:
    """Everything that determines a group's numbers, except its level, seed and strategies.

    Two sweeps with equal configs give equal rows for equal (level, strategy, seed);
    ``config_hash`` of this dict decides whether a stored cell file may be reused.
    """
    osr_defaults = OneShotRemoval(None).get_params(deep=False)
    for key in (
        "detector",
        "rule",
        "threshold",
        "fraction",
        "min_size",
        "scoring",
        "random_state",
        "keep_baseline",
        "rounds",
    ):
        osr_defaults.pop(key)  # set per strategy or per group
    return {
        "format": CELL_FORMAT,
        "robustsdd": __version__,
        "detector": {
            "class": f"{type(detector).__module__}.{type(detector).__qualname__}",
            "params": _detector_params(detector),
        },
        "features": featurizer.config_key,
        "scoring": scoring,
        "osr": osr_defaults,
        "n_train": int(n_train),
        "n_test_good": int(n_test_good),
        "n_test_defective": int(n_test_defective),
        "data": _data_id(pool),
        "test_data": _data_id(test_pool),
    }


def config_hash(config: dict) -> str:
    """A short stable hash of a :func:`sweep_config` dict."""
    text = json.dumps(config, sort_keys=True, default=repr)  # repr: tuples, odd param types
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# one group: every strategy on one split
@dataclass
class _Group:
    """What a worker needs for one (level, seed): row indices into the feature arrays."""

    level: float
    seed: int
    train_rows: np.ndarray
    test_rows: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    strategies: tuple  # names still to compute
    detector: BaseDetector
    scoring: str


#: Pixel AUROC is computed with each image's map and mask brought to at most this long side
#: (both the same way, so they stay aligned): 1024 x 1024 MVTec images would otherwise hold
#: ~100 M pixels per test set in memory for every strategy of every group.
PIXEL_EVAL_LONG_SIDE = 512


def evaluation_shape(shape: tuple) -> tuple[int, int]:
    """The (h, w) at which an image of ``shape`` is scored pixel-wise (aspect kept)."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(1.0, PIXEL_EVAL_LONG_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _shrink_mask(mask: np.ndarray, shape: tuple) -> np.ndarray:
    """A mask at ``shape``: a pixel is defect if any pixel it covers is (thin defects stay)."""
    if mask.shape == tuple(shape):
        return mask
    img = Image.fromarray(mask.astype(np.float32))
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BOX)) > 0


def _shrink_map(amap: np.ndarray, shape: tuple) -> np.ndarray:
    if amap.shape == tuple(shape):
        return amap
    img = Image.fromarray(np.ascontiguousarray(amap, dtype=np.float32))
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BOX), np.float64)


@dataclass
class _PixelTruth:
    """Test images' masks in their own pixels (at most :data:`PIXEL_EVAL_LONG_SIDE` a side),
    with what turns patch scores into maps there (each image's patch grid and the views'
    geometry): no backbone, cheap to send to workers."""

    masks: list
    shapes: list
    grids: list
    views: ViewSpec
    offset: tuple

    @classmethod
    def of(cls, masks: list, featurizer: Featurizer) -> _PixelTruth:
        shapes = [m.shape for m in masks]
        return cls(
            [_shrink_mask(m, evaluation_shape(m.shape)) for m in masks],
            shapes,
            [featurizer.image_grid(s) for s in shapes],  # type: ignore[attr-defined]
            featurizer.views,
            featurizer.grid_offset,  # type: ignore[attr-defined]
        )

    def subset(self, rows: np.ndarray) -> _PixelTruth:
        pick = [int(r) for r in rows]
        return _PixelTruth(
            [self.masks[r] for r in pick],
            [self.shapes[r] for r in pick],
            [self.grids[r] for r in pick],
            self.views,
            self.offset,
        )

    def maps(self, patch_scores: np.ndarray) -> list:
        """Maps drawn in each image's own pixels, then brought to its mask's shape."""
        maps = scores_to_maps(patch_scores, self.grids, self.shapes, self.views, self.offset)
        return [_shrink_map(m, mask.shape) for m, mask in zip(maps, self.masks)]


def _run_group(group: _Group, pool_features, test_features, test_masks=None) -> list[dict]:
    """Fit and test every strategy of one group; return its rows (any order).

    ``test_masks`` (a :class:`_PixelTruth`, rows like ``test_features``; None without
    masks) add a pixel AUROC for detectors that make anomaly maps.
    """
    X_train = pool_features[group.train_rows]
    X_test = test_features[group.test_rows]
    truth = None if test_masks is None else test_masks.subset(group.test_rows)
    y_train, y_test = group.train_labels, group.test_labels
    base = {
        "level": group.level,
        "seed": group.seed,
        "n_train": len(y_train),
        "train_good": int(np.sum(y_train == GOOD)),
        "train_defective": int(np.sum(y_train == DEFECTIVE)),
    }
    settings = {}
    for name in group.strategies:
        params = parse_strategy(name)
        if params is not None and params["rule"] != "oracle":
            # The rows need the test scores only, not the training images' stage scores.
            params = {"scoring": group.scoring, "score_training": False, **params}
        settings[name] = params
    rows = []
    with warnings.catch_warnings():
        # The guard's warning is recorded in each row's guard_fired; in a sweep it would
        # only repeat itself once per group over the progress bar.
        warnings.filterwarnings("ignore", message=".*min_keep.*")
        for name, fit in fit_settings(
            group.detector, X_train, settings, seed=group.seed, labels=y_train
        ):
            row = _row(
                base,
                name,
                fit.decision_function(X_test),
                y_test,
                y_train,
                fit.keep,
                fit.guard_fired,
                fit.seconds,
            )
            if truth is not None:
                maps = truth.maps(fit.model.patch_scores(X_test))
                row["pixel_auroc"] = pixel_auroc(truth.masks, maps)
            rows.append(row)
    return rows


def _row(base, name, test_scores, y_test, y_train, keep, guard, fit_seconds) -> dict:
    detection = detection_metrics(y_test, test_scores)
    removal = removal_metrics(y_train, keep)
    return {
        **base,
        "strategy": name,
        "auroc": detection["auroc"],
        "ap": detection["ap"],
        "pixel_auroc": float("nan"),
        "removed_good": removal["removed_good"],
        "removed_defective": removal["removed_defective"],
        "kept": int(keep.sum()),
        "removal_precision": removal["removal_precision"],
        "removal_recall": removal["removal_recall"],
        "guard_fired": guard,
        "fit_seconds": round(fit_seconds, 3),
    }


# Executor tasks. The feature arrays are the executor's `shared` value, sent to each worker
# once, so a task carries only row indices, not megabytes of features.
def _group_task(group: _Group, features) -> list[dict]:
    return _run_group(group, *features)


def _call_run(run, group, features):
    return run(group)


# ---------------------------------------------------------------------------------------------
# cell files
def cell_path(out_dir: StrPath, level: float, seed: int) -> Path:
    """Where the rows of group (level, seed) are stored."""
    return Path(out_dir) / "cells" / f"level={level:g}_seed={seed}.json"


def _read_cell(path: Path, chash: str, level: float, seed: int) -> dict:
    """The stored rows of a group by strategy name, or {} if absent, damaged or stale."""
    try:
        data = json.loads(path.read_text())
        if (
            data.get("format") != CELL_FORMAT
            or data.get("config_hash") != chash
            or data.get("level") != level
            or data.get("seed") != seed
        ):
            return {}
        return {row["strategy"]: row_from_json(row) for row in data["rows"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_cell(path: Path, chash: str, level, seed, rows_by_name: dict) -> None:
    atomic_write_json(
        path,
        {
            "format": CELL_FORMAT,
            "config_hash": chash,
            "level": level,
            "seed": seed,
            "rows": [_to_json(r) for r in rows_by_name.values()],
        },
    )


def _to_json(row: dict) -> dict:
    # Strict JSON has no NaN (an undefined removal precision, an AUROC without both classes).
    return json_safe(row)


def row_from_json(row: dict) -> dict:
    """A row read back from JSON: null (a NaN when written) is NaN again."""
    return {k: (float("nan") if v is None else v) for k, v in row.items()}


# ---------------------------------------------------------------------------------------------
# the sweep
class SweepResult(list):
    """The sweep's rows (a list of dicts), with ``stats`` and ``config`` attributes.

    ``stats``: ``groups``, ``computed`` and ``reused`` (groups), ``features_computed``
    (images the backbone ran on), ``seconds``, ``jobs``. ``config``: the
    :func:`sweep_config` dict plus ``config_hash``, ``levels``, ``strategies`` and ``seeds``.
    """

    def __init__(self, rows: Iterable[dict], stats: dict[str, Any], config: dict[str, Any]):
        super().__init__(rows)
        self.stats = stats
        self.config = config


def _index_set(images: ImageSet) -> ImageSet:
    """The same labels and names with item = the image's index, to split without decoding."""
    return ImageSet(
        items=list(range(len(images))),
        labels=images.labels,
        names=images.names,
        source=images.source,
    )


def run_sweep(
    pool: ImageSet,
    test_pool: ImageSet | None = None,
    *,
    featurizer: Featurizer,
    detector: BaseDetector,
    levels: str | Iterable[float | str] = DEFAULT_LEVELS,
    strategies: str | Iterable[str] = DEFAULT_STRATEGIES,
    seeds: str | Iterable[int | str] = DEFAULT_SEEDS,
    out_dir: StrPath,
    scoring: str | None = "held_out_views",
    n_train: int = 100,
    n_test_good: int = 100,
    n_test_defective: int = 100,
    jobs: int = 1,
    executor: str | Executor = "local",
    address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run every (level, strategy, seed) of the paper's protocol; return tidy rows.

    Parameters
    ----------
    pool, test_pool : ImageSet, ImageSet or None
        From :func:`robustsdd.data.open_source` (``test_pool`` None: the test set is
        drawn from ``pool``).
    featurizer : Featurizer
        Extracts (and caches) the features of every image the sweep needs, once.
    detector : BaseDetector
        The template, cloned per fit; its ``random_state`` (if any) is set to the seed.
    levels, strategies, seeds : sequences or comma-separated strings
        See :func:`parse_levels`, :func:`parse_strategy`, :func:`parse_seeds`.
    out_dir : path
        Cell files are written to ``out_dir/cells/`` and reused from there.
    scoring : str or None
        How OSR scores training images (a strategy's ``@scoring`` overrides it);
        None: ``held_out_views``, or ``out_of_fold`` for patch detectors (PatchCore).
    n_train, n_test_good, n_test_defective : int
        The split (:func:`robustsdd.data.paper_split`).
    jobs : int
        Parallel workers (each uses one torch thread): local processes, or the CPUs
        of a local Ray instance. The rows do not depend on it. As with any spawned
        processes, a script that calls this with ``jobs > 1`` must do so under
        ``if __name__ == "__main__":``.
    executor : "local", "ray" or Executor
        Where feature extraction (cache misses) and groups run
        (:func:`robustsdd.executors.make_executor`); the rows do not depend on it,
        and cells written under one executor are reused under another.
    address : str or None
        With ``executor="ray"``: the Ray cluster to use (None: start a local one).
    progress : bool
        Show progress bars (feature extraction, then groups).

    Returns
    -------
    SweepResult
        One row per (level, strategy, seed), sorted by level, strategy and seed in
        the order given; columns :data:`ROW_COLUMNS`. ``fit_seconds`` is the wall
        time of that strategy's fit in the run that computed it (an OSR strategy
        that reused another's stage-1 model does not include its cost).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from robustsdd import Featurizer, GaussianDetector, ViewSpec
    >>> rng = np.random.default_rng(0)
    >>> pool = ImageSet([rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(30)],
    ...                 [0] * 20 + [1] * 10, [f"im{i}" for i in range(30)])
    >>> fz = Featurizer(weights=None, views=ViewSpec(size=32, scales=(1,), rotations=(0, 180)),
    ...                 cache_dir=False, progress=False)
    >>> rows = run_sweep(pool, featurizer=fz, detector=GaussianDetector(), levels=[0, 0.5],
    ...                  strategies=["none", "osr_1.5"], seeds=[0], n_train=10, n_test_good=5,
    ...                  n_test_defective=5, out_dir=tempfile.mkdtemp(), progress=False)
    >>> len(rows), rows.stats["computed"]
    (4, 2)
    """
    t_start = time.perf_counter()
    levels, strategies = parse_levels(levels), parse_strategies(strategies)
    seeds = parse_seeds(seeds)
    if scoring is None:  # the paper's (patch features have no views to hold out)
        scoring = paper_cleaning(detector)["scoring"]
    if scoring not in SCORING_REGIMES:
        raise ConfigError(
            f"unknown scoring {scoring!r}; choose one of: {', '.join(SCORING_REGIMES)}"
        )
    jobs = int(jobs)
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    runner = make_executor(executor, jobs=jobs, address=address)  # starts nothing yet
    template = clone(detector)
    if "progress" in template.get_params():
        template.set_params(progress=False)  # one bar over groups, not one per fit
    config = sweep_config(
        pool,
        test_pool,
        featurizer=featurizer,
        detector=template,
        scoring=scoring,
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_defective=n_test_defective,
    )
    chash = config_hash(config)

    # Draw every split first (cheap: labels only) and read what earlier runs left.
    splits = _draw_splits(
        pool,
        test_pool,
        levels,
        seeds,
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_defective=n_test_defective,
    )
    stored = {key: _read_cell(cell_path(out_dir, *key), chash, *key) for key in splits}
    todo = [key for key in splits if any(s not in stored[key] for s in strategies)]

    n_before = featurizer.n_computed
    try:
        groups, features = _prepare_groups(
            todo, splits, stored, strategies, template, scoring, featurizer, pool, test_pool, runner
        )
        bar = tqdm(total=len(splits), desc="sweep", unit="group", disable=not progress)
        bar.update(len(splits) - len(todo))
        try:
            with closing(_execute(groups, features, jobs, executor=runner)) as finished:
                for group, rows in finished:
                    # Only this process writes cells, each as its group finishes.
                    key = (group.level, group.seed)
                    stored[key].update({row["strategy"]: row for row in rows})
                    _write_cell(
                        cell_path(out_dir, *key), chash, group.level, group.seed, stored[key]
                    )
                    bar.update(1)
        finally:
            bar.close()
    finally:
        if runner is not executor:  # made here: release its processes / Ray instance
            runner.close()

    rows = [stored[level, seed][name] for level in levels for name in strategies for seed in seeds]
    stats = {
        "groups": len(splits),
        "computed": len(todo),
        "reused": len(splits) - len(todo),
        "features_computed": featurizer.n_computed - n_before,
        "jobs": jobs,
        "executor": runner.name,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    config = {
        **config,
        "config_hash": chash,
        "levels": list(levels),
        "strategies": list(strategies),
        "seeds": list(seeds),
    }
    return SweepResult(rows, stats, config)


def _draw_splits(pool, test_pool, levels, seeds, **sizes) -> dict:
    """{(level, seed): (train, test)} as ImageSets whose items are indices into the pools."""
    index_pool = _index_set(pool)
    index_test = None if test_pool is None else _index_set(test_pool)
    return {
        (level, seed): paper_split(
            index_pool, contamination=level, test_pool=index_test, random_state=seed, **sizes
        )
        for level in levels
        for seed in seeds
    }


def _prepare_groups(
    todo, splits, stored, strategies, template, scoring, featurizer, pool, test_pool, executor=None
) -> tuple[list, tuple]:
    """Extract the features of every image the groups in ``todo`` use, once; build tasks.

    Returns ``(groups, (pool_features, test_features, test_masks))``; the arrays hold
    only the images needed, and each group's ``*_rows`` index into them. ``test_masks``
    are the test images' defect masks in their own geometry (a :class:`_PixelTruth`) when
    the detector makes anomaly maps and the source has masks (KSDD2, MVTec AD), else None.
    """
    if not todo:
        return [], (None, None, None)
    wanted = {int(i) for key in todo for i in splits[key][0].items}
    if test_pool is None:  # the test images come from the pool too
        wanted |= {int(i) for key in todo for i in splits[key][1].items}
    need_pool = sorted(wanted)
    pool_features = featurizer.transform(pool.subset(need_pool), executor=executor)
    pool_row = {idx: row for row, idx in enumerate(need_pool)}
    if test_pool is None:
        test_features, test_row = pool_features, pool_row
    else:
        need_test = sorted({int(i) for key in todo for i in splits[key][1].items})
        test_features = featurizer.transform(test_pool.subset(need_test), executor=executor)
        test_row = {idx: row for row, idx in enumerate(need_test)}
    test_masks = None
    if hasattr(template, "anomaly_maps") and hasattr(featurizer, "image_grid"):
        test_images = pool.subset(need_pool) if test_pool is None else test_pool.subset(need_test)
        masks = image_masks(test_images)
        if masks is not None:
            test_masks = _PixelTruth.of(masks, featurizer)
    groups = []
    for level, seed in todo:
        train, test = splits[level, seed]
        groups.append(
            _Group(
                level=level,
                seed=seed,
                train_rows=np.array([pool_row[int(i)] for i in train.items], dtype=np.int64),
                test_rows=np.array([test_row[int(i)] for i in test.items], dtype=np.int64),
                train_labels=train.labels,
                test_labels=test.labels,
                strategies=tuple(s for s in strategies if s not in stored[level, seed]),
                detector=template,
                scoring=scoring,
            )
        )
    return groups, (pool_features, test_features, test_masks)


def _execute(groups, features, jobs=1, run=None, executor=None):
    """Yield ``(group, rows)`` as groups finish, on ``executor`` (default: local, ``jobs``).

    ``run`` (a picklable function of a group, for tests) replaces the worker's task.
    Groups are yielded as soon as each is done (FIRST_COMPLETED), so the caller writes
    its cell at once and an interrupted sweep keeps every finished group; a worker that
    dies is replaced and its groups re-run (:mod:`robustsdd.executors`).
    """
    executor = make_executor("local", jobs) if executor is None else executor
    task = _group_task if run is None else functools.partial(_call_run, run)
    yield from executor.map_unordered(task, groups, shared=features)
