"""Errors users can catch. Every message says what was wrong, where, and what to do.

The CLI prints ``str(error)`` and exits with status 2 (no traceback unless ``--debug``).
"""


class TextVAEError(Exception):
    """Base class for every error textvae raises on purpose."""


class ConfigError(TextVAEError):
    """A config file, preset or ``key=value`` override is invalid."""


class DataError(TextVAEError):
    """A corpus is missing, empty, unreadable or malformed."""


class CheckpointError(TextVAEError):
    """A model or run directory is missing, incomplete, unsafe or from an incompatible version."""


class TrainingError(TextVAEError):
    """Training cannot continue (e.g. a non-finite loss)."""
