"""A vectorised numpy z-buffer rasteriser and exact keypoint visibility (no OpenGL).

Cameras are pinholes in the conventions of ``occaist.geometry.camera``: OpenCV axes (x right,
y down, z forward), ``x_cam = R·X + t``, pixels ``(x, y) = (K·x_cam)[:2]/z`` with pixel ``(r, c)``
covering ``[c, c+1) × [r, r+1)``; the rasteriser samples at pixel centres ``(c + 0.5, r + 0.5)``.
Depth is the camera-frame z, interpolated perspective-correctly (``1/z`` is affine in the image).

Triangles are grouped by the size of their pixel bounding box (powers of two), each group is
expanded to candidate pixels with one broadcast, and the nearest candidate per pixel wins
(a stable sort on ``pixel + depth / depth_range``, so ties resolve to the lower triangle index).

Keypoint visibility (``visible_points``) is exact, not read from the pixel grid: a point is
occluded when any triangle covers its exact projection at a depth smaller than the point's by
more than a relative tolerance (so a keypoint lying on a visible surface counts as visible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_CANDIDATES = 1 << 21  # candidate pixels per broadcast chunk (memory bound)
NEAR = 1e-3  # triangles with a vertex nearer than this (camera z) are not drawn
VISIBILITY_REL_TOL = 1e-4
"""A keypoint is visible if no surface covers it at ``depth < (1 - tol)·keypoint depth``."""
_EDGE_EPS = 1e-9  # barycentric slack on triangle edges for the exact point query


@dataclass(frozen=True)
class PinholeCamera:
    """``K`` (3, 3), world-to-camera ``R`` (3, 3) and ``t`` (3,), image ``height`` × ``width``."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    height: int
    width: int

    @property
    def P(self) -> np.ndarray:
        """The 3×4 projection ``K[R | t]``."""
        return self.K @ np.column_stack((self.R, self.t))

    @property
    def eye(self) -> np.ndarray:
        """Camera centre in world coordinates, ``−Rᵀt``."""
        return -self.R.T @ self.t

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World ``(..., 3)`` to camera frame ``(..., 3)``."""
        return points @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(..., 2)`` (x = column, y = row) and camera depth ``(...)`` of world points."""
        cam = self.to_camera(points)
        h = cam @ self.K.T
        return h[..., :2] / h[..., 2:3], cam[..., 2]

    def scaled(self, factor: int) -> PinholeCamera:
        """The same camera on a ``factor``-times finer pixel grid (for supersampling)."""
        S = np.diag([factor, factor, 1.0])
        return PinholeCamera(S @ self.K, self.R, self.t, self.height * factor, self.width * factor)

    def pixel_rays(self) -> np.ndarray:
        """Unnormalised world-frame ray directions ``(H, W, 3)`` through the pixel centres."""
        ys, xs = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64) + 0.5
        pix = np.stack((xs, ys, np.ones_like(xs)), axis=-1)
        cam = pix @ np.linalg.inv(self.K).T  # (H, W, 3), z = 1
        return cam @ self.R  # Rᵀ applied to row vectors


def _pow2(n: np.ndarray) -> np.ndarray:
    return np.left_shift(1, np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64))


