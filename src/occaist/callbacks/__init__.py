"""Lightning callbacks: NaN guards and image panels for W&B / TensorBoard."""
