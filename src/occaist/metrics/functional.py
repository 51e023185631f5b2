"""Functional metrics (plain tensor functions), re-exported from their topic modules."""

from occaist.metrics.mask import mask_xor
from occaist.metrics.pck import pck
from occaist.metrics.point_cloud import chamfer_distance
from occaist.metrics.pose import quaternion_angle_deg

__all__ = ["chamfer_distance", "mask_xor", "pck", "quaternion_angle_deg"]
