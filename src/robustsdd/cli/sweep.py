"""The ``robustsdd sweep`` verb: the paper's Fig. 3 and Table 1 on any data source."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ConfigError
from ..data import open_source
from ..executors import EXECUTORS, make_executor
from ..experiments.sweep import (
    DEFAULT_LEVELS,
    DEFAULT_SEEDS,
    DEFAULT_STRATEGIES,
    parse_levels,
    parse_seeds,
    parse_strategies,
    run_sweep,
)
from ..experiments.sweep_report import format_auroc_table, format_removal_table, write_report
from ..recipes import PAPER_DETECTOR, make_components
from . import args as common

__all__ = ["add_sweep_parser", "cmd_sweep"]

# Single-split options of the shared data group that a sweep replaces by lists.
_REPLACED = {"contamination": "--levels", "seed": "--seeds"}


def _csv(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def add_sweep_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Define the ``sweep`` verb on ``subparsers``."""
    p = subparsers.add_parser(
        "sweep",
        help="contamination levels x cleaning strategies x seeds (paper Fig. 3, Table 1)",
        description="Run the paper's protocol at every contamination level, for every cleaning "
        "strategy and seed; features are extracted once and finished (level, seed) "
        "groups are kept in OUT/cells/, so an interrupted sweep resumes where it "
        "stopped. Writes cells.csv/json, removal_table.md (Table 1), "
        "auroc_vs_contamination.png (Fig. 3) and summary.md.",
    )
    # --contamination and --seed name one split; here --levels and --seeds do. They are
    # accepted (hidden) so that cmd_sweep can tell a user who passes them which to use.
    common.add_data_args(p, protocol=True, single_split=False)
    common.add_feature_args(p)
    common.add_detector_args(p, default=PAPER_DETECTOR)
    common.add_cleaning_args(p, rule=False)
    g = p.add_argument_group("sweep")
    g.add_argument(
        "--levels",
        default=_csv(DEFAULT_LEVELS),
        help="comma-separated shares of defective training images (default: 0,0.1,...,1)",
    )
    g.add_argument(
        "--strategies",
        default=_csv(DEFAULT_STRATEGIES),
        help="comma-separated: none, oracle, osr_<threshold>, fraction_<share>, "
        "min_size_<size>, auto_<z> (automatic cut), confident, fdr_<rate> (contamination "
        "estimate, false-discovery-rate cut), each optionally "
        "_r<rounds> and @<scoring> (default: %(default)s)",
    )
    g.add_argument(
        "--seeds",
        default=_csv(DEFAULT_SEEDS),
        help="comma-separated split and model seeds (default: %(default)s)",
    )
    g.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel workers for feature extraction and (level, seed) groups: "
        "local processes, or the CPUs of a local Ray instance (default: 1)",
    )
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where extraction and groups run: local processes, or Ray "
        "(pip install 'robustsdd[ray]'); same numbers either way "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--address",
        default=None,
        help="with --executor ray: the Ray cluster to use ('auto', HOST:PORT, "
        "ray://HOST:PORT); without it a local Ray instance is started",
    )
    g.add_argument("--out", default="runs/sweep", help="output folder (default: runs/sweep)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep described by ``args``, write its report, print the tables."""
    for dest, flag in _REPLACED.items():
        if getattr(args, dest, None) is not None:
            raise ConfigError(
                f"sweep runs many splits: use {flag} instead of --{dest.replace('_', '-')}"
            )
    executor = getattr(args, "executor", "local")
    make_executor(executor, jobs=args.jobs, address=getattr(args, "address", None))  # checks only
    levels = parse_levels(args.levels)
    strategies = parse_strategies(args.strategies)
    seeds = parse_seeds(args.seeds)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    # The detector is a template: the sweep sets its random_state to each group's seed.
    parts = make_components(**{**common.settings(args), "seed": seeds[0]})
    pool, test_pool = open_source(
        args.source, args.root, cell_type=args.cell_type, category=args.category
    )
    result = run_sweep(
        pool,
        test_pool,
        featurizer=parts.featurizer,
        detector=parts.detector,
        levels=levels,
        strategies=strategies,
        seeds=seeds,
        out_dir=out,
        scoring=args.scoring,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defective=args.n_test_defective,
        jobs=args.jobs,
        executor=executor,
        address=getattr(args, "address", None),
        progress=not args.quiet,
    )
    config = dict(result.config)
    if getattr(args, "argv", None) is not None:
        config["command"] = "robustsdd " + " ".join(args.argv)
    paths = write_report(result, out, config=config)
    stats = result.stats
    print(
        f"\n{pool.source}: {len(levels)} levels x {len(strategies)} strategies x "
        f"{len(seeds)} seeds; {stats['computed']} of {stats['groups']} (level, seed) groups "
        f"computed, {stats['reused']} reused from {out / 'cells'}; backbone ran on "
        f"{stats['features_computed']} images ({stats['seconds']:.0f} s, executor "
        f"{stats['executor']}, {stats['jobs']} jobs)\n"
    )
    print("test AUROC (mean ± std over seeds)")
    print(format_auroc_table(result))
    if any(s != "none" for s in strategies):
        print("removed training images (mean over seeds)")
        print(format_removal_table(result).split("\n\n", 2)[-1])  # the table, not its heading
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
