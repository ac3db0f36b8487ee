"""DifferNet (Rudolph et al., WACV 2021): a normalizing flow on multi-view backbone features."""

from .detector import DifferNet
from .flow import build_flow, count_flow_parameters
from .presets import differnet_cpu, differnet_paper

__all__ = ["DifferNet", "differnet_paper", "differnet_cpu", "build_flow", "count_flow_parameters"]
