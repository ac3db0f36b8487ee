"""Tables and the figure of a sweep: the paper's Table 1 and Fig. 3, from tidy rows.

Every function here reads the rows of :func:`robustsdd.experiments.sweep.run_sweep`
(one per level, strategy and seed) and nothing else, so a report can be redrawn
from ``cells.json`` without recomputing anything. Means and standard deviations
are over seeds; the standard deviation is the sample one (``ddof=1``), 0 for a
single seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._format import fmt_count
from .._io import StrPath, atomic_write_bytes, atomic_write_json, json_safe
from ..cleaning import describe, parse_strategy
from .sweep import ROW_COLUMNS, row_from_json

__all__ = [
    "write_report",
    "read_rows",
    "removal_table",
    "auroc_table",
    "area_under_curve",
    "plot_auroc",
    "format_auroc_table",
    "format_removal_table",
    "format_summary",
    "PAPER_KSDD2",
]

#: The paper's KSDD2 AUROC readings (Sec. 4.3, Fig. 3): strategy -> {% defective: AUROC}.
PAPER_KSDD2: dict[str, dict[float, float]] = {
    "none": {0: 0.92, 50: 0.74, 60: 0.63, 100: 0.07},
    "osr_1.5": {0: 0.92, 50: 0.67, 100: 0.42},
}
_OUTPUTS = (
    "cells.csv",
    "cells.json",
    "removal_table.md",
    "auroc_vs_contamination.png",
    "summary.md",
)


# ---------------------------------------------------------------------------------------------
# aggregation
def _order(rows, key) -> list:
    """Distinct values of ``key`` in order of first appearance (the sweep's own order)."""
    seen: dict[Any, None] = {}
    for row in rows:
        seen.setdefault(row[key], None)
    return list(seen)


def _select(rows, **where) -> list:
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def _mean_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else 0.0)


def auroc_table(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Mean and std over seeds of AUROC and AP per (level, strategy), tidy."""
    out = []
    for level in _order(rows, "level"):
        for strategy in _order(rows, "strategy"):
            cell = _select(rows, level=level, strategy=strategy)
            if not cell:
                continue
            auroc, auroc_std = _mean_std([r["auroc"] for r in cell])
            ap, ap_std = _mean_std([r["ap"] for r in cell])
            out.append(
                {
                    "level": level,
                    "strategy": strategy,
                    "auroc": auroc,
                    "auroc_std": auroc_std,
                    "ap": ap,
                    "ap_std": ap_std,
                    "n_seeds": len(cell),
                }
            )
    return out


def area_under_curve(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per strategy, the mean AUROC over levels (area under Fig. 3's curve, x scaled to 1).

    Computed per seed, then mean and std over seeds; levels are weighted equally.
    """
    out = []
    for strategy in _order(rows, "strategy"):
        per_seed = [
            float(np.mean([r["auroc"] for r in _select(rows, strategy=strategy, seed=s)]))
            for s in _order(_select(rows, strategy=strategy), "seed")
        ]
        mean, std = _mean_std(per_seed)
        out.append({"strategy": strategy, "area": mean, "area_std": std, "n_seeds": len(per_seed)})
    return out


def removal_table(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Table 1: per level and OSR strategy, mean removed good / defective / total over seeds.

    ``train_good`` and ``train_defective`` are the training set's composition at that level.
    The ``none`` strategy removes nothing and is left out.
    """
    out = []
    for level in _order(rows, "level"):
        for strategy in _order(rows, "strategy"):
            if parse_strategy(strategy) is None:
                continue
            cell = _select(rows, level=level, strategy=strategy)
            if not cell:
                continue
            good = float(np.mean([r["removed_good"] for r in cell]))
            bad = float(np.mean([r["removed_defective"] for r in cell]))
            out.append(
                {
                    "level": level,
                    "strategy": strategy,
                    "train_good": float(np.mean([r["train_good"] for r in cell])),
                    "train_defective": float(np.mean([r["train_defective"] for r in cell])),
                    "removed_good": good,
                    "removed_defective": bad,
                    "removed_total": good + bad,
                    "guard_fired": sum(bool(r["guard_fired"]) for r in cell),
                    "n_seeds": len(cell),
                }
            )
    return out


# ---------------------------------------------------------------------------------------------
# formatting
def _pct(level) -> str:
    return f"{level * 100:g}%"


def _markdown(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def format_auroc_table(rows: Sequence[Mapping[str, Any]], metric: str = "auroc") -> str:
    """AUROC (mean ± std over seeds) as a markdown table, levels × strategies.

    ``metric``: any numeric row column, e.g. ``"pixel_auroc"``.
    """
    strategies = _order(rows, "strategy")
    body = []
    for level in _order(rows, "level"):
        line = [_pct(level)]
        for s in strategies:
            cell = _select(rows, level=level, strategy=s)
            mean, std = _mean_std([r.get(metric, float("nan")) for r in cell])
            line.append(f"{mean:.3f} ± {std:.3f}" if cell else "")
        body.append(line)
    return _markdown(["% defective"] + strategies, body)


def format_removal_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 1 as markdown: one row per level, three columns per OSR strategy."""
    table = removal_table(rows)
    strategies = _order(table, "strategy") if table else []
    by = {(t["level"], t["strategy"]): t for t in table}
    header = ["% defective", "train good", "train defective"]
    for s in strategies:
        header += [f"{s} removed good", f"{s} removed defective", f"{s} removed total"]
    body = []
    for level in _order(rows, "level"):
        first = next((t for t in table if t["level"] == level), None)
        if first is None:
            continue
        line = [_pct(level), fmt_count(first["train_good"]), fmt_count(first["train_defective"])]
        for s in strategies:
            t = by.get((level, s))
            line += (
                [
                    fmt_count(t["removed_good"]),
                    fmt_count(t["removed_defective"]),
                    fmt_count(t["removed_total"]),
                ]
                if t
                else ["", "", ""]
            )
        body.append(line)
    n_seeds = max((t["n_seeds"] for t in table), default=0)
    intro = (
        "# Removed training images (Table 1)\n\nMean over "
        f"{n_seeds} seed{'s' if n_seeds != 1 else ''} of the training images each One-Shot "
        "Removal strategy dropped, by true label.\n\n"
    )
    fired = [t for t in table if t["guard_fired"]]
    notes = "".join(
        f"\n- {t['strategy']} at {_pct(t['level'])}: the min_keep guard overrode the rule in "
        f"{t['guard_fired']} of {t['n_seeds']} seeds"
        for t in fired
    )
    return intro + _markdown(header, body) + (f"\nNotes:\n{notes}\n" if notes else "")


# ---------------------------------------------------------------------------------------------
# files
def _csv_value(v) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def _rows_csv(rows) -> bytes:
    columns = list(ROW_COLUMNS)
    for row in rows:  # columns beyond the standard ones (e.g. added by a caller) go last
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c, "")) for c in columns])
    return buf.getvalue().encode()


