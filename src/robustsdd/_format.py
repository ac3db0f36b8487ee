"""How numbers are written for people and files, in one place."""

from __future__ import annotations

import math

__all__ = ["fmt_metric", "fmt_score", "fmt_count"]


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_metric(x, missing: str = "n/a") -> str:
    """A metric such as an AUROC, to 3 decimals; ``missing`` for None or NaN.

    >>> fmt_metric(0.89751), fmt_metric(float("nan"))
    ('0.898', 'n/a')
    """
    return missing if _missing(x) else f"{float(x):.3f}"


def fmt_score(x) -> str:
    """A score in a CSV file: 8 significant digits; empty for NaN (not scored).

    >>> fmt_score(1.234567891), fmt_score(float("nan"))
    ('1.2345679', '')
    """
    return "" if _missing(x) else f"{float(x):.8g}"


def fmt_count(x, digits: int = 2) -> str:
    """A count-like mean without trailing zeros: '9', '8.67', '8.5'; 'n/a' for NaN.

    >>> fmt_count(9.0), fmt_count(8.666), fmt_count(8.5)
    ('9', '8.67', '8.5')
    """
    return "n/a" if _missing(x) else f"{float(x):.{digits}f}".rstrip("0").rstrip(".")
