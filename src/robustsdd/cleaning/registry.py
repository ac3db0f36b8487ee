"""Every cleaning rule and strategy, declared once.

A *rule* decides which training images One-Shot Removal drops, given their removal
scores. Each is one :class:`Rule` in :data:`RULES`: its name, its one number (a
:class:`RuleParam`: the :class:`~robustsdd.cleaning.OneShotRemoval` keyword, default,
range, help text), how it cuts, how a sweep spells it and how it is described in words.
Everything else reads this table: ``OneShotRemoval`` applies the cut, the command line
builds ``--rule`` and the rule's flag, :func:`parse_strategy` reads sweep specs, and
fit's report, the run header and the sweep summary call :func:`describe`.

A new rule is one more entry here (and, when it brings a new number, that keyword on
``OneShotRemoval``, which scikit-learn's conventions want spelled out in ``__init__``).

A *strategy* is what a sweep compares: ``none`` (no cleaning), ``oracle`` (drop exactly
the defective training images: the bound no cleaning can beat, benchmarks only), or a
rule spelled ``<prefix>_<number>`` (``osr_1.5``, ``auto_3``) or by its name alone
(``confident``), optionally ``_r<n>`` (up to n removal rounds) and ``@<scoring>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .._errors import ConfigError
from .estimate import ContaminationEstimate, estimate_contamination, fdr_cut
from .rules import auto_cut, confident_cut, fraction_rule, threshold_rule

__all__ = [
    "Rule",
    "RuleParam",
    "Cut",
    "RULES",
    "SCORING_REGIMES",
    "SCORING_WORDS",
    "SPECIAL_STRATEGIES",
    "parse_strategy",
    "describe",
    "rule_names",
]

#: How training images are scored for removal (see :class:`OneShotRemoval`), and the
#: adjective used when a report names the scores.
SCORING_WORDS = {
    "in_sample": "in-sample",
    "held_out_views": "held-out-view",
    "out_of_fold": "out-of-fold",
    "ensemble": "ensemble",
    "sparse_banks": "sparse-bank",
}
SCORING_REGIMES = tuple(SCORING_WORDS)

#: Strategies that are not rules: what each one does.
SPECIAL_STRATEGIES = {
    "none": "no cleaning",
    "oracle": "drop exactly the defective images, an upper bound",
}


@dataclass(frozen=True)
class Cut:
    """What a rule decided: ``keep`` mask, the score ``cut`` it used (None for count-based
    rules), for probabilistic rules each image's probability of being normal, and for
    rules that model the scores the contamination estimate behind the cut."""

    keep: np.ndarray
    cut: float | None = None
    p_normal: np.ndarray | None = None
    estimate: ContaminationEstimate | None = None


@dataclass(frozen=True)
class RuleParam:
    """The number a rule takes: ``name`` is the OneShotRemoval keyword and CLI flag."""

    name: str
    default: float
    help: str
    check: Callable[[float], str | None]  # an error text for a bad value, or None
    count_or_share: bool = False  # >= 1 means a count (an int), < 1 a share

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, raw: str | float, where: str) -> int | float:
        """``raw`` (text or number) as a valid value of this parameter, else ConfigError."""
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {raw!r} is not a number") from None
        problem = "must be finite" if not math.isfinite(value) else self.check(value)
        if problem:
            raise ConfigError(f"{where}: {self.name} {problem}, got {raw!r}")
        if self.count_or_share and value >= 1:
            return int(value)
        return value


@dataclass(frozen=True)
class Rule:
    """One removal rule (see the module docstring)."""

    name: str
    summary: str  # one line, for --help
    words: (
        str  # a phrase for reports, formatted with the settings: "drop scores above {threshold:g}"
    )
    prefix: str | None  # sweep spelling "<prefix>_<number>"; None: the name alone
    param: RuleParam | None
    cut: Callable[[np.ndarray, Mapping], Cut] | None  # None: iterative (min_size, in OSR)
    estimates_contamination: bool = False  # the cut is read off the scores
    rounds: bool = True  # can be repeated (rounds > 1)

    def describe(self, settings: Mapping) -> str:
        return self.words.format(**settings)


def _positive(v):
    return None if v > 0 else "must be positive"


def _share(v):
    return None if 0 <= v < 1 else "must be a share in [0, 1)"


def _size(v):
    return None if v > 0 and (v < 1 or v == int(v)) else "must be a share in (0, 1) or a count >= 1"


def _cut_threshold(scores, s):
    return Cut(threshold_rule(scores, s["threshold"]), float(s["threshold"]))


def _cut_auto(scores, s):
    cut = auto_cut(scores, s["z"])
    return Cut(threshold_rule(scores, cut), cut)


def _cut_fraction(scores, s):
    return Cut(fraction_rule(scores, s["fraction"]))


def _cut_fdr(scores, s):
    estimate = estimate_contamination(scores, random_state=s.get("random_state", 0))
    keep = fdr_cut(estimate.p_values, s["fdr"], 1.0 - estimate.share)
    removed = np.asarray(scores, dtype=np.float64)[~keep]
    removed = removed[np.isfinite(removed)]
    return Cut(keep, float(removed.min()) if removed.size else None, estimate=estimate)


def _cut_confident(scores, s):
    decision = confident_cut(scores, random_state=s.get("random_state", 0))
    return Cut(decision.keep, decision.score_cut, decision.p_normal)


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule(
            "score_threshold",
            "drop images scoring above a fixed threshold (the paper's Sec. 4.3)",
            "drop scores above {threshold:g}",
            "osr",
            RuleParam(
                "threshold",
                1.5,
                "score_threshold: drop training images scoring above "
                "(default: %(default)s, the paper's)",
                lambda v: None,
            ),
            _cut_threshold,
        ),
        Rule(
            "fraction",
            "drop a fixed share of the highest-scoring images",
            "drop the top {fraction:g} share",
            "fraction",
            RuleParam(
                "fraction", 0.1, "fraction: share of images to drop (default: %(default)s)", _share
            ),
            _cut_fraction,
        ),
        Rule(
            "min_size",
            "drop the top-scoring image and update the model until T remain "
            "(the paper's Algorithm 1)",
            "drop the top image and update the model until {min_size:g} remain (Algorithm 1)",
            "min_size",
            RuleParam(
                "min_size",
                0.8,
                "min_size (Algorithm 1): stop at this many images "
                "(<1: a share; default: %(default)s)",
                _size,
                count_or_share=True,
            ),
            None,
            rounds=False,
        ),
        Rule(
            "auto",
            "drop images above median + z robust SDs of the log scores",
            "drop scores above median + {z:g} robust SD",
            "auto",
            RuleParam(
                "z",
                3.0,
                "auto: cut at median + Z robust SDs of the log removal scores "
                "(default: %(default)s)",
                _positive,
            ),
            _cut_auto,
            estimates_contamination=True,
        ),
        Rule(
            "confident",
            "confident learning: drop images less likely normal than the mean "
            "(a two-component mixture on the scores)",
            "confident-learning cut: drop images less likely normal than the mean",
            None,
            None,
            _cut_confident,
            estimates_contamination=True,
        ),
        Rule(
            "fdr",
            "model the normal images' scores (an empirical null), estimate the "
            "contamination and drop images at a false-discovery rate",
            "drop images the normal scores' model rejects at false-discovery rate {fdr:g}",
            "fdr",
            RuleParam(
                "fdr",
                0.2,
                "fdr: the expected share of good images among those removed (default: %(default)s)",
                lambda v: None if 0 < v < 1 else "must be in (0, 1)",
            ),
            _cut_fdr,
            estimates_contamination=True,
        ),
    )
}


def rule_names() -> tuple:
    """The names of the rules, in declaration order."""
    return tuple(RULES)


def parse_strategy(spec: str) -> dict | None:
    """The :class:`OneShotRemoval` keywords a strategy spec stands for (None for ``none``).

    Parameters
    ----------
    spec : str
        ``"none"``; a rule spelled ``"<prefix>_<number>"`` (``"osr_<threshold>"``,
        ``"fraction_<share>"``, ``"min_size_<count or share>"``, ``"auto_<z>"``) or by its
        name (``"confident"``), optionally followed by ``"_r<rounds>"`` (repeat the
        removal) and ``"@<scoring>"`` (one of :data:`SCORING_REGIMES`). ``"oracle"`` drops
        exactly the defective training images (known only in a benchmark) and gives
        ``{"rule": "oracle"}``.

    Raises
    ------
    ConfigError
        For an unknown name, a missing or invalid number, or an unknown scoring.

    Examples
    --------
    >>> parse_strategy("osr_1.5")
    {'rule': 'score_threshold', 'threshold': 1.5}
    >>> parse_strategy("min_size_80@in_sample")
    {'rule': 'min_size', 'min_size': 80, 'scoring': 'in_sample'}
    >>> parse_strategy("confident_r3@ensemble")
    {'rule': 'confident', 'rounds': 3, 'scoring': 'ensemble'}
    >>> parse_strategy("none") is None
    True
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a strategy is a string such as 'osr_1.5', got {spec!r}")
    name, at, scoring = spec.strip().partition("@")
    if name in SPECIAL_STRATEGIES:
        if at:
            raise ConfigError(
                f"strategy {spec!r}: {name!r} scores no training image and takes no scoring"
            )
        return None if name == "none" else {"rule": "oracle"}
    rounds = 0
    if match := re.fullmatch(r"(.+)_r(\d+)", name):
        name, rounds = match.group(1), int(match.group(2))
        if rounds < 1:
            raise ConfigError(f"strategy {spec!r}: the number of rounds must be >= 1")
    params = _rule_params(name, spec)
    if rounds:
        if not RULES[params["rule"]].rounds:
            raise ConfigError(
                f"strategy {spec!r}: {params['rule']} is iterative already and takes no rounds"
            )
        params["rounds"] = rounds
    if at:
        if scoring not in SCORING_REGIMES:
            raise ConfigError(
                f"strategy {spec!r}: unknown scoring {scoring!r}; choose "
                f"one of: {', '.join(SCORING_REGIMES)}"
            )
        params["scoring"] = scoring
    return params


