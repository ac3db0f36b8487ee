"""How numbers are written for people and files, in one place."""

from __future__ import annotations

import math
from typing import SupportsFloat

__all__ = ["fmt_metric", "fmt_score", "fmt_count"]


def _number(x: SupportsFloat | None) -> float | None:
    """``float(x)``, or None when ``x`` is missing (None, or a NaN or infinite float)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x)


def fmt_metric(x: SupportsFloat | None, missing: str = "n/a") -> str:
    """A metric such as an AUROC, to 3 decimals; ``missing`` for None or NaN.

    >>> fmt_metric(0.89751), fmt_metric(float("nan"))
    ('0.898', 'n/a')
    """
    v = _number(x)
    return missing if v is None else f"{v:.3f}"


def fmt_score(x: SupportsFloat | None) -> str:
    """A score in a CSV file: 8 significant digits; empty for NaN (not scored).

    >>> fmt_score(1.234567891), fmt_score(float("nan"))
    ('1.2345679', '')
    """
    v = _number(x)
    return "" if v is None else f"{v:.8g}"


def fmt_count(x: SupportsFloat | None, digits: int = 2) -> str:
    """A count-like mean without trailing zeros: '9', '8.67', '8.5'; 'n/a' for NaN.

    >>> fmt_count(9.0), fmt_count(8.666), fmt_count(8.5)
    ('9', '8.67', '8.5')
    """
    v = _number(x)
    return "n/a" if v is None else f"{v:.{digits}f}".rstrip("0").rstrip(".")
