"""The two looks of the world: *synthetic* (ShapeNet renders) and *real* (Stanford Cars photos).

Synthetic (``shade_synthetic``): flat Lambert shading of per-face normals under 1-3 directional
lights plus ambient, one uniform body colour per model, near-black glass and tyres, transparent
background; supersampled so the alpha edge is fractional, as in the DPC renders.

Real (``shade_real`` + ``degrade``): car-paint palette with metallic flake noise, Blinn-Phong
sun highlights, Fresnel-weighted reflections of a procedural environment (sky gradient, ground),
soft contact shadows on the ground, a procedural background traced per pixel (sky, clouds,
skyline of buildings or trees, asphalt with lane markings or pavement, distance haze), then
photometric degradations through albumentations (brightness/contrast, noise, blur, JPEG).

Colours are linear RGB in [0, 1] until ``to_srgb_uint8``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occaist.synth.cars import GLASS, HEADLIGHT, MATERIALS, PAINT, RIM, TAILLIGHT, TRIM, TYRE
from occaist.synth.raster import PinholeCamera
from occaist.synth.scene import CarInstance, GBuffer

# ---------------------------------------------------------------- synthetic (ShapeNet) look


@dataclass(frozen=True)
class SyntheticLighting:
    """Directional lights (unit directions towards the light, world frame) and an ambient term."""

    directions: np.ndarray  # (L, 3)
    intensities: np.ndarray  # (L,)
    ambient: float


def synthetic_paint(rng: np.random.Generator) -> np.ndarray:
    """A ShapeNet-like uniform body colour: any hue, mid saturation and value (linear RGB)."""
    h, s, v = rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.25, 0.85)
    return _hsv_to_rgb(h, s, v) ** 2.2


def sample_synthetic_lighting(rng: np.random.Generator) -> SyntheticLighting:
    """1-3 random lights from the upper hemisphere, total intensity ~1, ambient 0.2-0.4."""
    n = int(rng.integers(1, 4))
    d = rng.normal(size=(n, 3))
    d[:, 1] = np.abs(d[:, 1]) + 0.3
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = rng.uniform(0.5, 1.0, n)
    return SyntheticLighting(d, w / w.sum() * rng.uniform(0.75, 1.0), float(rng.uniform(0.2, 0.4)))


def material_albedo_synthetic(paint: np.ndarray) -> np.ndarray:
    """``(len(MATERIALS), 3)`` albedos for the synthetic look."""
    table = np.zeros((len(MATERIALS), 3))
    table[PAINT] = paint
    table[GLASS] = (0.012, 0.014, 0.018)
    table[TYRE] = (0.008, 0.008, 0.008)
    table[RIM] = (0.25, 0.25, 0.26)
    table[HEADLIGHT] = (0.8, 0.8, 0.75)
    table[TAILLIGHT] = (0.6, 0.02, 0.02)
    table[TRIM] = (0.01, 0.01, 0.01)
    return table


def shade_synthetic(
    gb: GBuffer, instances: list[CarInstance], lighting: SyntheticLighting
) -> tuple[np.ndarray, np.ndarray]:
    """Flat Lambert shading: ``(H, W, 3)`` linear RGB (0 on background) and ``(H, W)`` alpha."""
    fg = gb.mask
    rgb = np.zeros((*fg.shape, 3))
    n = gb.normals(fg)
    light = lighting.ambient + np.clip(n @ lighting.directions.T, 0, None) @ lighting.intensities
    albedo = np.zeros((len(n), 3))
    inst = gb.instance[fg]
    mat = gb.material[fg]
    for k, car in enumerate(instances):
        table = material_albedo_synthetic(car.paint)
        sel = inst == k
        albedo[sel] = table[mat[sel]]
    rgb[fg] = albedo * light[:, None]
    return rgb, fg.astype(np.float64)


# ---------------------------------------------------------------- real (Stanford Cars) look

_GROUND_RANGE = 120.0  # metres of ground traced; beyond it the skyline/horizon takes over

_PAINT_PALETTE = (  # (sRGB colour, weight, metallic)
    ((0.92, 0.92, 0.9), 0.2, False),  # white
    ((0.04, 0.04, 0.05), 0.17, True),  # black
    ((0.66, 0.67, 0.69), 0.15, True),  # silver
    ((0.36, 0.37, 0.39), 0.12, True),  # grey
    ((0.1, 0.2, 0.48), 0.1, True),  # blue
    ((0.62, 0.06, 0.06), 0.1, False),  # red
    ((0.12, 0.3, 0.18), 0.04, True),  # green
    ((0.72, 0.64, 0.5), 0.04, False),  # beige
    ((0.35, 0.2, 0.12), 0.03, True),  # brown
    ((0.9, 0.72, 0.1), 0.03, False),  # yellow
    ((0.88, 0.4, 0.08), 0.02, False),  # orange
)


def real_paint(rng: np.random.Generator) -> np.ndarray:
    """A car-paint colour from a market-share-like palette, jittered (linear RGB)."""
    weights = np.array([w for _, w, _ in _PAINT_PALETTE])
    colour, _, _ = _PAINT_PALETTE[int(rng.choice(len(weights), p=weights / weights.sum()))]
    jitter = np.clip(np.asarray(colour) * rng.uniform(0.9, 1.08, 3), 0, 1)
    return jitter**2.2


@dataclass(frozen=True)
class Environment:
    """Sun, sky and ground of a real-look scene, and the background style."""

    sun: np.ndarray  # unit direction towards the sun (world)
    sun_colour: np.ndarray
    zenith: np.ndarray
    horizon: np.ndarray
    ground: np.ndarray  # pavement / verge colour
    asphalt: np.ndarray
    style: str  # "street" | "open" | "parking"
    lane_width: float
    road_axis: float  # yaw of the road direction (radians)
    skyline: np.ndarray  # (B, 3): bin start azimuth, elevation angle top, shade
    phase: np.ndarray  # noise phases


def sample_environment(rng: np.random.Generator) -> Environment:
    """Random daylight environment: sun elevation 20-70°, overcast to clear sky."""
    az, el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(20, 70))
    sun = np.array([np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)])
    clear = rng.uniform(0, 1)
    zenith = np.array([0.18, 0.32, 0.62]) * clear + np.array([0.55, 0.57, 0.6]) * (1 - clear)
    horizon = np.array([0.72, 0.78, 0.85]) * clear + np.array([0.78, 0.78, 0.78]) * (1 - clear)
    style = str(rng.choice(["street", "open", "parking"], p=[0.5, 0.25, 0.25]))
    ground = (
        np.array([0.2, 0.32, 0.12]) if style == "open" else np.array([0.45, 0.43, 0.4])
    ) * rng.uniform(0.8, 1.1)
    bins = int(rng.integers(40, 90))
    starts = np.sort(rng.uniform(0, 2 * np.pi, bins))
    if style == "street":
        tops = np.deg2rad(rng.uniform(3, 25, bins))
    elif style == "open":
        tops = np.deg2rad(rng.uniform(1, 7, bins))
    else:
        tops = np.deg2rad(rng.uniform(0.5, 10, bins)) * (rng.random(bins) < 0.6)
    shades = rng.uniform(0.25, 0.85, bins)
    return Environment(
        sun=sun,
        sun_colour=np.array([1.0, 0.96, 0.88]) * (1.4 + 1.6 * clear),
        zenith=zenith**2.2,
        horizon=horizon**2.2,
        ground=ground**2.2,
        asphalt=(np.array([0.3, 0.3, 0.31]) * rng.uniform(0.75, 1.2)) ** 2.2,
        style=style,
        lane_width=float(rng.uniform(3.0, 3.8)),
        road_axis=float(rng.uniform(0, np.pi)),
        skyline=np.column_stack((starts, tops, shades)),
        phase=rng.uniform(0, 2 * np.pi, 8),
    )


def _sky(env: Environment, d: np.ndarray) -> np.ndarray:
    """Sky radiance ``(N, 3)`` for unit directions ``(N, 3)`` with ``d_y >= 0``."""
    t = np.clip(d[:, 1], 0, 1) ** 0.5
    col = env.horizon * (1 - t[:, None]) + env.zenith * t[:, None]
    phi = np.arctan2(d[:, 2], d[:, 0])
    cloud = np.sin(7 * phi + env.phase[0]) * np.sin(23 * d[:, 1] + 3 * phi + env.phase[1])
    col = col + 0.08 * np.clip(cloud, 0, 1)[:, None] * (1 - t[:, None])
    glow = np.clip(d @ env.sun, 0, 1) ** 64
    return col + glow[:, None] * env.sun_colour * 0.3


def _skyline(env: Environment, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Buildings/trees: ``(N,)`` hit mask and ``(N, 3)`` colour for directions ``(N, 3)``."""
    phi = np.mod(np.arctan2(d[:, 2], d[:, 0]), 2 * np.pi)
    theta = np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2]))
    b = np.searchsorted(env.skyline[:, 0], phi) - 1  # -1 wraps to the last bin
    top = env.skyline[b, 1]
    shade = env.skyline[b, 2]
    hit = (theta < top) & (theta > -0.02)
    if env.style == "open":
        base = np.array([0.1, 0.2, 0.08]) * shade[:, None] * 1.4
    else:
        base = np.array([0.55, 0.5, 0.45]) * shade[:, None]
        windows = (np.sin(phi * 900 + b) > 0.3) & (np.sin(theta * 600) > 0.2)
        base = base * np.where(windows, 0.45, 1.0)[:, None]
    return hit, base**2.2 * 0.8 + env.horizon * 0.2


