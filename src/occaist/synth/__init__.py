"""The synthetic car world, written in the real datasets' on-disk formats (DESIGN section 5).

``generate_world(root, preset, seed)`` or ``python -m occaist.synth --root data --preset demo``.
See ``docs/synthetic_world.md`` for the layout and conventions.
"""

from occaist._lazy import lazy_getattr

__all__ = ["generate_world"]
__getattr__ = lazy_getattr(__name__, {"generate_world": "occaist.synth.world"})
