"""The point renderer on clouds whose images are known by hand.

Points on the optical axis (identity pose) land in the centre pixel at depth coordinate ``δ = x``;
with ``G = 9`` a point at ``x = k/8 − 1/2`` falls exactly on depth slice ``k`` (occupancy 1 there),
and one at ``x = (k + 1/2)/8 − 1/2`` splits 1/2 and 1/2 between slices ``k`` and ``k + 1``.

Planted bugs these tests kill: the max projection's ``amax`` over depth replaced by a mean or a
sum, the occupancy scale ignored, the DRC silhouette or depth formula changed (``d/(D − 1)``, the
escape depth), the blur kernel's centre or width wrong.
"""

from __future__ import annotations

import math

import pytest
import torch

from occaist.geometry.point_renderer import render_point_cloud

IDENTITY = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
G = 9
CENTRE = 4


def _on_axis(*slices: float) -> torch.Tensor:
    """Points on the optical axis at the given (fractional) depth slices of a G = 9 grid."""
    return torch.tensor([[[s / (G - 1) - 0.5, 0.0, 0.0] for s in slices]])


def _image_with(value: float, where: tuple[int, int] = (CENTRE, CENTRE)) -> torch.Tensor:
    image = torch.zeros(G, G)
    image[where] = value
    return image


def test_max_projection_of_two_full_slices_on_one_ray_is_one() -> None:
    out = render_point_cloud(_on_axis(2, 6), IDENTITY, vox_size=G, sigma=0, projection="max")
    assert set(out) == {"silhouette"}
    torch.testing.assert_close(out["silhouette"][0], _image_with(1.0))


def test_max_projection_of_a_split_point_is_the_larger_share() -> None:
    # 1/2 on slice 2 and 1/2 on slice 3: max 1/2 (a mean over 9 slices gives 1/9, a sum 1)
    out = render_point_cloud(_on_axis(2.5), IDENTITY, vox_size=G, sigma=0, projection="max")
    torch.testing.assert_close(out["silhouette"][0], _image_with(0.5))


def test_max_projection_applies_the_occupancy_scale_after_clipping() -> None:
    # two points on one slice sum to 2, clipped to 1, then scaled by 0.4
    points = _on_axis(4, 4)
    out = render_point_cloud(points, IDENTITY, vox_size=G, sigma=0, projection="max", scale=0.4)
    torch.testing.assert_close(out["silhouette"][0], _image_with(0.4))
    batch = render_point_cloud(
        points.expand(2, -1, -1),
        IDENTITY.expand(2, -1),
        vox_size=G,
        sigma=0,
        projection="max",
        scale=torch.tensor([0.25, 0.75]),
    )["silhouette"]
    torch.testing.assert_close(batch[:, CENTRE, CENTRE], torch.tensor([0.25, 0.75]))


def test_drc_silhouette_and_depth_of_two_half_slices() -> None:
    eps = 1e-5
    out = render_point_cloud(_on_axis(2.5), IDENTITY, vox_size=G, sigma=0, eps=eps)
    # o = 1/2 on slices 2 and 3, eps elsewhere
    free = [1 - eps] * G
    occ = [eps] * G
    occ[2] = occ[3] = 0.5
    free[2] = free[3] = 0.5
    probs, before = [], 1.0
    for d in range(G):
        probs.append(occ[d] * before)
        before *= free[d]
    escape = before
    depth = sum(p * (d / G - 0.5 + 2.0) for d, p in enumerate(probs)) + escape * 10.0
    assert out["silhouette"][0, CENTRE, CENTRE].item() == pytest.approx(1 - escape, abs=1e-6)
    assert 1 - escape == pytest.approx(0.75, abs=1e-3)
    assert out["depth"][0, CENTRE, CENTRE].item() == pytest.approx(depth, abs=1e-5)
    # by hand: p = 1/2 at slice 2, 1/4 at slice 3, escape 1/4 at depth 10
    assert depth == pytest.approx(0.5 * (2 / 9 + 1.5) + 0.25 * (3 / 9 + 1.5) + 0.25 * 10, abs=1e-3)
    # an empty pixel: silhouette ~ 0, depth ~ the escape depth 10
    assert out["silhouette"][0, 0, 0].item() == pytest.approx(0.0, abs=1e-4)
    assert out["depth"][0, 0, 0].item() == pytest.approx(10.0, abs=1e-3)


