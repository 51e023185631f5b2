"""Lazy attribute loading for the package's public names.

Importing ``occaist`` must stay cheap (no torch, no Lightning) so that ``python -m occaist.synth``
and ``train.py --help`` start quickly; each public name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def lazy_getattr(package: str, names: dict[str, str]):
    """Return a module-level ``__getattr__`` resolving ``names`` (public name -> module path)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__
