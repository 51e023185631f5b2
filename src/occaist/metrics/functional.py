"""Functional metrics (plain tensor functions), re-exported from their topic modules."""

from occaist._lazy import lazy_getattr

__all__ = ["chamfer_distance", "mask_xor", "pck", "quaternion_angle_deg"]
__getattr__ = lazy_getattr(
    __name__,
    {
        "chamfer_distance": "occaist.metrics.point_cloud",
        "quaternion_angle_deg": "occaist.metrics.pose",
        "pck": "occaist.metrics.pck",
        "mask_xor": "occaist.metrics.mask",
    },
)
