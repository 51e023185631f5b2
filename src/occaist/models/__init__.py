"""LightningModules of the three systems."""

from occaist._lazy import lazy_getattr

__all__ = ["AISTCycleGAN", "OcclusionNet", "PointCloudPoseNet", "PoseRegressor"]
__getattr__ = lazy_getattr(
    __name__,
    {
        "OcclusionNet": "occaist.models.occlusion_net.module",
        "AISTCycleGAN": "occaist.models.aist.module",
        "PointCloudPoseNet": "occaist.models.dpc.module",
        "PoseRegressor": "occaist.models.pose_regression.module",
    },
)
