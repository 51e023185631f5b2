"""torchmetrics Metric classes; their functional forms live in ``occaist.metrics.functional``."""

from occaist._lazy import lazy_getattr

__all__ = ["ADD", "ADDS", "PCK", "ChamferDistance", "MaskXOR", "PoseAccuracy"]
__getattr__ = lazy_getattr(
    __name__,
    {
        "PCK": "occaist.metrics.pck",
        "ChamferDistance": "occaist.metrics.point_cloud",
        "PoseAccuracy": "occaist.metrics.pose",
        "MaskXOR": "occaist.metrics.mask",
        "ADD": "occaist.metrics.add",
        "ADDS": "occaist.metrics.add",
    },
)
