"""robustsdd: robust surface-defect detection on contaminated training sets.

Train an anomaly detector on a folder of "good" images that is not all good:
fit, find the training images that do not belong, drop them, fine-tune.

>>> from robustsdd import DifferNet, GaussianDetector, OneShotRemoval, Featurizer
>>> from robustsdd import fit_folder, Model

Packages: ``data`` (sources, decoding, splits), ``features`` (views, frozen backbones,
cache), ``detectors`` (DifferNet, Gaussian, kNN, PatchCore, an ensemble), ``cleaning`` (rules,
One-Shot Removal, the fit-then-clean path), ``recipes`` (every detector's defaults),
``workflow`` (fit, decision threshold, checkpoints), ``model`` (model folders,
predictions), ``experiments`` (protocol, sweeps), ``review`` (the HTML report), ``cli``.
"""

from ._errors import ConfigError, DataError, ModelFileError, RobustSDDError
from ._version import __version__
from .cleaning import OneShotRemoval
from .detectors import (
    BaseDetector,
    DifferNet,
    EnsembleDetector,
    GaussianDetector,
    KNNDetector,
    PatchCore,
    create_detector,
    detector_names,
    differnet_cpu,
    differnet_paper,
    load_detector,
)
from .features import Featurizer, ViewSpec
from .features.patches import PatchFeaturizer
from .model import Model, Predictions
from .recipes import make_components
from .workflow import fit_folder, fit_images

__all__ = [
    "__version__",
    "RobustSDDError",
    "DataError",
    "ConfigError",
    "ModelFileError",
    "BaseDetector",
    "DifferNet",
    "EnsembleDetector",
    "GaussianDetector",
    "KNNDetector",
    "PatchCore",
    "create_detector",
    "detector_names",
    "differnet_cpu",
    "differnet_paper",
    "load_detector",
    "OneShotRemoval",
    "Featurizer",
    "PatchFeaturizer",
    "ViewSpec",
    "Model",
    "Predictions",
    "fit_folder",
    "fit_images",
    "make_components",
]
