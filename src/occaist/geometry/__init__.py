"""Pure-torch geometry: quaternions, cameras, projection, trifocal tensors, point renderer."""

from occaist._lazy import lazy_getattr

__all__ = ["render_point_cloud", "trifocal_tensor"]
__getattr__ = lazy_getattr(
    __name__,
    {
        "render_point_cloud": "occaist.geometry.point_renderer",
        "trifocal_tensor": "occaist.geometry.multiview",
    },
)
