"""The pose regression losses against their formulas; the projection loss's defining properties."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occaist.geometry.quaternion import quaternion_from_axis_angle, quaternion_to_rotation_matrix
from occaist.models.pose_regression.losses import (
    box_loss,
    decode_translation,
    projection_loss,
    rotation_loss,
    soft_silhouette,
    translation_loss,
)

SIZE = 64


def _batch(tiny_world: Path, split: str = "train_plain", n: int = 6) -> dict:
    from occaist.data.bop import BOPDataset

    ds = BOPDataset(tiny_world / "bop" / "occaist", split, image_size=SIZE, num_points=500)
    items = [ds[i] for i in range(0, len(ds), max(1, len(ds) // n))][:n]
    return torch.utils.data.default_collate(items)


def test_rotation_loss_is_the_mean_point_distance_over_the_diameter() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    R_pred, R_gt = quaternion_to_rotation_matrix(q), torch.eye(3).expand(3, 3, 3)
    pts = torch.randn(3, 20, 3, generator=gen)
    d = torch.tensor([1.0, 2.0, 4.0])
    ref = (
        sum(
            sum((R_gt[b] @ x - R_pred[b] @ x).norm() for x in pts[b]) / 20 / d[b] for b in range(3)
        )
        / 3
    )
    assert rotation_loss(R_pred, R_gt, pts, d).item() == pytest.approx(ref.item(), rel=1e-5)
    assert rotation_loss(R_gt, R_gt, pts, d).item() == 0.0


def test_box_and_translation_losses_are_norms() -> None:
    a, b = torch.tensor([[0.0, 0, 3, 4]]), torch.zeros(1, 4)
    assert box_loss(a, b).item() == pytest.approx(5.0)
    t = torch.tensor([[3.0, 4.0, 0.0]])
    assert translation_loss(t, torch.zeros(1, 3), torch.tensor([10.0])).item() == pytest.approx(
        0.5
    )


def test_decode_translation_inverts_the_projection(tiny_world: Path) -> None:
    batch = _batch(tiny_world)
    t, K, d = batch["t"].double(), batch["K"].double(), batch["diameter"].double()
    uv = (K @ t[..., None])[..., 0]
    uv = uv[:, :2] / uv[:, 2:]
    centre = (uv + 0.5) / SIZE - 0.5
    decoded = decode_translation(centre, torch.log(t[:, 2] / d), K, d, SIZE)
    assert torch.allclose(decoded, t, rtol=1e-9, atol=1e-9)


def test_splatted_silhouette_covers_the_true_mask(tiny_world: Path) -> None:
    """The splat and the data agree on the camera conventions (K, scaling, pixel centres)."""
    b = _batch(tiny_world)
    sil = soft_silhouette(b["points"], b["R"], b["t"], b["K"], SIZE, SIZE, 1.0) > 0.5
    mask = b["mask"][:, 0] > 0.5
    iou = (sil & mask).flatten(1).sum(-1) / (sil | mask).flatten(1).sum(-1)
    assert iou.min().item() > 0.6, iou
    shifted = soft_silhouette(
        b["points"], b["R"], b["t"] + torch.tensor([40.0, 0, 0]), b["K"], SIZE, SIZE, 1.0
    )
    worse = ((shifted > 0.5) & mask).flatten(1).sum(-1) / ((shifted > 0.5) | mask).flatten(1).sum(
        -1
    )
    assert torch.all(worse < iou)


def test_projection_loss_zero_at_truth_positive_elsewhere_with_gradient(tiny_world: Path) -> None:
    b = _batch(tiny_world)
    args = (b["K"], SIZE)
    assert projection_loss(b["points"], b["R"], b["t"], b["R"], b["t"], *args).item() == 0.0
    axis = torch.tensor([[0.3, 0.8, 0.5]]).expand(len(b["R"]), 3)
    q = quaternion_from_axis_angle(
        axis / axis.norm(dim=-1, keepdim=True), torch.full((len(b["R"]),), 0.4)
    )
    q.requires_grad_(True)
    dt = torch.tensor([5.0, -3.0, 20.0], requires_grad=True)
    R_pred = quaternion_to_rotation_matrix(q) @ b["R"]
    loss = projection_loss(b["points"], R_pred, b["t"] + dt, b["R"], b["t"], *args)
    assert 0.05 < loss.item() < 1.0
    loss.backward()
    assert q.grad.abs().sum() > 0 and dt.grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient lowers the loss
        lower = projection_loss(
            b["points"], quaternion_to_rotation_matrix(q - 1e-2 * q.grad) @ b["R"],
            b["t"] + dt - 0.5 * dt.grad / dt.grad.norm(), b["R"], b["t"], *args,
        )  # fmt: skip
    assert lower < loss


def test_projection_loss_ignores_the_symmetric_objects_spin(tiny_world: Path) -> None:
    """A turn about the cone's axis leaves the silhouette, so the loss is ~0 while L_r is not."""
    b = _batch(tiny_world, n=12)
    sel = b["obj_id"] == 3
    R, t, K, pts, d = b["R"][sel], b["t"][sel], b["K"][sel], b["points"][sel], b["diameter"][sel]
    spin = quaternion_to_rotation_matrix(
        quaternion_from_axis_angle(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([2.0]))
    )
    spun = R @ spin
    spin_loss = projection_loss(pts, spun, t, R, t, K, SIZE, sigma=1.0).item()
    assert spin_loss < 0.05  # not 0: the sampled points themselves are not symmetric
    assert rotation_loss(spun, R, pts, d).item() > 0.1
    tilted = R @ quaternion_to_rotation_matrix(
        quaternion_from_axis_angle(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([2.0]))
    )
    assert projection_loss(pts, tilted, t, R, t, K, SIZE, sigma=1.0).item() > 10 * spin_loss
