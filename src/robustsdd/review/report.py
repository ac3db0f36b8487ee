"""``report.html``: one self-contained page an inspector reads after a fit.

It shows how many images were seen and removed, the decision threshold and how it
was chosen, a histogram of the training scores with the thresholds, the removed
images (highest score first; with a heat-map where the detector localises), and
the kept images closest to the cut. Pictures are embedded as ``data:`` URIs, the
CSS is inline, and there is no script: the page opens offline from anywhere. Every
file name is HTML-escaped, and a Content-Security-Policy forbids scripts and
outside resources as a second line of defence.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .pictures import data_uri, heatmap_overlay, jpeg_bytes, score_histogram_png, thumbnail

__all__ = ["render_report"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em}
table.summary{border-collapse:collapse}table.summary th{text-align:left;padding:3px 14px 3px 0;
font-weight:600;vertical-align:top}table.summary td{padding:3px 0}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure.card{margin:0;width:172px;border:1px solid #ddd;border-radius:4px;padding:6px;
background:#fafafa}
figure.card img{display:block;max-width:160px;max-height:160px;margin:0 auto 4px}
figcaption{font-size:12px;line-height:1.35}
.name{font-family:ui-monospace,monospace;word-break:break-all;color:#333}
.score{font-weight:600}.muted{color:#666;font-size:13px}.tag{color:#b00}
ul.notes{font-size:13px;color:#444}
td.warning{color:#8a3b00;background:#fff4e5;border-left:4px solid #e08a00;padding:4px 8px}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _estimate_row(estimate: Mapping | None, removed_share: float) -> str:
    if estimate is None:
        return (
            f'<tr><th>estimated contamination</th><td><span id="contamination">'
            f"{100 * removed_share:.1f}</span> % (the share removed)</td></tr>"
        )
    return (
        f'<tr><th>estimated contamination</th><td><span id="contamination">'
        f"{100 * estimate['share']:.1f}</span> % "
        f'(<span id="contamination-interval">{100 * estimate["low"]:.1f}–'
        f"{100 * estimate['high']:.1f}</span> %, a {100 * estimate['level']:.0f} % interval), "
        f"read off the {_e(estimate.get('scores', ''))} scores of the training images by a "
        f"model of the normal images' scores; {100 * removed_share:.1f} % removed</td></tr>"
    )


def render_report(
    *,
    names: Sequence[str],
    load_rgb: Callable[[int], np.ndarray],
    final_scores: ArrayLike,
    review_scores: ArrayLike,
    keep: ArrayLike,
    removed_order: Iterable[int],
    decision: Mapping,
    cleaning_text: str,
    review_label: str,
    model_text: str,
    histograms: Iterable[tuple[ArrayLike, ArrayLike, str, Mapping[str, float]]] = (),
    notes: Iterable[str] = (),
    labels: Sequence[int] | np.ndarray | None = None,
    anomaly_maps: Callable | None = None,
    n_near: int = 12,
    max_removed: int = 200,
    thumb: int = 160,
    title: str = "robustsdd review",
    warning: str | None = None,
    estimate: Mapping | None = None,
) -> str:
    """The HTML text of the review report.

    Parameters
    ----------
    names : image names (shown escaped); ``load_rgb(i)`` decodes image ``i``.
    final_scores : the final model's score of every training image.
    review_scores : the scores the removal and the decision threshold were based on
        (held-out removal-stage scores; the final scores without cleaning).
    keep : bool mask of kept images; ``removed_order`` lists removed indices, highest
        removal score first.
    decision : ``threshold`` and ``description`` of the decision threshold.
    cleaning_text, review_label, model_text : plain text for the summary and the galleries.
    histograms : ``(scores, keep, xlabel, {label: value})`` per plot: training scores,
        kept and removed stacked, with the thresholds drawn as vertical lines.
    labels : optional known labels (0 good, 1 defective, -1 unknown), shown as a tag.
    anomaly_maps : optional ``f(indices) -> [map, ...]``, one map per index in its image's
        coordinates; with it each card also shows a heat-map overlay.
    warning : optional sentence saying the removal is implausible
        (:func:`robustsdd.cleaning.plausibility.removal_warning`): shown as a warning in
        place of the estimated contamination.
    estimate : optional contamination estimate read off the scores
        (:func:`robustsdd.cleaning.estimate.estimate_summary`: ``share``, ``low``, ``high``,
        ``level``, and ``scores``, which scores it was read off); without it the share
        removed stands for the estimate.
    """
    final_scores = np.asarray(final_scores, dtype=np.float64)
    review_scores = np.asarray(review_scores, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    n, n_removed = len(keep), int((~keep).sum())
    threshold = float(decision["threshold"])
    removed = [int(i) for i in removed_order]
    kept_idx = np.flatnonzero(keep)
    near = kept_idx[np.argsort(-np.nan_to_num(review_scores[kept_idx], nan=np.inf), kind="stable")][
        :n_near
    ]
    shown_removed = removed[:max_removed]
    maps = {}
    if anomaly_maps is not None:
        wanted = shown_removed + [int(i) for i in near]
        if wanted:
            maps = dict(zip(wanted, anomaly_maps(wanted)))

    def card(i: int) -> str:
        rgb = load_rgb(i)
        name = _e(names[i])
        pics = [
            f'<img src="{data_uri(jpeg_bytes(thumbnail(rgb, thumb)), "image/jpeg")}" alt="{name}">'
        ]
        if i in maps:
            overlay = heatmap_overlay(rgb, maps[i], size=thumb)
            pics.append(
                f'<img class="heat" src="{data_uri(jpeg_bytes(overlay), "image/jpeg")}"'
                f' alt="heat-map of {name}">'
            )
        tag = ""
        if labels is not None and labels[i] >= 0:
            tag = f' <span class="tag">[labelled {"defective" if labels[i] else "good"}]</span>'
        return (
            f'<figure class="card" data-index="{i}">{"".join(pics)}<figcaption>'
            f'<div class="name" title="{name}">{name}</div>'
            f'<div><span class="score">{_e(review_label)} {_fmt(review_scores[i])}</span>'
            f'{tag}</div><div class="muted">final-model score {_fmt(final_scores[i])}</div>'
            f"</figcaption></figure>"
        )

    plots = [
        score_histogram_png(s, k, lines=lines, xlabel=label) for s, k, label, lines in histograms
    ]
    contamination = n_removed / n if n else 0.0

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(model_text)}</p>',
        '<h2>Summary</h2><table class="summary">',
        f'<tr><th>images seen</th><td id="n-images">{n}</td></tr>',
        f'<tr><th>removed</th><td><span id="n-removed">{n_removed}</span> '
        f'(kept <span id="n-kept">{n - n_removed}</span>)</td></tr>',
        (
            f'<tr><th>warning</th><td class="warning" id="removal-warning">{_e(warning)}</td></tr>'
            if warning
            else _estimate_row(estimate, contamination)
        ),
        f"<tr><th>removal</th><td>{_e(cleaning_text)}</td></tr>",
        f'<tr><th>decision threshold</th><td><span id="decision-threshold">{threshold:.6g}'
        f"</span>: {_e(decision.get('description', ''))}. A new image scoring above it is "
        f"labelled anomalous by <code>robustsdd predict</code>.</td></tr>",
        "</table>",
    ]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(t)}</li>" for t in notes) + "</ul>")
    parts += [
        "<h2>Training scores</h2>",
        *(
            f'<img class="histogram" src="{data_uri(png, "image/png")}" '
            f'alt="histogram of training scores" style="max-width:100%">'
            for png in plots
        ),
        f"<h2>Removed images ({n_removed}, highest score first)</h2>",
    ]
    if len(removed) > len(shown_removed):
        parts.append(
            f'<p class="muted">showing the first {len(shown_removed)}; all are listed '
            f"in train_scores.csv</p>"
        )
    parts.append(
        '<div class="gallery" id="removed">'
        + (
            "".join(card(i) for i in shown_removed)
            or '<p class="muted">none: the rule removed nothing</p>'
        )
        + "</div>"
    )
    parts += [
        f"<h2>Kept images closest to the cut ({len(near)}): worth a second look</h2>",
        '<div class="gallery" id="near">' + "".join(card(int(i)) for i in near) + "</div>",
        '<p class="muted">Every training image, its score at each stage and its rank are in '
        "train_scores.csv beside this report.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
