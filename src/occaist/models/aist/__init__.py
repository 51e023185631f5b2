"""AIST: CycleGAN with alpha (mask) and ResNet-18 feature-distance losses."""
