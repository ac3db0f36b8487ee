"""A fitted model as an inspector uses it: the model folder, scoring new images, results."""

from .files import BACKBONE_WEIGHTS, MODEL_CONFIG, MODEL_FORMAT
from .model import Model, as_imageset
from .predictions import Predictions

__all__ = [
    "Model",
    "Predictions",
    "as_imageset",
    "MODEL_CONFIG",
    "MODEL_FORMAT",
    "BACKBONE_WEIGHTS",
]
