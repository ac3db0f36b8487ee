"""The detector interface, the registry and model files.

Every detector follows scikit-learn's conventions: ``__init__`` only stores its
keyword arguments, ``fit(X)`` validates and learns and returns ``self``, fitted
attributes end in ``_``. Scores follow PyOD: ``decision_function(X)`` is higher
for more anomalous images.

``X`` is an array of pre-computed backbone features of shape
``(n_images, n_views, n_features)``: the backbone is frozen, so features are
extracted once (and cached) and a detector only ever sees numbers. A 2-D array
is read as one view per image.

A model file is a folder with ``config.json`` (detector name, parameters,
versions) and ``state.safetensors`` (a flat dict of tensors in the safetensors
format: no pickle, so a file can never run code on load).

Detectors that *localise* anomalies also define ``anomaly_maps(X)``, returning an
array ``(n_images, h, w)`` (higher = more anomalous) over the backbone input of each
image in the frame of its first view (unrotated, unmirrored). Patch detectors also
define ``patch_scores(X)`` (one score per row of the patch axis), which the model
places on each image's own patch grid. Either way :meth:`robustsdd.Model.anomaly_maps`
draws the maps back onto each image's own pixels through the view geometry; reports and
``robustsdd predict --heatmaps`` use them when present; see :func:`localizes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator

from .._errors import ConfigError, DataError, ModelFileError
from .._io import StrPath, atomic_write_bytes, atomic_write_json, json_safe, read_json_file
from ..features.storage import image_blocks

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BaseDetector",
    "register_detector",
    "unregister_detector",
    "registered_detector",
    "create_detector",
    "detector_class",
    "fitted_from_state",
    "result_params",
    "RUNTIME_PARAMS",
    "detector_names",
    "load_detector",
    "check_features",
    "load_detector_files",
    "localizes",
    "MODEL_FORMAT_VERSION",
    "DETECTOR_CONFIG",
    "DETECTOR_STATE",
]

#: Version 2: state in safetensors (version 1 used ``state.pt``, a torch pickle).
MODEL_FORMAT_VERSION = 2
DETECTOR_CONFIG, DETECTOR_STATE = "config.json", "state.safetensors"
_REGISTRY: dict[str, type[BaseDetector]] = {}
_D = TypeVar("_D", bound="type[BaseDetector]")


def register_detector(name: str) -> Callable[[_D], _D]:
    """Class decorator: make a detector available as ``create_detector(name)``."""

    def wrap(cls: _D) -> _D:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"detector name {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def unregister_detector(name: str) -> type[BaseDetector]:
    """Remove ``name`` from the registry and return the class it named.

    The class itself is untouched (its ``registry_name`` stays). Raises
    :class:`ConfigError` for a name that is not registered.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"detector {name!r} is not registered")
    return _REGISTRY.pop(name)


_MISSING = object()


@contextmanager
def registered_detector(name: str, cls: _D) -> Iterator[_D]:
    """Register ``cls`` as ``name`` for the duration of a ``with`` block only.

    On leaving the block the registry is as it was before: ``name`` is removed
    again (or, if it already named ``cls``, kept). Meant for detectors defined in
    tests or notebooks, which should not stay in :func:`detector_names` for the
    rest of the process. Models saved inside the block can be loaded only while
    the name is registered again. As with :func:`register_detector`, a name that
    names another class raises ``ValueError``.

    ``cls.registry_name`` is put back if the class had one of its own before
    (it was registered under another name); otherwise it keeps ``name``, so a
    model saved after the block names its real class and fails to load loudly
    ("unknown detector") instead of loading as a parent class.

    >>> class Constant(BaseDetector):
    ...     pass
    >>> with registered_detector("_constant_example", Constant):
    ...     "_constant_example" in detector_names()
    True
    >>> "_constant_example" in detector_names()
    False
    """
    previous = _REGISTRY.get(name)  # None: the name was free
    own_name = cls.__dict__.get("registry_name", _MISSING)
    register_detector(name)(cls)
    try:
        yield cls
    finally:
        if previous is None:
            _REGISTRY.pop(name, None)
        else:
            _REGISTRY[name] = previous
        if own_name is not _MISSING:
            cls.registry_name = own_name


