"""Experiments: the paper's protocol, one cell at a time."""

from .protocol import run_protocol_cell

__all__ = ["run_protocol_cell"]
