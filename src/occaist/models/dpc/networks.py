"""DPC networks (Insafutdinov & Dosovitskiy 2018; thesis section 5.2): encoder, shape and pose.

Pure torch, no Lightning. The architecture follows the released code (``dpc/nets/*.py``), not the
thesis where the two differ:

* encoder: conv 5x5 stride 2 (16 ch), then pairs [conv 3x3 stride 2, conv 3x3 stride 1] with
  32, 64, 128, 256 channels, LeakyReLU(0.2), biases, no normalisation, TF ``SAME`` padding
  (asymmetric for stride 2, switch ``tf_same_padding``); flatten, FC 1024, FC 1024 (shared);
* shape branch: FC 1024 ("ids"), FC to ``N*3`` (N = 8000 by default), ``tanh(.)/2`` so points lie
  in (-0.5, 0.5)^3; a learned occupancy scale ``s = sigmoid(FC(ids))``;
* pose branch: FC 1024 with **ReLU** (slim's default; the thesis says LeakyReLU), then K candidate
  heads and one student head, each FC 32 - FC 32 - FC 4 (the code has three layers; the thesis
  says two). Quaternions are (w, x, y, z) and unnormalised; the renderer normalises them.

About 33.3 M parameters at N = 8000, K = 4 (24.6 M of them in the point layer).

**Candidate initialisation** (``pose_init``). ``"upstream"``: every head is initialised like the
rest of the net (He weights, zero biases), so at the first step all K candidates are unrelated,
nearly image-independent rotations; one or two of them match most silhouettes best, win, and are
the only ones that get gradient, while the others never win again (the ensemble collapses).
Early in training, when the blur is wide, a car's front/back flip renders almost as well as the
true pose, so each view settles on whichever of the two its winner happened to start near.
``"yaw_spread"`` (ours, not in the paper or the code): candidate k's last layer starts with the
bias ``q_y(k·360°/K)`` (a turn about the object's up axis, the axis of the silhouette
ambiguities) and its weights scaled by ``pose_init_scale``, so the K candidates start as K
distinct yaws, each view's nearest yaw wins, and every candidate stays in use; the heads then
learn the image-dependent correction from there.

**Student** (``student_form``). ``"regress"`` (upstream): the student head regresses a quaternion
towards the winning candidate. Where the winner of similar images alternates between two modes
(a car and its front/back flip), a regression lands between them. ``"select"`` (ours, not in the
paper or the code): the student head outputs K logits, is trained with cross-entropy to name the
winning candidate, and the pose is that candidate's quaternion; its input is the detached pose
feature, so it reads the encoder without reshaping it.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

#: TF1 ``variance_scaling_initializer`` (factor 2, fan-in, truncated normal) scales its
#: standard deviation by this constant to make up for the truncation at two sigma.
_TRUNCATED_NORMAL_CORRECTION = 1.3


def _he_truncated_(weight: torch.Tensor, fan_in: int, gain: float) -> None:
    std = math.sqrt(_TRUNCATED_NORMAL_CORRECTION * gain / fan_in)
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class SameConv2d(nn.Conv2d):
    """A conv with TF ``SAME`` padding: output size ``ceil(in / stride)``, extra pad bottom/right.

    PyTorch's symmetric ``padding=k//2`` shifts stride-2 outputs by half a pixel relative to TF;
    with ``tf_same=False`` it is used instead (slightly faster, not bit-compatible).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, tf_same: bool) -> None:
        super().__init__(in_ch, out_ch, kernel, stride, padding=0 if tf_same else kernel // 2)
        self.tf_same = tf_same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                out = math.ceil(size / self.stride[0])
                total = max((out - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


#: Candidate initialisations of :class:`DPCNet` (see the module docstring).
POSE_INITS = ("upstream", "yaw_spread")
#: Student forms of :class:`DPCNet` (see the module docstring).
STUDENT_FORMS = ("regress", "select")


def yaw_spread_quaternions(count: int) -> torch.Tensor:
    """``(count, 4)`` quaternions (w, x, y, z): turns by ``k·360°/count`` about the y (up) axis."""
    half = torch.arange(count, dtype=torch.float64) * (math.pi / count)
    zeros = torch.zeros_like(half)
    return torch.stack((half.cos(), zeros, half.sin(), zeros), dim=-1).float()


def _mlp_head(in_dim: int, hidden: list[int], out_dim: int, slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.LeakyReLU(slope)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class DPCNet(nn.Module):
    """Encoder + shape decoder + pose ensemble of the unsupervised DPC model.

    Args:
        image_size: input side H = W (128 in the paper); must be divisible by ``2**len(channels)``.
        num_points: N, points of the predicted cloud (8000).
        num_candidates: K, pose candidates of the ensemble (4); 1 disables the ensemble.
        encoder_channels: output channels of the first 5x5 conv and of each 3x3 pair.
        fc_dim: width of the shared FC layers, the "ids" layer and the pose FC (1024).
        pose_hidden: hidden widths of every candidate / student head (``[32, 32]``, code form).
        predict_pose: build the pose branch (false for the camera-supervised mode).
        learn_occupancy_scaling: predict the occupancy scale s (``pc_learn_occupancy_scaling``).
        predict_rgb: also predict a colour per point (sigmoid), from the "ids" layer.
        leaky_slope: LeakyReLU negative slope (0.2).
        point_init_std: std of the truncated-normal init of the point (and scale) layer (0.025).
        tf_same_padding: TF ``SAME`` padding for strided convs (see :class:`SameConv2d`).
        pose_init: ``"upstream"`` or ``"yaw_spread"``, the initialisation of the candidate heads
            (see the module docstring).
        pose_init_scale: with ``yaw_spread``, the factor on the candidates' last-layer weights.
        student_form: ``"regress"`` (upstream) or ``"select"`` (ours; see the module docstring).
    """

    def __init__(
        self,
        image_size: int = 128,
        num_points: int = 8000,
        num_candidates: int = 4,
        encoder_channels: list[int] | None = None,
        fc_dim: int = 1024,
        pose_hidden: list[int] | None = None,
        predict_pose: bool = True,
        learn_occupancy_scaling: bool = True,
        predict_rgb: bool = False,
        leaky_slope: float = 0.2,
        point_init_std: float = 0.025,
        tf_same_padding: bool = True,
        pose_init: str = "upstream",
        pose_init_scale: float = 0.1,
        student_form: str = "regress",
    ) -> None:
        super().__init__()
        if pose_init not in POSE_INITS:
            raise ValueError(f"pose_init must be one of {POSE_INITS}, got {pose_init!r}")
        if student_form not in STUDENT_FORMS:
            raise ValueError(f"student_form must be one of {STUDENT_FORMS}, got {student_form!r}")
        self.student_form = student_form
        self.pose_init = pose_init
        self.pose_init_scale = pose_init_scale
        channels = list(encoder_channels or [16, 32, 64, 128, 256])
        pose_hidden = list(pose_hidden or [32, 32])
        if image_size % (2 ** len(channels)):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**{len(channels)} "
                f"(one stride-2 conv per entry of encoder_channels={channels})"
            )
        self.image_size = image_size
        self.num_points = num_points
        self.num_candidates = num_candidates
        self.predict_pose = predict_pose
        self.learn_occupancy_scaling = learn_occupancy_scaling
        self.predict_rgb = predict_rgb
        self.slope = leaky_slope

        convs: list[nn.Module] = [SameConv2d(3, channels[0], 5, 2, tf_same_padding)]
        for c_in, c_out in itertools.pairwise(channels):
            convs += [
                SameConv2d(c_in, c_out, 3, 2, tf_same_padding),
                SameConv2d(c_out, c_out, 3, 1, tf_same_padding),
            ]
        self.convs = nn.ModuleList(convs)
        side = image_size // 2 ** len(channels)
        self.fc1 = nn.Linear(channels[-1] * side * side, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.fc_ids = nn.Linear(fc_dim, fc_dim)
        self.point_layer = nn.Linear(fc_dim, num_points * 3)
        self.scale_layer = nn.Linear(fc_dim, 1) if learn_occupancy_scaling else None
        self.rgb_layer = nn.Linear(fc_dim, num_points * 3) if predict_rgb else None
        if predict_pose:
            self.fc_pose = nn.Linear(fc_dim, fc_dim)
            self.candidates = nn.ModuleList(
                _mlp_head(fc_dim, pose_hidden, 4, leaky_slope) for _ in range(num_candidates)
            )
            student_out = num_candidates if student_form == "select" else 4
            self.student = _mlp_head(fc_dim, pose_hidden, student_out, leaky_slope)
        self.reset_parameters(point_init_std)

    def reset_parameters(self, point_init_std: float) -> None:
        """He-normal truncated weights (LeakyReLU gain), zero biases; small point/scale layers."""
        leaky_gain = 2.0
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                _he_truncated_(module.weight, fan_in, leaky_gain)
                nn.init.zeros_(module.bias)
        for layer in (self.point_layer, self.scale_layer, self.rgb_layer):
            if layer is not None:
                std = point_init_std
                nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        if self.predict_pose and self.pose_init == "yaw_spread":
            yaws = yaw_spread_quaternions(self.num_candidates)
            with torch.no_grad():
                for head, q in zip(self.candidates, yaws, strict=True):
                    last = head[-1]
                    last.weight.mul_(self.pose_init_scale)
                    last.bias.copy_(q)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] (mapped to [-1, 1]) -> shared features (B, fc_dim)."""
        x = images * 2.0 - 1.0
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
        x = F.leaky_relu(self.fc1(x.flatten(1)), self.slope)
        return F.leaky_relu(self.fc2(x), self.slope)

    def decode_shape(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features (B, F) -> ``points`` (B, N, 3) in (-0.5, 0.5), ``scale`` (B,), [``rgb``]."""
        ids = F.leaky_relu(self.fc_ids(features), self.slope)
        points = torch.tanh(self.point_layer(ids).view(-1, self.num_points, 3)) / 2.0
        out = {"points": points}
        if self.scale_layer is not None:
            out["scale"] = torch.sigmoid(self.scale_layer(ids)).squeeze(-1)
        else:
            out["scale"] = points.new_ones(points.shape[0])
        if self.rgb_layer is not None:
            out["rgb"] = torch.sigmoid(self.rgb_layer(ids).view(-1, self.num_points, 3))
        return out

    def decode_pose(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features (B, F) -> ``candidates`` (B, K, 4) and ``student`` (B, 4), (w, x, y, z); with
        ``student_form="select"`` also ``student_logits`` (B, K), and ``student`` is the
        candidate with the largest logit."""
        if not self.predict_pose:
            raise RuntimeError("this DPCNet was built with predict_pose=False")
        hidden = F.relu(self.fc_pose(features))
        candidates = torch.stack([head(hidden) for head in self.candidates], dim=1)
        if self.student_form == "regress":
            return {"candidates": candidates, "student": self.student(hidden)}
        logits = self.student(hidden.detach())
        chosen = logits.argmax(dim=1)[:, None, None].expand(-1, 1, 4)
        student = candidates.gather(1, chosen).squeeze(1)
        return {"candidates": candidates, "student": student, "student_logits": logits}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Shape and (if built) pose of every image (B, 3, H, W); see the decode methods."""
        features = self.encode(images)
        out = self.decode_shape(features)
        if self.predict_pose:
            out.update(self.decode_pose(features))
        return out
