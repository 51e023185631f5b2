"""The DPC point cloud renderer against exact geometric cases, brute force and gradcheck."""

from __future__ import annotations

import math

import pytest
import torch

from occaist.geometry.camera import (
    DPC_CAMERA_DISTANCE,
    DPC_FOCAL_LENGTH,
    dpc_project,
    dpc_to_pixels,
)
from occaist.geometry.point_renderer import (
    blur_voxels,
    drc_probabilities,
    gaussian_kernel_1d,
    render_point_cloud,
    splat_points,
)
from occaist.geometry.quaternion import (
    quaternion_from_axis_angle,
    quaternion_normalize,
    quaternion_rotate,
)

IDENTITY = torch.tensor([[1.0, 0.0, 0.0, 0.0]])


def _random_cloud(batch: int, n: int, seed: int, extent: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n, 3, generator=g) - 0.5) * extent


def _random_quaternions(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return quaternion_normalize(torch.randn(batch, 4, generator=g))


def test_gradcheck_points_pose_and_scale_float64() -> None:
    points = _random_cloud(2, 6, seed=1, extent=0.5).double().requires_grad_(True)
    quats = _random_quaternions(2, seed=2).double().requires_grad_(True)
    scale = torch.tensor([0.7, 0.9], dtype=torch.float64, requires_grad=True)

    def fn(p, q, s):
        out = render_point_cloud(p, q, vox_size=6, sigma=1.0, kernel_size=3, scale=s)
        return out["silhouette"], out["depth"]

    assert torch.autograd.gradcheck(fn, (points, quats, scale), eps=1e-6, atol=1e-5)


def test_gradcheck_colour_path_float64() -> None:
    points = _random_cloud(1, 5, seed=3, extent=0.5).double().requires_grad_(True)
    rgb = torch.rand(1, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    rgb.requires_grad_(True)
    quats = _random_quaternions(1, seed=5).double()

    def fn(p, c):
        return render_point_cloud(p, quats, vox_size=5, sigma=0.8, kernel_size=3, rgb=c)["rgb"]

    assert torch.autograd.gradcheck(fn, (points, rgb), eps=1e-6, atol=1e-5)


def test_dense_sphere_renders_as_the_predicted_disc() -> None:
    # about one point per voxel inside the ball: interior cells saturate, border cells do not
    radius, grid, n = 0.3, 64, 12000
    g = torch.Generator().manual_seed(0)
    ball = torch.randn(n, 3, generator=g)
    ball = ball / ball.norm(dim=-1, keepdim=True)
    ball = ball * radius * torch.rand(n, 1, generator=g) ** (1 / 3)
    out = render_point_cloud(ball[None], IDENTITY, vox_size=grid, sigma=0.0, return_depth=False)
    rendered = out["silhouette"][0] > 0.5
    # The tangent cone of a sphere at distance d: image radius f·r/sqrt(d² − r²), in grid steps.
    d, f = DPC_CAMERA_DISTANCE, DPC_FOCAL_LENGTH
    r_px = f * radius / math.sqrt(d**2 - radius**2) * (grid - 1)
    centre = (grid - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    disc = (rows - centre) ** 2 + (cols - centre) ** 2 <= r_px**2
    iou = (rendered & disc).sum() / (rendered | disc).sum()
    assert iou >= 0.95, f"IoU {iou:.3f}"


def test_rotate_then_render_equals_render_with_q() -> None:
    points = _random_cloud(3, 500, seed=6)
    quats = _random_quaternions(3, seed=7)
    with_q = render_point_cloud(points, quats, vox_size=24, sigma=1.5, kernel_size=7)
    rotated = quaternion_rotate(points, quats)
    with_identity = render_point_cloud(
        rotated, IDENTITY.expand(3, 4), vox_size=24, sigma=1.5, kernel_size=7
    )
    for key in ("silhouette", "depth"):
        torch.testing.assert_close(with_q[key], with_identity[key], atol=1e-5, rtol=1e-5)


def test_batch_equals_per_item() -> None:
    points = _random_cloud(4, 300, seed=8)
    quats = _random_quaternions(4, seed=9)
    rgb = torch.rand(4, 300, 3, generator=torch.Generator().manual_seed(10))
    scale = torch.tensor([0.5, 1.0, 0.8, 0.3])
    kw = dict(vox_size=16, sigma=1.0, kernel_size=5)
    batch = render_point_cloud(points, quats, scale=scale, rgb=rgb, **kw)
    chunked = render_point_cloud(points, quats, scale=scale, rgb=rgb, chunk_size=3, **kw)
    for key in ("silhouette", "depth", "rgb"):
        torch.testing.assert_close(chunked[key], batch[key])
    for i in range(4):
        item = render_point_cloud(
            points[i : i + 1], quats[i : i + 1], scale=scale[i : i + 1], rgb=rgb[i : i + 1], **kw
        )
        for key in ("silhouette", "depth", "rgb"):
            torch.testing.assert_close(batch[key][i : i + 1], item[key], atol=1e-6, rtol=1e-5)


def test_image_orientation_matches_the_camera_pixel_convention() -> None:
    grid = 33
    points = torch.tensor([[[0.0, 0.3, 0.0], [0.1, -0.2, 0.25], [-0.1, 0.1, -0.3]]])
    quat = quaternion_from_axis_angle(torch.tensor([0.0, 1.0, 0.0]), torch.tensor(0.4))[None]
    for i in range(points.shape[1]):
        p = points[:, i : i + 1]
        sil = render_point_cloud(p, quat, vox_size=grid, sigma=0.0)["silhouette"][0]
        row, col = divmod(int(sil.argmax()), grid)
        _, v, u = dpc_project(p, quat)[0, 0]
        # Cell centres span [-0.5, 0.5] inclusive (upstream): the camera's pixel coordinates of
        # the point, rescaled by (G - 1)/G, give its nearest cell.
        r_px, c_px = dpc_to_pixels(v, u, grid - 1, grid - 1)
        assert abs(row - float(r_px)) <= 0.5 + 1e-6
        assert abs(col - float(c_px)) <= 0.5 + 1e-6


def test_splat_is_trilinear_and_masks_out_of_range() -> None:
    grid = 5
    coords = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.6, 0.0, 0.0], [0.1, -0.1, 0.2]]])
    occ, _ = splat_points(coords, grid)
    assert occ.sum() == pytest.approx(3.0, abs=1e-6)  # the point at 0.6 is dropped
    assert occ[0, 2, 2, 2] >= 1.0  # the centre point on a cell centre
    assert occ[0, 4, 0, 4] == pytest.approx(1.0)  # the (0.5, 0.5, 0.5) corner: top row, right
    single, _ = splat_points(coords[:, 3:], grid)
    g = (coords[0, 3] + 0.5) * (grid - 1)
    g[1] = (0.5 - coords[0, 3, 1]) * (grid - 1)  # rows run from v = +0.5 downwards
    base, r = g.floor().long(), g - g.floor()
    for corner in range(8):
        bits = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1]
        weight = math.prod(float(r[a] if bit else 1 - r[a]) for a, bit in enumerate(bits))
        cell = single[0, base[0] + bits[0], base[1] + bits[1], base[2] + bits[2]]
        assert float(cell) == pytest.approx(weight, abs=1e-6)
    assert single.sum() == pytest.approx(1.0, abs=1e-6)


