"""robustsdd: robust surface-defect detection on contaminated training sets.

Train an anomaly detector on a folder of "good" images that is not all good:
fit, find the training images that do not belong, drop them, fine-tune.

>>> from robustsdd import DifferNet, GaussianDetector, OneShotRemoval, Featurizer
>>> from robustsdd import fit_folder, Model
"""

__version__ = "0.1.0"

from ._errors import ConfigError, DataError, ModelFileError, RobustSDDError
from .cleaning import OneShotRemoval
from .detectors import (BaseDetector, DifferNet, GaussianDetector, create_detector,
                        detector_names, differnet_cpu, differnet_paper, load_detector)
from .features import Featurizer, ViewSpec
from .model import Model
from .predictions import Predictions
from .fitting import fit_folder

__all__ = [
    "__version__",
    "RobustSDDError", "DataError", "ConfigError", "ModelFileError",
    "BaseDetector", "DifferNet", "GaussianDetector", "create_detector", "detector_names",
    "differnet_cpu", "differnet_paper", "load_detector",
    "OneShotRemoval", "Featurizer", "ViewSpec",
    "Model", "Predictions", "fit_folder",
]
