"""Functional metrics (plain tensor functions), re-exported from their topic modules."""

from occaist.metrics.add import add_error, adds_error
from occaist.metrics.mask import mask_xor
from occaist.metrics.pck import pck
from occaist.metrics.point_cloud import chamfer_distance
from occaist.metrics.pose import quaternion_angle_deg

__all__ = [
    "add_error",
    "adds_error",
    "chamfer_distance",
    "mask_xor",
    "pck",
    "quaternion_angle_deg",
]
