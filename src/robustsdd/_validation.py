"""Checks of user-supplied parameter values, shared by detectors and cleaning.

One way to say "a positive integer" and "a number in a range", so that every
parameter refuses the same things with the same kind of message. Both raise
:class:`~robustsdd._errors.ConfigError` naming the parameter and the value, and
return the value as a plain Python ``int`` / ``float``.

``bool`` is refused wherever a number is expected, although Python treats
``True`` as the integer 1: ``k=True`` is a mistake, not a request for one
neighbour.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._errors import ConfigError

__all__ = ["check_positive_int", "check_float_range"]


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise.

    Python and numpy integers are accepted; ``bool`` (``numpy.bool_`` too), floats
    (even integral ones such as ``2.0``), strings and ``None`` are refused with a
    :class:`~robustsdd._errors.ConfigError` that names the parameter.

    >>> check_positive_int(3, "k")
    3
    >>> check_positive_int(np.int64(0), "epochs", minimum=0)
    0
    >>> check_positive_int(True, "k")
    Traceback (most recent call last):
    ...
    robustsdd._errors.ConfigError: k must be a positive integer, got True
    >>> check_positive_int(2.0, "n_blocks")
    Traceback (most recent call last):
    ...
    robustsdd._errors.ConfigError: n_blocks must be a positive integer, got 2.0
    >>> check_positive_int(-1, "epochs", minimum=0)
    Traceback (most recent call last):
    ...
    robustsdd._errors.ConfigError: epochs must be an integer >= 0, got -1
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_float_range(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a ``float`` if it is a real number within the bounds, else raise.

    ``low``/``high`` of ``None`` leave that side open-ended; ``low_inclusive`` /
    ``high_inclusive`` say whether the bound itself is allowed. Integers and numpy
    scalars are accepted; ``bool``, strings, ``None`` and NaN are refused with a
    :class:`~robustsdd._errors.ConfigError` that names the parameter and the range.

    >>> check_float_range(1, "coreset_ratio", low=0, high=1, low_inclusive=False)
    1.0
    >>> check_float_range(0.0, "lr", low=0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    robustsdd._errors.ConfigError: lr must be > 0, got 0.0
    >>> check_float_range("0.5", "denoise_fraction", low=0, high=1, high_inclusive=False)
    Traceback (most recent call last):
    ...
    robustsdd._errors.ConfigError: denoise_fraction must be in [0, 1), got '0.5'
    """
    x = (
        float(value)
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        else math.nan
    )
    ok = not math.isnan(x)
    if ok:
        if low is not None:
            ok = x >= low if low_inclusive else x > low
        if ok and high is not None:
            ok = x <= high if high_inclusive else x < high
    if not ok:
        raise ConfigError(
            f"{name} must be {_describe_range(low, high, low_inclusive, high_inclusive)}, "
            f"got {value!r}"
        )
    return x


def _describe_range(low, high, low_inclusive, high_inclusive) -> str:
    if low is not None and high is not None:
        return (
            f"in {'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
        )
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {low:g}"
    if high is not None:
        return f"{'<=' if high_inclusive else '<'} {high:g}"
    return "a number"
