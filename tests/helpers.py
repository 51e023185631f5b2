"""Helpers for tests: compose configs in-process, as users' runs do, without a subprocess."""

from occaist.utils.compose import composed

__all__ = ["composed"]
