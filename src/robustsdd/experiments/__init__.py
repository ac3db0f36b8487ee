"""Experiments: the paper's protocol one cell at a time; sweeps of levels × strategies × seeds."""

from ..cleaning import parse_strategy
from .protocol import run_protocol_cell
from .sweep import run_sweep
from .sweep_report import write_report

__all__ = ["run_protocol_cell", "run_sweep", "parse_strategy", "write_report"]
