"""Detectors behind one interface (fit / decision_function / partial_fit / save / load)."""

from .base import (
    BaseDetector,
    create_detector,
    detector_names,
    load_detector,
    register_detector,
    registered_detector,
    unregister_detector,
)
from .differnet import DifferNet, differnet_cpu, differnet_paper
from .ensemble import EnsembleDetector
from .gaussian import GaussianDetector
from .knn import KNNDetector
from .patchcore import PatchCore

__all__ = [
    "BaseDetector",
    "create_detector",
    "detector_names",
    "load_detector",
    "register_detector",
    "registered_detector",
    "unregister_detector",
    "DifferNet",
    "differnet_cpu",
    "differnet_paper",
    "EnsembleDetector",
    "GaussianDetector",
    "KNNDetector",
    "PatchCore",
]
