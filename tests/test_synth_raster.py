"""The z-buffer rasteriser and exact point visibility against hand-computed cases."""

from __future__ import annotations

import numpy as np

from occaist.synth.raster import PinholeCamera, rasterize, visible_points


def _square(x0, y0, x1, y1, z):
    """Two triangles covering the pixel-space rectangle at constant depth z."""
    a, b, c, d = (x0, y0), (x1, y0), (x1, y1), (x0, y1)
    xy = np.array([[a, b, c], [a, c, d]], dtype=np.float64)
    return xy, np.full((2, 3), float(z))


def test_coverage_is_exactly_the_pixel_centres_inside():
    xy, z = _square(1.2, 2.0, 5.6, 4.5, 3.0)
    face, depth = rasterize(xy, z, 8, 8)
    covered = face >= 0
    rows, cols = np.mgrid[0:8, 0:8] + 0.5
    expected = (cols >= 1.2) & (cols <= 5.6) & (rows >= 2.0) & (rows <= 4.5)
    np.testing.assert_array_equal(covered, expected)
    np.testing.assert_allclose(depth[covered], 3.0, rtol=1e-14)
    assert np.all(np.isinf(depth[~covered]))


def test_nearest_triangle_wins_and_ties_are_stable():
    far_xy, far_z = _square(0, 0, 8, 8, 5.0)
    near_xy, near_z = _square(2, 2, 6, 6, 2.0)
    face, depth = rasterize(
        np.concatenate((far_xy, near_xy)), np.concatenate((far_z, near_z)), 8, 8
    )
    assert set(np.unique(face[2:6, 2:6])) <= {2, 3}
    np.testing.assert_allclose(depth[2:6, 2:6], 2.0, rtol=1e-14)
    np.testing.assert_allclose(depth[0, 0], 5.0, rtol=1e-14)
    # Same depth twice: the lower triangle index wins, whatever the order of candidates.
    face2, _ = rasterize(
        np.concatenate((near_xy, near_xy)), np.concatenate((near_z, near_z)), 8, 8
    )
    assert set(np.unique(face2[face2 >= 0])) == {0, 1}


def test_perspective_correct_depth_on_a_slanted_plane():
    # A plane through camera-frame points; depth at each pixel must match the ray-plane hit.
    K = np.array([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    cam = PinholeCamera(K, np.eye(3), np.zeros(3), 64, 64)
    tri = np.array([[[-1.0, -1.0, 2.0], [1.5, -1.0, 6.0], [-1.0, 1.5, 3.0]]])
    xy, z = cam.project(tri)
    face, depth = rasterize(xy, z, 64, 64)
    n = np.cross(tri[0, 1] - tri[0, 0], tri[0, 2] - tri[0, 0])
    rows, cols = np.nonzero(face >= 0)
    rays = np.column_stack((cols + 0.5, rows + 0.5, np.ones(len(rows)))) @ np.linalg.inv(K).T
    t = (tri[0, 0] @ n) / (rays @ n)  # camera z of the hit (rays have z = 1)
    assert len(rows) > 200
    np.testing.assert_allclose(depth[rows, cols], t, rtol=1e-12)


def test_triangles_behind_the_camera_are_skipped():
    xy, z = _square(0, 0, 8, 8, -1.0)
    face, _ = rasterize(xy, z, 8, 8)
    assert (face < 0).all()


def test_visible_points_exact_cases():
    occluder = np.array([[[-1.0, -1.0, 4.0], [1.0, -1.0, 4.0], [0.0, 1.0, 4.0]]])
    points = np.array(
        [
            [0.0, 0.0, 8.0],  # behind the triangle
            [0.0, 0.0, 4.0],  # on it: visible (tolerance)
            [0.0, 0.0, 3.0],  # in front
            [3.0, 0.0, 8.0],  # beside it
            [0.0, 0.0, -1.0],  # behind the camera
        ]
    )
    np.testing.assert_array_equal(
        visible_points(points, occluder), [False, True, True, True, False]
    )