def read_rows(path: StrPath) -> list[dict]:
    """The rows of a ``cells.json`` written by :func:`write_report` (null → NaN again).

    Redraw a report without recomputing: ``write_report(read_rows(p), out_dir)``.
    """
    return [row_from_json(row) for row in json.loads(Path(path).read_text())]


def _reference(config) -> dict | None:
    """The paper's numbers when the data source is KSDD2 (the only one it reports)."""
    data = (config or {}).get("data") or {}
    return PAPER_KSDD2 if str(data.get("source", "")).startswith("ksdd2") else None


def plot_auroc(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "",
    reference: Mapping[str, Mapping[float, float]] | None = None,
) -> bytes:
    """Fig. 3 as PNG bytes: AUROC against % defective, mean ± std band per strategy.

    ``reference`` (strategy -> {percent: AUROC}) is drawn as hollow markers, e.g.
    :data:`PAPER_KSDD2`.
    """
    # The object API with an Agg canvas: no pyplot state, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = {}
    table = auroc_table(rows)
    # Distinct markers: curves of thresholds that remove the same images coincide.
    markers = "osv^D<>ph"
    for i, strategy in enumerate(_order(rows, "strategy")):
        cells = [c for c in table if c["strategy"] == strategy]
        x = np.array([c["level"] * 100 for c in cells])
        mean = np.array([c["auroc"] for c in cells])
        std = np.array([c["auroc_std"] for c in cells])
        (line,) = ax.plot(x, mean, marker=markers[i % len(markers)], ms=4, label=strategy)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.18, lw=0)
        colours[strategy] = line.get_color()
    for i, (strategy, points) in enumerate((reference or {}).items()):
        percents, aurocs = zip(*sorted(points.items()))
        ax.plot(
            percents,
            aurocs,
            ls="none",
            marker="DX*P"[i % 4],
            ms=8 - 2 * (i % 2),
            mfc="none",
            mew=1.5,
            color=colours.get(strategy, "black"),
            label=f"paper, KSDD2: {strategy}",
        )
    ax.set_xlabel("defective images in the training set (%)")
    ax.set_ylabel("test AUROC")
    ax.set_xlim(-2, 102)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _title(config) -> str:
    if not config:
        return ""
    data = (config.get("data") or {}).get("source", "")
    detector = (config.get("detector") or {}).get("class", "").rsplit(".", 1)[-1]
    return " · ".join(p for p in (data, detector, config.get("scoring", "")) if p)