def rasterize(
    xy: np.ndarray, z: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer triangles ``xy`` ``(T, 3, 2)`` (pixels) with camera depths ``z`` ``(T, 3)``.

    Returns the index of the nearest triangle per pixel ``(H, W)`` int32 (``-1`` = none) and its
    depth ``(H, W)`` float64 (``inf`` = none). Triangles with a vertex nearer than ``NEAR`` are
    skipped; both windings are drawn (cull before calling if wanted).
    """
    tri_index = np.full(height * width, -1, dtype=np.int32)
    depth = np.full(height * width, np.inf)
    ok = np.all(z > NEAR, axis=1)
    x0, y0 = xy[:, 0, 0], xy[:, 0, 1]
    e1 = xy[:, 1] - xy[:, 0]
    e2 = xy[:, 2] - xy[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok &= np.abs(det) > 1e-12
    cmin = np.ceil(xy[..., 0].min(axis=1) - 0.5).clip(0, width)
    cmax = np.floor(xy[..., 0].max(axis=1) - 0.5).clip(-1, width - 1)
    rmin = np.ceil(xy[..., 1].min(axis=1) - 0.5).clip(0, height)
    rmax = np.floor(xy[..., 1].max(axis=1) - 0.5).clip(-1, height - 1)
    ok &= (cmax >= cmin) & (rmax >= rmin)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return tri_index.reshape(height, width), depth.reshape(height, width)
    bw = (cmax - cmin + 1).astype(np.int64)
    bh = (rmax - rmin + 1).astype(np.int64)
    inv_z = 1.0 / np.where(ok[:, None], z, 1.0)
    keys = _pow2(bw[idx]) * (1 << 20) + _pow2(bh[idx])
    pix_all, dep_all, tri_all = [], [], []
    for key in np.unique(keys):
        group = idx[keys == key]
        gw, gh = int(key >> 20), int(key & ((1 << 20) - 1))
        per = gw * gh
        for start in range(0, len(group), max(1, _MAX_CANDIDATES // per)):
            g = group[start : start + max(1, _MAX_CANDIDATES // per)]
            cols = cmin[g, None, None] + np.arange(gw)[None, None, :]  # (G, 1, gw)
            rows = rmin[g, None, None] + np.arange(gh)[None, :, None]  # (G, gh, 1)
            px = cols + 0.5 - x0[g, None, None]
            py = rows + 0.5 - y0[g, None, None]
            d = det[g, None, None]
            # Barycentrics (b1, b2) of the sample in the triangle's edge basis.
            b1 = (px * e2[g, 1, None, None] - py * e2[g, 0, None, None]) / d
            b2 = (py * e1[g, 0, None, None] - px * e1[g, 1, None, None]) / d
            b0 = 1.0 - b1 - b2
            inside = (
                (b0 >= 0)
                & (b1 >= 0)
                & (b2 >= 0)
                & (cols <= cmax[g, None, None])
                & (rows <= rmax[g, None, None])
            )
            gi, ri, ci = np.nonzero(inside)
            if len(gi) == 0:
                continue
            tri = g[gi]
            iz = (
                b0[gi, ri, ci] * inv_z[tri, 0]
                + b1[gi, ri, ci] * inv_z[tri, 1]
                + b2[gi, ri, ci] * inv_z[tri, 2]
            )
            pix_all.append((rows[gi, ri, 0] * width + cols[gi, 0, ci]).astype(np.int64))
            dep_all.append(1.0 / iz)
            tri_all.append(tri)
    if not pix_all:
        return tri_index.reshape(height, width), depth.reshape(height, width)
    pix = np.concatenate(pix_all)
    dep = np.concatenate(dep_all)
    tri = np.concatenate(tri_all)
    # Nearest per pixel: sort by pixel, then depth (then triangle index, via the stable sort).
    order = np.lexsort((tri, dep, pix))
    pix, dep, tri = pix[order], dep[order], tri[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    tri_index[pix[first]] = tri[first]
    depth[pix[first]] = dep[first]
    return tri_index.reshape(height, width), depth.reshape(height, width)


def visible_points(
    points_cam: np.ndarray, tri_cam: np.ndarray, rel_tol: float = VISIBILITY_REL_TOL
) -> np.ndarray:
    """Whether each camera-frame point ``(P, 3)`` is unoccluded by triangles ``(T, 3, 3)``.

    Exact: the point's projection ``(x/z, y/z)`` is tested against every triangle's projection
    and the triangle's depth there (perspective-correct) is compared with the point's depth.
    Points behind the camera are not visible. The image bounds are not checked here.
    """
    pts = np.asarray(points_cam, dtype=np.float64)
    front = pts[:, 2] > NEAR
    ok = np.all(tri_cam[..., 2] > NEAR, axis=1)
    tri = tri_cam[ok]
    if len(tri) == 0:
        return front
    uv = tri[..., :2] / tri[..., 2:3]  # (T, 3, 2)
    p = pts[:, None, :2] / np.where(front, pts[:, 2], 1.0)[:, None, None]  # (P, 1, 2)
    e1 = uv[:, 1] - uv[:, 0]
    e2 = uv[:, 2] - uv[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (T,)
    good = np.abs(det) > 1e-15
    d = np.where(good, det, 1.0)
    q = p - uv[None, :, 0]  # (P, T, 2)
    b1 = (q[..., 0] * e2[:, 1] - q[..., 1] * e2[:, 0]) / d
    b2 = (q[..., 1] * e1[:, 0] - q[..., 0] * e1[:, 1]) / d
    b0 = 1.0 - b1 - b2
    inside = (b0 >= -_EDGE_EPS) & (b1 >= -_EDGE_EPS) & (b2 >= -_EDGE_EPS) & good
    inv_z = b0 / tri[:, 0, 2] + b1 / tri[:, 1, 2] + b2 / tri[:, 2, 2]
    with np.errstate(divide="ignore"):
        surf = np.where(inside & (inv_z > 0), 1.0 / np.where(inv_z > 0, inv_z, 1.0), np.inf)
    nearest = surf.min(axis=1)
    return front & (nearest >= pts[:, 2] * (1.0 - rel_tol))
