"""Errors that explain themselves to the person who typed the command.

The entry points print a :class:`UserError` (and a missing file or a permission problem) as its
message alone, without a traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback too.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's data, weights or configuration, with what to do about it."""


class MissingDataError(UserError, FileNotFoundError):
    """A data set, a prepared folder or a weights file is not where the configuration says."""


class SettingsMismatchError(UserError, ValueError):
    """Resuming an output folder with settings other than the ones that produced it."""
