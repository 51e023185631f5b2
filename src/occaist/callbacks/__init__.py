"""Lightning callbacks: NaN guards, plain checkpoints, image panels for W&B / TensorBoard."""
