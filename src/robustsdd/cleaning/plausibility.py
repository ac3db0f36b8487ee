"""When a removal is not to be read as an estimate of the contamination.

Every cut robustsdd makes without labels — a fixed threshold, median + z robust SD of the
log scores, a two-component mixture — rests on one assumption: the images that belong
are the clear majority of the folder and form its tightest mode. Where that holds, the
share a cut removes estimates the share of images that do not belong. Where a cut
removes much more, the assumption has failed, not the folder: on ELPV the scale-free cuts
stop telling defective images apart from 30 % contamination on (BENCHMARKS.md §7), and a
fixed threshold carried to a new product removed half of a real folder of mostly good
images. So a removal is flagged, and never shown as an estimate, when

* the min-keep guard fired (the rule wanted to drop more than the guard allows), or
* it removed more than :data:`MAX_PLAUSIBLE_SHARE` of the images.

The fit still goes on (the kept images are the lowest-scoring ones, which is the best
guess there is), but the command line, ``report.html`` and ``train_scores.csv`` say
plainly that the inspector should look before trusting it.
"""

from __future__ import annotations

__all__ = ["MAX_PLAUSIBLE_SHARE", "removal_warning"]

#: The largest share of a folder a label-free cut is trusted to remove (see above).
MAX_PLAUSIBLE_SHARE = 0.3


def removal_warning(n_images: int, n_removed: int, guard_fired: bool) -> str | None:
    """A plain sentence when the removal is implausible, else None.

    >>> removal_warning(100, 12, False) is None
    True
    >>> print(removal_warning(115, 57, True))  # doctest: +NORMALIZE_WHITESPACE
    the cleaning removed 57 of 115 images (49.6 %), and the min-keep guard fired: this
    is not an estimate of the contamination. A label-free cut assumes the good images are
    the clear majority, and it cannot remove more than 30 % and still be trusted; review the
    removed images, or fit again with a stricter cut (e.g. --z 4) or --rule none
    """
    n_images, n_removed = int(n_images), int(n_removed)
    share = n_removed / n_images if n_images else 0.0
    if not guard_fired and share <= MAX_PLAUSIBLE_SHARE:
        return None
    limit = f"{100 * MAX_PLAUSIBLE_SHARE:.0f} %"
    why = ", and the min-keep guard fired" if guard_fired else f", more than {limit}"
    return (
        f"the cleaning removed {n_removed} of {n_images} images ({100 * share:.1f} %){why}: "
        "this is not an estimate of the contamination. A label-free cut assumes the good "
        f"images are the clear majority, and it cannot remove more than {limit} and still "
        "be trusted; review the removed images, "
        "or fit again with a stricter cut (e.g. --z 4) or --rule none"
    )