def detector_names() -> list[str]:
    """The names accepted by :func:`create_detector`, sorted."""
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[BaseDetector]:
    """The class registered as ``name`` (ConfigError naming the choices if none is)."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown detector {name!r}; choose one of: {', '.join(detector_names())}"
        )
    return _REGISTRY[name]


def create_detector(name: str, **params: Any) -> BaseDetector:
    """Build a registered detector by name, e.g. ``create_detector("gaussian")``."""
    return detector_class(name)(**params)


#: Detector parameters that change how a fit is shown, never its result.
RUNTIME_PARAMS = ("progress",)


def result_params(detector: BaseDetector, *, ignore: Container[str] = ()) -> dict[str, Any]:
    """The parameters that determine ``detector``'s results (sorted by name): what a cache
    key or a checkpoint is keyed by. ``ignore`` names more to leave out."""
    params = detector.get_params(deep=False)
    out = {k: v for k, v in sorted(params.items()) if k not in RUNTIME_PARAMS and k not in ignore}
    # A detector made of others (the ensemble) names its parts' effective settings too, so
    # a change of a part's default (say PatchCore's bank bound) changes the key.
    parts = getattr(detector, "part_params", None)
    if callable(parts):
        out["parts"] = parts()
    return out


def lent_out_of_fold_scores(
    detector: object, n_folds: int, random_state: int, n_images: int
) -> np.ndarray | None:
    """Out-of-fold scores a fitted detector computed of its ``n_images`` training images
    while fitting, with ``KFold(n_folds, shuffle=True, random_state=random_state)`` (the
    ensemble does), else None: what cleaning and the decision threshold borrow instead
    of ``n_folds`` more fits."""
    lend = getattr(detector, "out_of_fold_scores", None)
    scores = lend(n_folds, random_state) if callable(lend) else None
    if scores is None or len(scores) != n_images:
        return None
    return np.asarray(scores, np.float64)


def localizes(detector: object) -> bool:
    """Whether ``detector`` produces anomaly maps (defines ``anomaly_maps(X)``; a detector
    whose maps depend on its settings, the ensemble, also says so in
    ``localizes_anomalies``)."""
    if getattr(detector, "localizes_anomalies", True) is False:
        return False
    return callable(getattr(detector, "anomaly_maps", None))


def check_features(
    X: ArrayLike,
    *,
    n_features: int | None = None,
    what: str = "X",
    padded: bool = False,
    contiguous: bool = True,
) -> np.ndarray:
    """Validate features and return them as float32 ``(n_images, n_views, n_features)``.

    ``padded``: rows of axis 1 that are NaN throughout are padding (the patch features of
    images with smaller grids, :meth:`~robustsdd.features.PatchFeaturizer.assemble`) and
    allowed, as long as every image keeps a finite row.

    ``contiguous=False``: a float32 array with positive strides is returned as it is (a
    view such as ``X[:, :, :c]`` is not copied), for detectors that read big inputs in
    blocks. Either way the checks run on blocks of images, so validating a memory-mapped
    array does not bring it all into memory.
    """
    raw = np.asarray(X)
    # Negative strides (views such as X[::-1]) cannot be wrapped by torch: copy those.
    keep = not contiguous and raw.dtype == np.float32 and all(stride > 0 for stride in raw.strides)
    X = raw if keep else np.ascontiguousarray(raw, dtype=np.float32)
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3:
        raise DataError(
            f"{what} must have shape (n_images, n_views, n_features) or (n_images, n_features); "
            f"got {X.shape}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{what} holds no images or no views (shape {X.shape})")
    if n_features is not None and X.shape[2] != n_features:
        raise DataError(
            f"{what} has {X.shape[2]} features per view; the detector was fitted on {n_features}"
        )
    for block in image_blocks(X):
        _check_finite(X[block], what, padded)
    return X


def _check_finite(X: np.ndarray, what: str, padded: bool) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    if not padded:
        raise DataError(f"{what} contains NaN or infinite values")
    rows = finite.all(axis=2)
    if not (rows | np.isnan(X).all(axis=2)).all():
        raise DataError(f"{what} contains NaN or infinite values (not whole padding rows)")
    if not rows.any(axis=1).all():
        raise DataError(f"{what} has an image whose rows are all padding (NaN)")


class BaseDetector(BaseEstimator):
    """Base class of all detectors: fit / decision_function / partial_fit / save / load."""

    registry_name = "base"

    # -- the interface each detector implements -------------------------------------------
    def fit(self, X: ArrayLike, y: object = None) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def partial_fit(self, X: ArrayLike, y: object = None) -> Self:
        """Continue training from the current state on ``X`` (fine-tuning).

        Detectors without an iterative state refit from scratch, which is their
        natural "update"; DifferNet continues from its current weights.
        """
        return self.fit(X)

    def decision_function(self, X: ArrayLike) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    #: Whether :meth:`subset_model` derives its model from this one's fitted state instead of
    #: fitting afresh; cleaning then also fine-tunes through it (see ``OneShotRemoval``).
    derives_subsets = False

    def subset_model(self, X: ArrayLike, images: ArrayLike) -> Self:
        """A model of the images ``images`` (indices) of the ``X`` this model was fitted on,
        which has never seen the other images of ``X``.

        Here a fresh copy (same parameters) fitted on ``X[images]``: what cleaning's
        out-of-fold copies are. A detector that can derive such a model from its own fitted
        state for less (PatchCore keeps its bank's patches of those images) overrides this
        and sets :attr:`derives_subsets`.
        """
        from sklearn.base import clone

        self._check_is_fitted()
        return clone(self).fit(np.asarray(X)[np.asarray(images, dtype=np.int64)])

    def _get_state(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------
    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """scikit-learn's direction: higher means more normal (``-decision_function``)."""
        return -self.decision_function(X)

    def _check_is_fitted(self) -> None:
        if not getattr(self, "is_fitted_", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(X) first")

    def save(self, path: StrPath) -> Path:
        """Write the fitted model into folder ``path`` (created; files replaced atomically)."""
        self._check_is_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        from .._version import __version__

        config = {
            "format_version": MODEL_FORMAT_VERSION,
            "robustsdd_version": __version__,
            "torch_version": torch.__version__,
            "detector": self.registry_name,
            "params": _jsonable(self.get_params(deep=False)),
        }
        from safetensors.torch import save as safetensors_bytes

        # Cloned: safetensors refuses tensors that share memory (tied or viewed weights).
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self._get_state().items()}
        metadata = {
            "format": "pt",
            "robustsdd_format_version": str(MODEL_FORMAT_VERSION),
            "detector": self.registry_name,
        }
        atomic_write_bytes(folder / DETECTOR_STATE, safetensors_bytes(state, metadata=metadata))
        atomic_write_json(folder / DETECTOR_CONFIG, config)
        return folder

    @classmethod
    def load(cls, path: StrPath) -> BaseDetector:
        """Read a model folder written by :meth:`save`."""
        detector = load_detector(path)
        if cls is not BaseDetector and not isinstance(detector, cls):
            raise ModelFileError(f"{path}: holds a {type(detector).__name__}, not a {cls.__name__}")
        return detector


def load_detector(path: StrPath) -> BaseDetector:
    """Load any registered detector from a folder written by ``save``."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"{folder}: model folder missing (not found or not a folder)")
    return load_detector_files(folder / DETECTOR_CONFIG, folder / DETECTOR_STATE)


def load_detector_files(config_path: StrPath, state_path: StrPath) -> BaseDetector:
    """Load a detector from its config JSON and its safetensors state, validating both.

    Every problem (missing, garbled or foreign file, another format version, tensors
    that do not fit the config) is a :class:`ModelFileError` naming the file.
    """
    config_path, state_path = Path(config_path), Path(state_path)
    if not config_path.is_file():
        legacy = config_path.parent / "state.pt"
        hint = (
            (" (it holds state.pt: a model made by robustsdd before format version 2; refit it)")
            if legacy.is_file()
            else ""
        )
        raise ModelFileError(
            f"{config_path}: missing; is {config_path.parent} a robustsdd model folder?{hint}"
        )
    config = _read_config(config_path)
    if not state_path.is_file():
        raise ModelFileError(f"{state_path}: missing; the model folder is incomplete")
    state = _read_state(state_path)
    try:
        detector = create_detector(config["detector"], **config["params"])
    except (ConfigError, TypeError) as exc:
        raise ModelFileError(f"{config_path}: {exc}") from None
    try:
        detector._set_state(state)
    except (KeyError, RuntimeError, ValueError, TypeError, ConfigError) as exc:
        raise ModelFileError(
            f"{state_path}: does not fit the config in {config_path.name} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    detector.is_fitted_ = True
    return detector


def _read_config(config_path: Path) -> dict:
    config = read_json_file(config_path)
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("detector"), str)
        or not isinstance(config.get("params"), dict)
    ):
        raise ModelFileError(f"{config_path}: not a robustsdd detector config")
    if config.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{config_path}: model format version {config.get('format_version')!r} "
            f"(made by robustsdd {config.get('robustsdd_version', '?')}), an incompatible "
            f"version; this robustsdd reads version {MODEL_FORMAT_VERSION}: refit the model"
        )
    return config


def _read_state(state_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as safetensors_load

    try:
        state = safetensors_load(state_path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelFileError(f"{state_path}: not a readable safetensors file ({exc})") from None
    if not state:
        raise ModelFileError(f"{state_path}: holds no tensors")
    return state


def _jsonable(params: dict) -> dict:
    out = json_safe(params)
    json.dumps(out)  # fail here, naming nothing half-written, if a parameter is not JSON
    return out


def fitted_from_state(template: BaseDetector, state: dict[str, torch.Tensor]) -> BaseDetector:
    """A fitted copy of ``template`` (its parameters) holding ``state`` (from ``_get_state``)."""
    from sklearn.base import clone

    detector = clone(template)
    detector._set_state(state)
    detector.is_fitted_ = True
    return detector
