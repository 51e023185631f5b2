"""Occlusion-Net (Reddy et al., CVPR 2019): Keypoint R-CNN + 2D/3D keypoint graph networks."""
