"""robustsdd: robust surface-defect detection on contaminated training sets."""

__version__ = "0.1.0"
