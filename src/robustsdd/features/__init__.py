"""Frozen backbones, image views, the on-disk feature cache and batched extraction."""

from .backbones import FeatureExtractor, create_classifier
from .cache import FeatureCache, default_cache_dir
from .extract import Featurizer
from .views import ViewSpec

__all__ = [
    "FeatureExtractor",
    "create_classifier",
    "FeatureCache",
    "default_cache_dir",
    "Featurizer",
    "ViewSpec",
]
