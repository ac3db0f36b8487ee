"""Cleaning: removal rules (pure functions) and the One-Shot Removal meta-estimator."""

from .osr import SCORING_REGIMES, OneShotRemoval
from .rules import RULES, apply_guard, fraction_rule, threshold_rule

__all__ = ["OneShotRemoval", "SCORING_REGIMES", "RULES", "apply_guard", "fraction_rule",
           "threshold_rule"]