def test_blurred_single_voxel_max_projection_is_the_kernel_cubed() -> None:
    # sigma 1, kernel size 3: k = (e^-1/2, 1, e^-1/2) / (1 + 2 e^-1/2)
    side = math.exp(-0.5)
    centre, edge = 1 / (1 + 2 * side), side / (1 + 2 * side)
    out = render_point_cloud(
        _on_axis(4), IDENTITY, vox_size=G, sigma=1.0, kernel_size=3, projection="max"
    )["silhouette"][0]
    expected = torch.zeros(G, G)
    for dr, wr in ((-1, edge), (0, centre), (1, edge)):
        for dc, wc in ((-1, edge), (0, centre), (1, edge)):
            expected[CENTRE + dr, CENTRE + dc] = centre * wr * wc  # max over depth: the centre
    torch.testing.assert_close(out, expected)


def test_points_off_axis_land_where_the_pinhole_puts_them() -> None:
    # y = +0.25 at depth x = 0: v = f·y/d = 1.875·0.25/2 = 0.234375, row (0.5 − v)·8 = 2.125
    out = render_point_cloud(
        torch.tensor([[[0.0, 0.25, 0.0]]]), IDENTITY, vox_size=G, sigma=0, projection="max"
    )["silhouette"][0]
    expected = torch.zeros(G, G)
    expected[2, CENTRE], expected[3, CENTRE] = 0.875, 0.125
    torch.testing.assert_close(out, expected)


def test_small_render_gradients_match_finite_differences() -> None:
    """torch.autograd.gradcheck on a 4³ grid with 3 points: points, pose, scale and colours.
    (The 6³ gradchecks in test_point_renderer.py cost seconds; `make mutation` runs this one.)"""
    g = torch.Generator().manual_seed(0)
    points = ((torch.rand(1, 3, 3, generator=g, dtype=torch.float64) - 0.5) * 0.5).requires_grad_()
    quats = torch.nn.functional.normalize(
        torch.randn(1, 4, generator=g, dtype=torch.float64), dim=-1
    )
    quats.requires_grad_(True)
    scale = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(1, 3, 3, generator=g, dtype=torch.float64).requires_grad_()

    def fn(p, q, s, c):
        out = render_point_cloud(p, q, vox_size=4, sigma=1.0, kernel_size=3, scale=s, rgb=c)
        return out["silhouette"], out["depth"], out["rgb"]

    assert torch.autograd.gradcheck(fn, (points, quats, scale, rgb), eps=1e-6, atol=1e-5)


