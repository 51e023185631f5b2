"""A parametric family of car meshes with exact CarFusion keypoints and surface point clouds.

A car is built from convex parts in a y-up object frame (x forward, y up, z to the car's right):

- **lower body**: a convex side profile (bumpers, sloped nose, hood/deck line, sloped tail)
  extruded across the width, slightly narrower at the top (tumblehome);
- **cabin** (greenhouse): a trapezoid profile (windshield, roof, rear window) with its own
  tumblehome; the roof is paint, the windows glass;
- **four wheels**: 16-sided cylinders (tyre, rim disc) standing slightly proud of the body side;
- **decals**: head/tail lights, grille and exhaust, thin quads just outside their panel.

Proportions are sampled per body type (sedan, hatchback, SUV, van, coupe; ``BODY_TYPES``). The
mesh is then normalised like ShapeNet v1: bounding-box centre at the origin and bounding-box
diagonal 1, so every vertex lies in ``(-0.5, 0.5)³``.

Keypoints (``occaist.data.keypoints`` order) lie exactly on the surface they name: wheels at
the hub (the centre of the outer rim disc), lights and exhaust at their decal centres, roof
corners at the cabin's roof vertices. The centre (13) is the bounding-box centre, inside the car,
so it is never visible. Every car is left-right symmetric, keypoints included.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from occaist.data.keypoints import NUM_KEYPOINTS

MATERIALS = ("paint", "glass", "tyre", "rim", "headlight", "taillight", "trim")
"""Per-face material names; ``CarMesh.face_material`` indexes this tuple."""
PAINT, GLASS, TYRE, RIM, HEADLIGHT, TAILLIGHT, TRIM = range(len(MATERIALS))

BODY_TYPES = ("sedan", "hatchback", "suv", "van", "coupe")
_BODY_TYPE_WEIGHTS = (0.34, 0.22, 0.22, 0.1, 0.12)

# Per body type, (low, high) ranges in units of the car length (before normalisation).
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "sedan": dict(width=(0.38, 0.44), clearance=(0.03, 0.045), wheel_r=(0.062, 0.075),
                  body_h=(0.15, 0.18), roof_h=(0.27, 0.3), hood=(0.24, 0.3), deck=(0.17, 0.23),
                  ws_run=(0.12, 0.17), rw_run=(0.1, 0.15), nose=(0.03, 0.06), tail=(0.02, 0.04)),
    "hatchback": dict(width=(0.4, 0.46), clearance=(0.03, 0.045), wheel_r=(0.062, 0.075),
                      body_h=(0.15, 0.18), roof_h=(0.29, 0.32), hood=(0.2, 0.26),
                      deck=(0.03, 0.06), ws_run=(0.11, 0.16), rw_run=(0.04, 0.09),
                      nose=(0.03, 0.06), tail=(0.01, 0.03)),
    "suv": dict(width=(0.4, 0.45), clearance=(0.055, 0.08), wheel_r=(0.078, 0.092),
                body_h=(0.2, 0.24), roof_h=(0.36, 0.41), hood=(0.2, 0.26), deck=(0.02, 0.05),
                ws_run=(0.08, 0.13), rw_run=(0.02, 0.05), nose=(0.03, 0.05), tail=(0.01, 0.03)),
    "van": dict(width=(0.38, 0.43), clearance=(0.04, 0.06), wheel_r=(0.066, 0.078),
                body_h=(0.19, 0.23), roof_h=(0.4, 0.46), hood=(0.08, 0.14), deck=(0.01, 0.03),
                ws_run=(0.06, 0.1), rw_run=(0.01, 0.03), nose=(0.02, 0.04), tail=(0.01, 0.02)),
    "coupe": dict(width=(0.42, 0.47), clearance=(0.025, 0.04), wheel_r=(0.064, 0.078),
                  body_h=(0.13, 0.16), roof_h=(0.24, 0.27), hood=(0.29, 0.35), deck=(0.14, 0.2),
                  ws_run=(0.14, 0.2), rw_run=(0.14, 0.2), nose=(0.04, 0.07), tail=(0.02, 0.04)),
}  # fmt: skip
_SHARED_RANGES = dict(
    front_overhang=(0.17, 0.22),
    rear_overhang=(0.16, 0.22),
    tumble_body=(0.9, 0.96),
    tumble_roof=(0.74, 0.88),
    bumper_frac=(0.35, 0.55),
)
_WHEEL_SEGMENTS = 16
_WHEEL_WIDTH = 0.055  # tyre width, car lengths
_WHEEL_PROUD = 1.02  # outer rim face at this multiple of the body half-width
_RIM_FRACTION = 0.62  # rim disc radius / wheel radius
_DECAL_OFFSET = 0.003  # decals stand this far outside their panel (car lengths)
_CABIN_SINK = 0.01  # the cabin base sits this far inside the body


def model_id(seed: int, index: int) -> str:
    """A stable 32-hex-character model id from the world seed and the model index."""
    return hashlib.md5(f"occaist-synth/{seed}/{index}".encode()).hexdigest()


@dataclass(frozen=True)
class CarMesh:
    """A car in its normalised object frame.

    Attributes:
        vertices: ``(V, 3)`` float64 in ``(-0.5, 0.5)³``.
        faces: ``(F, 3)`` int32 vertex indices, counter-clockwise seen from outside.
        face_material: ``(F,)`` int8 indices into ``MATERIALS``.
        surface: ``(F,)`` bool, whether a face is outer surface (GT point sampling); decals and
            the hidden cabin base are not.
        keypoints: ``(14, 3)`` float64, CarFusion order.
        body_type: one of ``BODY_TYPES``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_material: np.ndarray
    surface: np.ndarray
    keypoints: np.ndarray
    body_type: str

    @property
    def triangles(self) -> np.ndarray:
        """``(F, 3, 3)`` vertex coordinates per face."""
        return self.vertices[self.faces]

    @property
    def face_normals(self) -> np.ndarray:
        """``(F, 3)`` outward unit normals."""
        tri = self.triangles
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def sample_surface(self, n_points: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_points, 3)`` points uniform on the outer surface (area-weighted)."""
        tri = self.triangles[self.surface]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        idx = rng.choice(len(tri), size=n_points, p=area / area.sum())
        r1, r2 = rng.random(n_points), rng.random(n_points)
        s = np.sqrt(r1)
        a, b, c = 1 - s, s * (1 - r2), s * r2
        t = tri[idx]
        return a[:, None] * t[:, 0] + b[:, None] * t[:, 1] + c[:, None] * t[:, 2]


class _Builder:
    """Accumulates convex parts; orients every face outward from its part's centroid."""

    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.material: list[np.ndarray] = []
        self.surface: list[np.ndarray] = []
        self.count = 0

    def add(self, verts, faces, material, surface, centre, outward=None) -> None:
        """Add faces, flipped where needed so their normals point away from ``centre`` (or
        along ``outward`` when given: the fan triangles of a non-planar cap can be so tilted
        that the centroid test is ambiguous)."""
        verts = np.asarray(verts, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        tri = verts[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        if outward is None:
            inward = np.einsum("fc,fc->f", normal, tri.mean(axis=1) - centre) < 0
        else:
            inward = normal @ np.asarray(outward, dtype=np.float64) < 0
        faces = np.where(inward[:, None], faces[:, ::-1], faces)
        self.vertices.append(verts)
        self.faces.append(faces + self.count)
        self.material.append(np.broadcast_to(np.asarray(material, np.int8), (len(faces),)))
        self.surface.append(np.broadcast_to(np.asarray(surface, bool), (len(faces),)))
        self.count += len(verts)

    def prism(self, profile, half_widths, cap_material, band_materials, band_surface) -> None:
        """A convex (x, y) profile extruded to ``z = ±half_width`` per vertex.

        Caps are fans; band ``i`` joins profile vertices ``i`` and ``i+1``.
        """
        p = np.asarray(profile, dtype=np.float64)
        hw = np.asarray(half_widths, dtype=np.float64)
        n = len(p)
        right = np.column_stack((p, hw))
        left = np.column_stack((p, -hw))
        verts = np.concatenate((right, left))
        centre = np.array([p[:, 0].mean(), p[:, 1].mean(), 0.0])
        for side, outward in ((0, (0.0, 0.0, 1.0)), (n, (0.0, 0.0, -1.0))):
            fan = [(side, side + i, side + i + 1) for i in range(1, n - 1)]
            self.add(verts, fan, cap_material, True, centre, outward)
        for i in range(n):
            j = (i + 1) % n
            quad = [(i, j, n + j), (i, n + j, n + i)]
            self.add(verts, quad, band_materials[i], band_surface[i], centre)

    def wheel(self, x: float, radius: float, z_outer: float, width: float) -> np.ndarray:
        """A wheel at axle x whose outer rim face is at ``z_outer`` (sign gives the side).

        Returns the hub keypoint (centre of the outer face).
        """
        side = np.sign(z_outer)
        z_inner = z_outer - side * width
        ang = np.linspace(0.0, 2 * np.pi, _WHEEL_SEGMENTS, endpoint=False)
        ring = np.column_stack((x + radius * np.cos(ang), radius + radius * np.sin(ang)))
        rim = np.column_stack(
            (
                x + _RIM_FRACTION * radius * np.cos(ang),
                radius + _RIM_FRACTION * radius * np.sin(ang),
            )
        )
        k = _WHEEL_SEGMENTS
        hub_out = np.array([x, radius, z_outer])
        hub_in = np.array([x, radius, z_inner])
        verts = np.concatenate(
            (
                np.column_stack((ring, np.full(k, z_outer))),  # 0..k-1 outer tyre edge
                np.column_stack((ring, np.full(k, z_inner))),  # k..2k-1 inner tyre edge
                np.column_stack((rim, np.full(k, z_outer))),  # 2k..3k-1 rim edge
                hub_out[None],  # 3k
                hub_in[None],  # 3k+1
            )
        )
        centre = np.array([x, radius, 0.5 * (z_outer + z_inner)])
        nxt = [(i + 1) % k for i in range(k)]
        band = [f for i in range(k) for f in ((i, nxt[i], k + nxt[i]), (i, k + nxt[i], k + i))]
        inner = [(3 * k + 1, k + i, k + nxt[i]) for i in range(k)]
        tyre_ring = [
            f
            for i in range(k)
            for f in ((i, nxt[i], 2 * k + nxt[i]), (i, 2 * k + nxt[i], 2 * k + i))
        ]
        rim_disc = [(3 * k, 2 * k + i, 2 * k + nxt[i]) for i in range(k)]
        self.add(verts, band + inner + tyre_ring, TYRE, True, centre)
        self.add(verts, rim_disc, RIM, True, centre)
        return hub_out

    def decal(self, centre, u, v, normal, material) -> np.ndarray:
        """A quad ``centre ± u ± v`` lifted by ``_DECAL_OFFSET`` along ``normal``; its centre."""
        c = np.asarray(centre) + _DECAL_OFFSET * np.asarray(normal)
        verts = [c - u - v, c + u - v, c + u + v, c - u + v]
        self.add(verts, [(0, 1, 2), (0, 2, 3)], material, False, c - np.asarray(normal))
        return c


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def sample_car_params(rng: np.random.Generator) -> dict[str, float | str]:
    """Draw a body type and its proportions (car-length units)."""
    body = str(rng.choice(BODY_TYPES, p=_BODY_TYPE_WEIGHTS))
    params: dict[str, float | str] = {"body_type": body}
    for name, (lo, hi) in {**_RANGES[body], **_SHARED_RANGES}.items():
        params[name] = float(rng.uniform(lo, hi))
    return params


def build_car(params: dict[str, float | str]) -> CarMesh:
    """The normalised mesh and keypoints of a car with ``params`` (``sample_car_params``)."""
    g = {k: v for k, v in params.items() if k != "body_type"}
    xf, xr = 0.5, -0.5
    hw = 0.5 * g["width"]
    c, hb, hr = g["clearance"], g["body_h"], g["roof_h"]
    bump_f = c + g["bumper_frac"] * (hb - c)
    bump_r = c + (g["bumper_frac"] + 0.1) * (hb - c)
    hood_front = (xf - g["nose"], hb - 0.012)
    deck_rear = (xr + g["tail"], hb)
    profile = [(xr, c), (xf, c), (xf, bump_f), hood_front, deck_rear, (xr, bump_r)]
    t_body = g["tumble_body"]
    body_hw = [hw, hw, hw, t_body * hw, t_body * hw, hw]
    b = _Builder()
    b.prism(profile, body_hw, PAINT, [PAINT] * 6, [True] * 6)

    # Cabin: base sunk into the body so no gap shows; its base band is hidden (not surface).
    x_ws = xf - g["hood"]
    x_rw = xr + g["deck"]
    x_rf = x_ws - g["ws_run"]
    x_rr = x_rw + g["rw_run"]
    if x_rr > x_rf - 0.1:  # keep a roof of at least 0.1 car lengths
        mid = 0.5 * (x_rr + x_rf)
        x_rr, x_rf = mid - 0.05, mid + 0.05
    y_base = min(hood_front[1], deck_rear[1]) - _CABIN_SINK
    cabin = [(x_rw, y_base), (x_ws, y_base), (x_rf, hr), (x_rr, hr)]
    base_hw = 0.97 * t_body * hw
    roof_hw = g["tumble_roof"] * hw
    b.prism(
        cabin, [base_hw, base_hw, roof_hw, roof_hw], GLASS,
        [TRIM, GLASS, PAINT, GLASS], [False, True, True, True],
    )  # fmt: skip

    kp = np.zeros((NUM_KEYPOINTS, 3))
    r = g["wheel_r"]
    x_fa = xf - g["front_overhang"]
    x_ra = xr + g["rear_overhang"]
    z_out = _WHEEL_PROUD * hw
    for index, (x, z) in enumerate(((x_fa, z_out), (x_fa, -z_out), (x_ra, z_out), (x_ra, -z_out))):
        kp[index] = b.wheel(x, r, z, _WHEEL_WIDTH)

    # Lights on the sloped nose and tail panels (planar isosceles trapezoids).
    ez = np.array([0.0, 0.0, 1.0])
    for (p0, p1, w0, w1), material, (k_right, k_left) in (
        ((profile[2], profile[3], body_hw[2], body_hw[3]), HEADLIGHT, (4, 5)),
        ((profile[5], profile[4], body_hw[5], body_hw[4]), TAILLIGHT, (6, 7)),
    ):
        a = np.array([*p0, 0.0])
        d = np.array([*p1, 0.0]) - a
        mid = a + 0.5 * d
        normal = _unit(np.cross(d, ez))
        if normal[0] * (mid[0]) < 0:
            normal = -normal
        z = 0.72 * 0.5 * (w0 + w1)
        along = 0.2 * d
        across = 0.13 * hw * ez
        kp[k_right] = b.decal(mid + z * ez, along, across, normal, material)
        kp[k_left] = b.decal(mid - z * ez, along, across, normal, material)

    # Grille on the front bumper face, exhaust low on the rear face (centre line).
    grille_c = np.array([xf, 0.5 * (c + bump_f), 0.0])
    b.decal(grille_c, np.array([0.0, 0.3 * (bump_f - c), 0.0]), 0.55 * hw * ez, [1, 0, 0], TRIM)
    ex = np.array([xr, c + 0.3 * (bump_r - c), 0.0])
    size = 0.12 * (bump_r - c)
    kp[8] = b.decal(ex, np.array([0.0, size, 0.0]), 1.6 * size * ez, [-1, 0, 0], TRIM)

    kp[9] = (x_rf, hr, roof_hw)
    kp[10] = (x_rf, hr, -roof_hw)
    kp[11] = (x_rr, hr, roof_hw)
    kp[12] = (x_rr, hr, -roof_hw)

    verts = np.concatenate(b.vertices)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    centre = 0.5 * (lo + hi)
    scale = 1.0 / np.linalg.norm(hi - lo)
    kp[13] = centre
    return CarMesh(
        vertices=(verts - centre) * scale,
        faces=np.concatenate(b.faces).astype(np.int32),
        face_material=np.concatenate(b.material).astype(np.int8),
        surface=np.concatenate(b.surface).astype(bool),
        keypoints=(kp - centre) * scale,
        body_type=str(params["body_type"]),
    )
