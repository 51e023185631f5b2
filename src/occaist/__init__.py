"""occaist: car keypoints, shape and pose from synthetic data (Occlusion-Net, AIST, DPC)."""

__version__ = "0.1.0"
