"""Experiments: the paper's protocol, one cell at a time, and sweeps over levels × strategies × seeds."""

from .protocol import run_protocol_cell
from .report import write_report
from .sweep import parse_strategy, run_sweep

__all__ = ["run_protocol_cell", "run_sweep", "parse_strategy", "write_report"]
