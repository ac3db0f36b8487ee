"""Cleaning: removal rules (declared once in :mod:`.registry`), the One-Shot Removal
meta-estimator, and the one fit-then-clean path every workflow uses."""

from .osr import OneShotRemoval
from .pipeline import CleanedFit, fit_cleaned, fit_settings, seeded_clone
from .registry import (
    RULES,
    SCORING_REGIMES,
    SCORING_WORDS,
    Rule,
    RuleParam,
    describe,
    parse_strategy,
    rule_names,
)
from .rules import apply_guard, fraction_rule, threshold_rule

__all__ = [
    "OneShotRemoval",
    "CleanedFit",
    "fit_cleaned",
    "fit_settings",
    "seeded_clone",
    "RULES",
    "SCORING_REGIMES",
    "SCORING_WORDS",
    "Rule",
    "RuleParam",
    "describe",
    "parse_strategy",
    "rule_names",
    "apply_guard",
    "fraction_rule",
    "threshold_rule",
]
