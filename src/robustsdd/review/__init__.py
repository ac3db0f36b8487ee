"""The review report of a fit: what was removed, what is worth a second look, and why."""

from .report import render_report

__all__ = ["render_report"]