def _describe_strategies(names) -> str:
    return "; ".join(f"{name} ({describe(parse_strategy(name))})" for name in names)


def _config_lines(rows, config) -> list[str]:
    """The configuration as markdown bullet points, leaving out what ``config`` lacks."""
    lines = []
    data = config.get("data")
    if data:
        counts = (
            f" ({data['good']} good + {data['defective']} defective)"
            if "good" in data and "defective" in data
            else ""
        )
        test = config.get("test_data")
        lines.append(
            f"data: {data.get('source', '?')}{counts}"
            + (f"; test images from {test.get('source', '?')}" if test else "")
        )
    if "n_train" in config:
        lines.append(
            f"split: {config['n_train']} training images; test "
            f"{config['n_test_good']} good + {config['n_test_defective']} defective"
        )
    if config.get("detector"):
        lines.append(f"detector: {config['detector']['class']}")
    if config.get("features"):
        lines.append(f"features: `{config['features']}`")
    if config.get("scoring"):
        lines.append(f"OSR scoring: {config['scoring']}")
    lines.append(f"strategies: {_describe_strategies(_order(rows, 'strategy'))}")
    lines.append(
        f"levels: {', '.join(_pct(lv) for lv in _order(rows, 'level'))}; seeds: "
        f"{', '.join(str(s) for s in _order(rows, 'seed'))}"
    )
    if config.get("config_hash"):
        lines.append(f"config hash: `{config['config_hash']}`")
    if config.get("command"):
        lines.append(f"command: `{config['command']}`")
    return lines


def format_summary(
    rows: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
) -> str:
    """summary.md: the configuration, the area under each curve, the AUROC table."""
    lines = _config_lines(rows, config or {})
    if stats:
        lines.append(
            f"groups (level × seed): {stats['groups']} ({stats['computed']} computed, "
            f"{stats['reused']} reused); backbone ran on "
            f"{stats['features_computed']} images; {stats['seconds']} s"
        )
    parts = ["# Contamination sweep\n\n", "".join(f"- {line}\n" for line in lines)]
    parts.append("\n## Area under the curve (mean AUROC over levels)\n\n")
    areas = [
        [a["strategy"], f"{a['area']:.3f} ± {a['area_std']:.3f}"] for a in area_under_curve(rows)
    ]
    parts.append(_markdown(["strategy", "area (mean ± std over seeds)"], areas))
    parts.append("\n## Test AUROC (mean ± std over seeds)\n\n")
    parts.append(format_auroc_table(rows))
    if any(np.isfinite(r.get("pixel_auroc", float("nan"))) for r in rows):
        parts.append("\n## Pixel AUROC of the anomaly maps (mean ± std over seeds)\n\n")
        parts.append(format_auroc_table(rows, "pixel_auroc"))
    if config and config.get("detector", {}).get("params"):
        parts.append(
            "\n## Detector parameters\n\n```json\n"
            + json.dumps(config["detector"]["params"], indent=1, sort_keys=True, default=repr)
            + "\n```\n"
        )
    return "".join(parts)


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: StrPath,
    *,
    config: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
    reference: Mapping[str, Mapping[float, float]] | Literal["auto"] | None = "auto",
) -> dict[str, Path]:
    """Write the sweep's tables and figure into ``out_dir``; return {name: path}.

    Parameters
    ----------
    rows : list of dict
        From :func:`~robustsdd.experiments.sweep.run_sweep` (or ``cells.json``).
    out_dir : path
    config, stats : dict, optional
        Default to ``rows.config`` and ``rows.stats`` of a ``SweepResult``.
    reference : "auto", None or dict
        Paper numbers drawn on the figure; ``"auto"``: :data:`PAPER_KSDD2` when the
        data source is KSDD2.

    Files: ``cells.csv``, ``cells.json`` (every row), ``removal_table.md`` (Table 1),
    ``auroc_vs_contamination.png`` (Fig. 3) and ``summary.md``; each written atomically.
    """
    config = getattr(rows, "config", None) if config is None else config
    stats = getattr(rows, "stats", None) if stats is None else stats
    if reference == "auto":
        reference = _reference(config)
    rows = list(rows)
    out = Path(out_dir)
    paths = {name: out / name for name in _OUTPUTS}
    atomic_write_bytes(paths["cells.csv"], _rows_csv(rows))
    atomic_write_json(paths["cells.json"], json_safe(rows))
    atomic_write_bytes(paths["removal_table.md"], format_removal_table(rows).encode())
    atomic_write_bytes(
        paths["auroc_vs_contamination.png"],
        plot_auroc(rows, title=_title(config), reference=reference),
    )
    atomic_write_bytes(paths["summary.md"], format_summary(rows, config, stats).encode())
    return paths
