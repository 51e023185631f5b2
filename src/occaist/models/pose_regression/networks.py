"""The multi-task pose regression network (seed 004, "Network architecture"): one image in; the 2D
box ``b``, the location ``t`` and the rotation ``q`` of the object out.

Pure torch. A plain CNN (stride-2 stages of two 3x3 convolutions with batch norm and ReLU) whose
last feature map is flattened, not pooled, so that the object's position in the image reaches
the fully connected layers; then one shared hidden layer and three heads. Every head predicts
one set of values per object class and the set of the object in the image is selected
(class-specific regression), so that one network serves several objects.

Head outputs (per object), all read from the network's ``S x S`` input:

- ``box`` ``(B, 4)``: ``x1, y1, x2, y2`` divided by ``S`` (the seed's ``b``);
- ``centre`` ``(B, 2)``: the projection of the model origin, in units of ``S`` from the image
  centre, and ``log_depth`` ``(B,)``: its depth ``z = diameter · exp(log_depth)``. The location
  is ``t = z · K⁻¹ (u, v, 1)``, so the seed's loss ``‖t̃ − t‖`` is taken on ``t`` itself
  (deviation: the seed regresses ``t`` directly; through ``K`` the network need not guess the
  principal point, which varies between images, and depth is relative to the object's size);
- ``quaternion`` ``(B, 4)``: unit ``(w, x, y, z)``, ``R = R(q)`` rotating model points into the
  camera frame (``occaist.geometry.quaternion`` convention).
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PoseRegressionNet"]

_OUTPUTS = {"box": 4, "centre": 2, "log_depth": 1, "quaternion": 4}


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions (the first with stride 2), each with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PoseRegressionNet(nn.Module):
    """CNN encoder, a shared hidden layer and class-specific box / location / rotation heads.

    Args:
        num_objects: object classes served (heads are selected by ``obj_index``).
        image_size: input side ``S`` (divisible by ``2 ** len(channels)``).
        channels: widths of the stride-2 stages.
        hidden: width of the shared fully connected layer.
        dropout: dropout before the heads (0 = none).
    """

    def __init__(
        self,
        num_objects: int = 3,
        image_size: int = 64,
        channels: list[int] = (32, 64, 128, 256),
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channels)}")
        self.num_objects = num_objects
        widths = [3, *channels]
        self.encoder = nn.Sequential(*(_stage(a, b) for a, b in pairwise(widths)))
        side = image_size // 2 ** len(channels)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels[-1] * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(hidden, size * num_objects) for name, size in _OUTPUTS.items()}
        )
        with torch.no_grad():  # start at the identity rotation, not at a random one
            self.heads["quaternion"].weight.mul_(0.1)
            self.heads["quaternion"].bias.view(num_objects, 4).copy_(
                torch.tensor([1.0, 0.0, 0.0, 0.0])
            )

    def forward(self, image: Tensor, obj_index: Tensor) -> dict[str, Tensor]:
        """``image`` (B, 3, S, S) in [0, 1], ``obj_index`` (B,) -> the heads of each object."""
        features = self.fc(self.encoder(image * 2.0 - 1.0))  # (B, hidden)
        out = {}
        rows = torch.arange(len(image), device=image.device)
        for name, size in _OUTPUTS.items():
            values = self.heads[name](features).view(len(image), self.num_objects, size)
            out[name] = values[rows, obj_index]  # (B, size)
        out["log_depth"] = out["log_depth"][:, 0]
        out["quaternion"] = F.normalize(out["quaternion"], dim=-1)
        return out
