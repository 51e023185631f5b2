"""maskrcnn_benchmark's optimisation set-up used by Occlusion-Net (the paper's solver): bias
parameter group and linear warm-up."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["param_groups", "warmup"]


def param_groups(
    module: nn.Module, lr: float, bias_lr_factor: float, bias_weight_decay: float
) -> list[dict[str, Any]]:
    """maskrcnn_benchmark's groups: biases at ``bias_lr_factor`` x LR without weight decay."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if not n.endswith("bias")]},
        {
            "params": [p for n, p in named if n.endswith("bias")],
            "lr": lr * bias_lr_factor,
            "weight_decay": bias_weight_decay,
        },
    ]


def warmup(optimizer: torch.optim.Optimizer, iters: int, factor: float) -> dict[str, Any]:
    """Linear warm-up from ``factor`` to 1 over ``iters`` steps, then constant (the paper's
    schedule never reaches its decay steps)."""

    def scale(step: int) -> float:
        return 1.0 if step >= iters else factor + (1.0 - factor) * step / max(iters, 1)

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
    return {"scheduler": sched, "interval": "step"}