def test_matmul_blur_equals_conv3d() -> None:
    vox = torch.rand(2, 3, 12, 12, 12, generator=torch.Generator().manual_seed(11))
    kernel = gaussian_kernel_1d(1.7, 9)
    torch.testing.assert_close(
        blur_voxels(vox, kernel, "matmul"), blur_voxels(vox, kernel, "conv3d"), atol=1e-6, rtol=0
    )


def test_drc_probabilities_match_brute_force() -> None:
    occ = torch.rand(2, 6, 3, 4, generator=torch.Generator().manual_seed(12)).double()
    p, escape = drc_probabilities(occ)
    o = occ.clamp(1e-5, 1 - 1e-5)
    for d in range(6):
        expected = o[:, d] * torch.prod(1 - o[:, :d], dim=1)
        torch.testing.assert_close(p[:, d], expected)
    torch.testing.assert_close(escape, torch.prod(1 - o, dim=1))
    torch.testing.assert_close(p.sum(1) + escape, torch.ones_like(escape))


def test_depth_of_an_opaque_wall_and_background() -> None:
    grid = 16
    ys, zs = torch.meshgrid(
        torch.linspace(-0.2, 0.2, 60), torch.linspace(-0.2, 0.2, 60), indexing="ij"
    )
    wall = torch.stack((torch.zeros_like(ys), ys, zs), -1).reshape(1, -1, 3)
    out = render_point_cloud(wall, IDENTITY, vox_size=grid, sigma=0.0, scale=100.0)
    centre = grid // 2
    assert out["silhouette"][0, centre, centre] > 0.999
    # the wall at δ = 0 fills slice (G - 1)/2 of the grid, at depth index / G - 0.5 + d
    slices = torch.tensor([7.0, 8.0])
    assert out["depth"][0, centre, centre] == pytest.approx(
        float(slices.mean() / grid - 0.5 + DPC_CAMERA_DISTANCE), abs=0.05
    )
    assert out["depth"][0, 0, 0] == pytest.approx(10.0, abs=1e-2)  # ε-clamped empty cells


def test_max_projection_is_the_max_over_depth() -> None:
    points = _random_cloud(2, 200, seed=13)
    quats = _random_quaternions(2, seed=14)
    kw = dict(vox_size=12, sigma=1.0, kernel_size=5)
    sil = render_point_cloud(points, quats, projection="max", **kw)["silhouette"]
    drc = render_point_cloud(points, quats, **kw)["silhouette"]
    assert sil.shape == drc.shape == (2, 12, 12)
    assert (sil <= drc + 1e-6).all()  # 1 - Π(1 - o) >= max o
    assert sil.max() > 0
