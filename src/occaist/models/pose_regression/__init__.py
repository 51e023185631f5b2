"""Pose regression trained on synthetic data (seed 004): networks, losses, LightningModule."""