def _spelling(rule: Rule) -> str:
    """How a strategy names ``rule``: ``'<prefix>_<number>'``, or its name alone."""
    if not rule.prefix:
        return f"'{rule.name}'"
    assert rule.param is not None, "a rule spelt with a prefix takes a number"
    return f"'{rule.prefix}_<{rule.param.name}>'"


def _rule_params(name: str, spec: str) -> dict:
    for rule in RULES.values():
        if rule.prefix is None and name == rule.name:
            return {"rule": rule.name}
        if rule.prefix is not None and name.startswith(rule.prefix + "_"):
            param = rule.param
            assert param is not None, "a rule spelt with a prefix takes a number"
            value = param.value(name[len(rule.prefix) + 1 :], f"strategy {spec!r}")
            return {"rule": rule.name, param.name: value}
    spellings = ", ".join(_spelling(r) for r in RULES.values())
    raise ConfigError(
        f"unknown strategy {spec!r}; use 'none', 'oracle', {spellings} "
        "(optionally '_r<rounds>' and '@<scoring>')"
    )


def describe(settings: Mapping | None) -> str:
    """A cleaning setting in words: a parsed strategy or OneShotRemoval's parameters.

    >>> describe(parse_strategy("auto_3_r5@out_of_fold"))
    'drop scores above median + 3 robust SD, up to 5 rounds, out-of-fold scores'
    >>> describe({"rule": "score_threshold", "threshold": 1.5})
    'drop scores above 1.5'
    >>> describe(None)
    'no cleaning'
    """
    if settings is None or settings.get("rule") in (None, "none"):
        return SPECIAL_STRATEGIES["none"]
    if settings["rule"] == "oracle":
        return SPECIAL_STRATEGIES["oracle"]
    rule = RULES.get(settings["rule"])
    if rule is None:
        raise ConfigError(f"unknown rule {settings['rule']!r}; choose one of: {', '.join(RULES)}")
    defaults = {r.param.name: r.param.default for r in RULES.values() if r.param}
    text = rule.describe({**defaults, **settings})
    if rule.rounds and int(settings.get("rounds", 1)) > 1:
        text += f", up to {settings['rounds']} rounds"
    if settings.get("scoring"):
        text += f", {SCORING_WORDS.get(settings['scoring'], settings['scoring'])} scores"
    return text