def road_half_width(env: Environment) -> float:
    """Half-width (metres) of the road along ``env.road_axis`` (a parking lot has no edge)."""
    lanes = {"open": 2, "street": 3}.get(env.style)
    return np.inf if lanes is None else lanes * env.lane_width


def road_frame(env: Environment) -> tuple[np.ndarray, np.ndarray]:
    """Unit ground vectors (x, z) along and across the road."""
    c, s = np.cos(env.road_axis), np.sin(env.road_axis)
    return np.array([c, s]), np.array([-s, c])


def _ground(env: Environment, p: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Ground albedo ``(N, 3)`` at world points ``(N, 3)`` on ``y = 0``."""
    c, s = np.cos(env.road_axis), np.sin(env.road_axis)
    along = p[:, 0] * c + p[:, 2] * s
    across = -p[:, 0] * s + p[:, 2] * c
    ph = env.phase
    grain = (
        np.sin(3.1 * p[:, 0] + ph[2]) * np.sin(2.7 * p[:, 2] + ph[3])
        + 0.5 * np.sin(11.3 * p[:, 0] + 7.1 * p[:, 2] + ph[4])
        + 0.3 * np.sin(37.0 * p[:, 0] - 29.0 * p[:, 2] + ph[5])
    )
    grain_f = 1 + 0.06 * grain * np.exp(-dist / 40.0)
    road_half = road_half_width(env)
    on_road = np.abs(across) < road_half
    col = np.where(on_road[:, None], env.asphalt, env.ground) * grain_f[:, None]
    lane = np.mod(across, env.lane_width)
    marking = (np.abs(lane) < 0.07) & (np.mod(along, 6.0) < 3.0) & on_road
    if env.style == "parking":
        marking = (np.abs(np.mod(along, 2.6) - 1.3) < 0.05) & (np.mod(across, 11.0) < 5.0)
    kerb = (np.abs(np.abs(across) - road_half) < 0.15) & ~on_road
    col = np.where(marking[:, None], np.array([0.8, 0.8, 0.75]), col)
    return np.where(kerb[:, None], np.array([0.55, 0.55, 0.55]), col)


def _shadow(p: np.ndarray, instances: list[CarInstance]) -> np.ndarray:
    """Soft contact shadow factor in [0, 1] (1 = lit) at ground points ``(N, 3)``."""
    lit = np.ones(len(p))
    for car in instances:
        lo, hi = car.mesh.vertices.min(axis=0), car.mesh.vertices.max(axis=0)
        reach = car.scale * 0.75 * np.linalg.norm(hi - lo)
        near = np.flatnonzero(
            np.abs(p[:, 0] - car.translation[0]) + np.abs(p[:, 2] - car.translation[2]) < reach
        )
        if len(near) == 0:
            continue
        local = car.to_object(p[near])
        half = 0.5 * (hi - lo) * np.array([1.02, 1.0, 1.05])
        mid = 0.5 * (hi + lo)
        r = np.maximum(
            np.abs(local[:, 0] - mid[0]) / half[0], np.abs(local[:, 2] - mid[2]) / half[2]
        )
        lit[near] *= 1 - 0.75 * np.clip((1.15 - r) / 0.3, 0, 1)
    return lit


def _environment(env: Environment, d: np.ndarray) -> np.ndarray:
    """Radiance seen along unit directions (for reflections): sky above, dim ground below."""
    out = np.empty_like(d)
    up = d[:, 1] >= 0
    out[up] = _sky(env, d[up])
    hit, col = _skyline(env, d[up])
    sky_up = out[up]
    sky_up[hit] = col[hit]
    out[up] = sky_up
    out[~up] = env.asphalt * 0.6 * (0.6 + 0.4 * np.exp(d[~up, 1:2] * 3))
    return out


def render_background(
    camera: PinholeCamera, instances: list[CarInstance], env: Environment, factor: int
) -> np.ndarray:
    """Linear RGB ``(H, W, 3)`` of everything but the cars: sky, skyline, ground with shadows.

    Traced on a ``factor``-times coarser grid and upsampled bilinearly (cheap, and real
    backgrounds are a little out of focus anyway).
    """
    import cv2

    h, w = -(-camera.height // factor), -(-camera.width // factor)
    small = PinholeCamera(
        np.diag([1 / factor, 1 / factor, 1.0]) @ camera.K, camera.R, camera.t, h, w
    )
    d = small.pixel_rays().reshape(-1, 3)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    eye = camera.eye
    col = np.empty_like(d)
    ground = (d[:, 1] < 0) & (eye[1] > 0)
    t = np.full(len(d), np.inf)
    t[ground] = -eye[1] / d[ground, 1]
    g = ground & (t < _GROUND_RANGE)
    col[~g] = _environment(env, d[~g])
    if g.any():
        p = eye + t[g, None] * d[g]
        alb = _ground(env, p, t[g])
        light = (
            env.sun_colour * max(env.sun[1], 0.0) * _shadow(p, instances)[:, None]
            + env.zenith * 0.9
        )
        haze = 1 - np.exp(-t[g] / 90.0)
        col[g] = alb * light * (1 - haze[:, None]) + env.horizon * haze[:, None]
    img = col.reshape(h, w, 3).astype(np.float32)
    return cv2.resize(img, (camera.width, camera.height), interpolation=cv2.INTER_LINEAR)


def shade_real(
    gb: GBuffer,
    instances: list[CarInstance],
    env: Environment,
    rng: np.random.Generator,
    background_factor: int = 2,
) -> np.ndarray:
    """Real-look linear RGB ``(H, W, 3)``: shaded cars over a traced background."""
    out = render_background(gb.camera, instances, env, background_factor).astype(np.float64)
    fg = gb.mask
    if fg.any():
        out[fg] = _shade_cars(gb, fg, instances, env, rng)
    return out


@dataclass(frozen=True)
class RealMaterial:
    """Shading constants of one car material in the real look.

    ``albedo`` None means the instance's paint; ``f0`` is the Fresnel reflectance at normal
    incidence (Schlick), ``specular``/``shininess`` the Blinn-Phong sun highlight, ``reflect``
    scales the environment reflection, ``glow`` adds emission (lamps) as a multiple of albedo.
    """

    albedo: tuple[float, float, float] | None
    f0: float = 0.04
    specular: float = 0.0
    shininess: float = 60.0
    reflect: float = 1.0
    glow: float = 0.0


REAL_MATERIALS: dict[int, RealMaterial] = {
    PAINT: RealMaterial(None, specular=0.9, shininess=220.0),
    GLASS: RealMaterial((0.01, 0.01, 0.01), f0=0.1, specular=1.5, shininess=400.0),
    TYRE: RealMaterial((0.012, 0.012, 0.012), reflect=0.15),
    RIM: RealMaterial((0.35, 0.35, 0.35), f0=0.5, specular=0.6),
    HEADLIGHT: RealMaterial((0.9, 0.9, 0.85), glow=0.25),
    TAILLIGHT: RealMaterial((0.55, 0.015, 0.01), glow=0.08),
    TRIM: RealMaterial((0.015, 0.015, 0.015), reflect=0.4),
}


def _material_column(name: str) -> np.ndarray:
    return np.array([getattr(REAL_MATERIALS[m], name) for m in range(len(MATERIALS))])


def _shade_cars(gb, fg, instances, env, rng) -> np.ndarray:
    """Linear RGB ``(N, 3)`` of the ``fg`` pixels: diffuse sun + sky, highlights, reflections."""
    n = gb.normals(fg)
    v = -gb.rays(fg)  # towards the eye
    flip = np.einsum("nc,nc->n", n, v) < 0  # grazing back faces after culling: face the viewer
    n = np.where(flip[:, None], -n, n)
    mat = gb.material[fg]
    inst = gb.instance[fg]
    albedo = np.zeros((len(n), 3))
    for k, car in enumerate(instances):
        albedo[inst == k] = car.paint
    for m, spec in REAL_MATERIALS.items():
        if spec.albedo is not None:
            albedo[mat == m] = spec.albedo
    f0, spec_k = _material_column("f0")[mat], _material_column("specular")[mat]
    shin, refl = _material_column("shininess")[mat], _material_column("reflect")[mat]
    glow = _material_column("glow")[mat]
    paint = mat == PAINT
    # Metallic flake / orange peel: blocky low-frequency plus per-pixel noise, image space.
    rows, cols = np.nonzero(fg)
    coarse = rng.normal(size=(fg.shape[0] // 8 + 1, fg.shape[1] // 8 + 1))
    flake = 1 + 0.05 * coarse[rows // 8, cols // 8] + 0.03 * rng.normal(size=len(rows)) * paint
    albedo = albedo * flake[:, None]
    sun_dot = np.clip(n @ env.sun, 0, None)
    sky_amb = env.zenith * (0.5 + 0.5 * n[:, 1:2]) + env.asphalt * 0.3 * (0.5 - 0.5 * n[:, 1:2])
    diffuse = albedo * (env.sun_colour * sun_dot[:, None] + sky_amb * 1.2)
    half = v + env.sun
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = spec_k * np.clip(np.einsum("nc,nc->n", n, half), 0, 1) ** shin * (sun_dot > 0)
    cos_v = np.clip(np.einsum("nc,nc->n", n, v), 0, 1)
    fresnel = f0 + (1 - f0) * (1 - cos_v) ** 5
    r = -v + 2 * np.einsum("nc,nc->n", n, v)[:, None] * n  # mirror direction
    env_col = _environment(env, r)
    return (
        diffuse * (1 - fresnel[:, None])
        + (fresnel * refl)[:, None] * env_col
        + spec[:, None] * env.sun_colour
        + glow[:, None] * albedo
    )


# ---------------------------------------------------------------- shared helpers


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter ``(H·f, W·f, ...)`` to ``(H, W, ...)``."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return img.reshape(h, factor, w, factor, *img.shape[2:]).mean(axis=(1, 3))


_SRGB_LUT_SIZE = 4096
_SRGB_LUT = np.round(np.linspace(0, 1, _SRGB_LUT_SIZE) ** (1 / 2.2) * 255).astype(np.uint8)


def to_srgb_uint8(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, ∞) to 8-bit sRGB-like (gamma 2.2, clipped; 12-bit lookup table)."""
    index = np.clip(linear, 0, 1) * (_SRGB_LUT_SIZE - 1) + 0.5
    return _SRGB_LUT[index.astype(np.int32)]


def degrade(image: np.ndarray, seed: int, strength: float = 1.0) -> np.ndarray:
    """Photometric degradations of a real-look uint8 image via albumentations (seeded).

    Brightness/contrast and hue jitter, Gaussian noise, motion or Gaussian blur, and a JPEG
    pass; ``strength`` scales the probabilities (CarFusion frames use less).
    """
    import albumentations as A

    p = float(np.clip(strength, 0, 1))
    pipeline = A.Compose(
        [
            A.RandomBrightnessContrast(
                brightness_limit=(-0.15, 0.15), contrast_limit=(-0.15, 0.15), p=0.7 * p
            ),
            A.HueSaturationValue(
                hue_shift_limit=4, sat_shift_limit=12, val_shift_limit=0, p=0.4 * p
            ),
            A.OneOf(
                [A.MotionBlur(blur_limit=(3, 5)), A.GaussianBlur(blur_limit=(3, 5))], p=0.35 * p
            ),
            A.GaussNoise(std_range=(0.01, 0.045), p=0.7 * p),
            A.ImageCompression(quality_range=(35, 85), p=0.5 * p),
        ],
        seed=seed,
    )
    return pipeline(image=image)["image"]