def test_defaults_are_the_documented_dpc_settings() -> None:
    """Defaults against the values the docstring gives (64³ grid, σ = 1, kernel 21, DRC with
    depth, ε = 1e-5, camera 1.875 / 2.0, escape depth 10, colours neither divided nor clipped,
    colour gradients reaching the points): same images and same gradients."""
    g = torch.Generator().manual_seed(1)
    base = (torch.rand(1, 80, 3, generator=g) - 0.5) * 0.6
    rgb = torch.rand(1, 80, 3, generator=g)
    quats = torch.nn.functional.normalize(torch.randn(1, 4, generator=g), dim=-1)
    documented = dict(
        vox_size=64, sigma=1.0, kernel_size=21, projection="drc", return_depth=True,
        rgb_divide_by_occupancies=False, rgb_clip_after_conv=False,
        rgb_stop_points_gradient=False, rgb_occupancy_eps=0.01, blur="matmul", eps=1e-5,
        focal_length=1.875, camera_distance=2.0, max_depth=10.0,
    )  # fmt: skip
    outs, grads = [], []
    for kwargs in ({}, documented):
        points = base.clone().requires_grad_(True)
        out = render_point_cloud(points, quats, rgb=rgb, **kwargs)
        (out["rgb"].sum() + out["depth"].mean()).backward()
        outs.append(out)
        grads.append(points.grad)
    default, explicit = outs
    assert default["silhouette"].shape == (1, 64, 64)
    for key in ("silhouette", "depth", "rgb"):
        torch.testing.assert_close(default[key], explicit[key], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_colour_options_divide_clip_and_stop_gradient() -> None:
    """One point on a voxel centre (occupancy 1, σ = 0): dividing by occupancy + eps is the same
    as colours / (1 + eps); two coincident points sum their colours, which clipping caps at 1;
    stopping the colours' gradient keeps the images and changes the points' gradient."""
    point = _on_axis(4)  # (1, 1, 3) on the centre ray, at a voxel centre
    colour = torch.tensor([[[0.8, 0.4, 0.2]]])
    kw = dict(vox_size=G, sigma=0)
    divided = render_point_cloud(point, IDENTITY, rgb=colour, rgb_divide_by_occupancies=True, **kw)
    scaled = render_point_cloud(point, IDENTITY, rgb=colour / 1.01, **kw)
    torch.testing.assert_close(divided["rgb"], scaled["rgb"])
    other_eps = render_point_cloud(
        point, IDENTITY, rgb=colour, rgb_divide_by_occupancies=True, rgb_occupancy_eps=0.5, **kw
    )
    torch.testing.assert_close(
        other_eps["rgb"], render_point_cloud(point, IDENTITY, rgb=colour / 1.5, **kw)["rgb"]
    )
    twice = point.repeat(1, 2, 1)
    clipped = render_point_cloud(
        twice, IDENTITY, rgb=colour.repeat(1, 2, 1), rgb_clip_after_conv=True, **kw
    )
    capped = torch.tensor([[[1.0, 0.8, 0.4]]])  # 1.6 -> 1, 0.8, 0.4
    torch.testing.assert_close(
        clipped["rgb"], render_point_cloud(point, IDENTITY, rgb=capped, **kw)["rgb"]
    )
    g = torch.Generator().manual_seed(2)
    cloud = (torch.rand(1, 30, 3, generator=g) - 0.5) * 0.5
    rgb = torch.rand(1, 30, 3, generator=g)
    images, grads = [], []
    for stop in (False, True):
        points = cloud.clone().requires_grad_(True)
        out = render_point_cloud(points, IDENTITY, vox_size=G, sigma=1.0, kernel_size=3, rgb=rgb,
                                 rgb_stop_points_gradient=stop)  # fmt: skip
        out["rgb"].sum().backward()
        images.append(out["rgb"].detach())
        grads.append(points.grad)
    torch.testing.assert_close(images[0], images[1])
    assert not torch.allclose(grads[0], grads[1])


def test_render_voxels_of_one_coloured_voxel_on_a_non_cubic_grid() -> None:
    """D = 3 slices of 4 × 5 pixels, one opaque voxel at slice 1, pixel (2, 3): that ray ends
    there (probability 1 − ε after the free slice 0), every other ray escapes to the white
    background at ``max_depth``."""
    from occaist.geometry.point_renderer import render_voxels

    eps = 0.1
    occupancy = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    occupancy[0, 1, 2, 3] = 1.0
    colour = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    features = torch.zeros(1, 3, 3, 4, 5, dtype=torch.float64)
    features[0, :, 1, 2, 3] = colour
    out = render_voxels(occupancy, features=features, eps=eps, camera_distance=3.0, max_depth=7.0)
    empty = (1 - eps) ** 3  # escape through three nearly free slices
    hit = [eps, (1 - eps) * (1 - eps), (1 - eps) * eps * eps]  # p_d on the hit ray
    hit_escape = (1 - eps) * eps * (1 - eps)
    expected_sil = torch.full((4, 5), 1 - empty, dtype=torch.float64)
    expected_sil[2, 3] = 1 - hit_escape
    torch.testing.assert_close(out["silhouette"][0], expected_sil)
    slices = [d / 3 - 0.5 + 3.0 for d in range(3)]
    free_depth = sum(eps * (1 - eps) ** d * slices[d] for d in range(3)) + empty * 7.0
    expected_depth = torch.full((4, 5), free_depth, dtype=torch.float64)
    expected_depth[2, 3] = sum(p * z for p, z in zip(hit, slices, strict=True)) + hit_escape * 7.0
    torch.testing.assert_close(out["depth"][0], expected_depth)
    expected_rgb = torch.full((3, 4, 5), empty, dtype=torch.float64)
    expected_rgb[:, 2, 3] = hit[1] * colour + hit_escape
    torch.testing.assert_close(out["rgb"][0], expected_rgb)
    # without depth the silhouette is the same and colours are still composited
    no_depth = render_voxels(occupancy, features=features, eps=eps, return_depth=False)
    assert "depth" not in no_depth
    torch.testing.assert_close(no_depth["rgb"], out["rgb"])
    silhouette_only = render_voxels(occupancy, eps=eps, return_depth=False)
    assert set(silhouette_only) == {"silhouette"}
    torch.testing.assert_close(silhouette_only["silhouette"], out["silhouette"])
    default = render_voxels(torch.zeros(1, 3, 4, 5, dtype=torch.float64))
    expected_default = 1 - torch.full((1, 4, 5), (1 - 1e-5) ** 3, dtype=torch.float64)
    torch.testing.assert_close(default["silhouette"], expected_default)
    torch.testing.assert_close(
        default["depth"].max(), torch.tensor(10.0, dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_chunked_rendering_passes_every_option_on() -> None:
    g = torch.Generator().manual_seed(3)
    points = (torch.rand(3, 20, 3, generator=g) - 0.5) * 0.5
    quats = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    rgb = torch.rand(3, 20, 3, generator=g)
    options = dict(
        vox_size=8, sigma=0.7, kernel_size=3, scale=0.8, return_depth=True, rgb=rgb,
        rgb_divide_by_occupancies=True, rgb_clip_after_conv=True, rgb_stop_points_gradient=True,
        rgb_occupancy_eps=0.3, blur="conv3d", eps=0.02, focal_length=1.5, camera_distance=2.5,
        max_depth=6.0,
    )  # fmt: skip
    whole = render_point_cloud(points, quats, **options)
    chunked = render_point_cloud(points, quats, chunk_size=2, **options)
    for key in ("silhouette", "depth", "rgb"):
        torch.testing.assert_close(chunked[key], whole[key])
    # each option matters here, so a chunk rendered with a default would differ
    defaults = {"rgb_occupancy_eps": 0.01, "eps": 1e-5, "max_depth": 10.0,
                "camera_distance": 2.0, "focal_length": 1.875, "sigma": 1.0}  # fmt: skip
    for name, value in defaults.items():
        other = render_point_cloud(points, quats, **{**options, name: value})
        assert not torch.allclose(other["depth"], whole["depth"]) or not torch.allclose(
            other["rgb"], whole["rgb"]
        ), name
    silhouettes = render_point_cloud(
        points, quats, chunk_size=2, vox_size=8, sigma=0, projection="max"
    )
    assert set(silhouettes) == {"silhouette"} and silhouettes["silhouette"].shape == (3, 8, 8)


def test_kernel_blur_default_boundaries_and_input_checks() -> None:
    from occaist.geometry.point_renderer import blur_voxels, gaussian_kernel_1d

    k = gaussian_kernel_1d(0.7, 5, torch.float64)
    t = torch.arange(-2, 3, dtype=torch.float64)
    expected = torch.exp(-(t**2) / (2 * 0.7**2))
    torch.testing.assert_close(k, expected / expected.sum())
    vox = torch.rand(1, 1, 5, 5, 5, generator=torch.Generator().manual_seed(4))
    kernel = gaussian_kernel_1d(1.3, 3)
    torch.testing.assert_close(blur_voxels(vox, kernel), blur_voxels(vox, kernel, "matmul"))
    # a point exactly on the near face (δ = −0.5) is kept, in slice 0; points outside the
    # grid on either side add nothing
    edge = render_point_cloud(_on_axis(0), IDENTITY, vox_size=G, sigma=0, projection="max")
    torch.testing.assert_close(edge["silhouette"][0], _image_with(1.0))
    outside = torch.tensor([[[-0.9, 0.0, 0.0], [0.9, 0.3, -0.2], [0.0, -0.7, 0.0]]])
    with_outside = torch.cat((_on_axis(0), outside), dim=1)
    out = render_point_cloud(with_outside, IDENTITY, vox_size=G, sigma=0, projection="max")
    torch.testing.assert_close(out["silhouette"][0], _image_with(1.0))
    # an occupancy scale above 1 is clipped to 1 after scaling
    strong = render_point_cloud(
        _on_axis(4), IDENTITY, vox_size=G, sigma=0, projection="max", scale=2.5
    )
    torch.testing.assert_close(strong["silhouette"][0], _image_with(1.0))
    no_depth = render_point_cloud(_on_axis(4), IDENTITY, vox_size=G, sigma=0, return_depth=False)
    assert set(no_depth) == {"silhouette"}
    with pytest.raises(ValueError, match="points must be"):
        render_point_cloud(torch.zeros(1, 5, 2), IDENTITY)


def test_colours_are_not_clipped_by_default() -> None:
    """Two coincident points sum their colours above 1; only the clip option caps them."""
    twice = _on_axis(4).repeat(1, 2, 1)
    colours = torch.tensor([[[0.8, 0.4, 0.2]]]).repeat(1, 2, 1)
    default = render_point_cloud(twice, IDENTITY, vox_size=G, sigma=0, rgb=colours)
    clipped = render_point_cloud(twice, IDENTITY, vox_size=G, sigma=0, rgb=colours,
                                 rgb_clip_after_conv=True)  # fmt: skip
    assert not torch.allclose(default["rgb"], clipped["rgb"])
