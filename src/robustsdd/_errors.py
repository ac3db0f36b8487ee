"""The library's own exception types.

Every error a user can cause (bad image, bad folder, bad option, bad model file)
is raised as a subclass of :class:`RobustSDDError`, so the CLI can print a clear
message without a traceback and callers can catch one type.
"""

__all__ = ["RobustSDDError", "DataError", "ConfigError", "ModelFileError"]


class RobustSDDError(Exception):
    """Base class for errors caused by input, configuration or files."""


class DataError(RobustSDDError):
    """An image, folder or data set cannot be used as asked."""


class ConfigError(RobustSDDError, ValueError):
    """An option has an unknown name or an invalid value."""


class ModelFileError(RobustSDDError):
    """A saved model is missing, damaged, foreign or from an incompatible version."""
