"""World presets: how many models, images and sequences, and their render settings.

The counts live in ``occaist/conf/synth/<preset>.yaml`` and are checked against these
dataclasses (a misspelled key or a wrong type fails when the preset is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

PRESET_DIR = Path(__file__).resolve().parents[1] / "conf" / "synth"


@dataclass
class ShapeNetPreset:
    """The DPC-layout renders: ``models`` split ``train/val/test`` in the ratio ``split``."""

    models: int = 10
    split: list[int] = field(default_factory=lambda: [6, 2, 2])
    views: int = 5
    image_size: int = 128
    supersample: int = 2
    azimuth_deg: list[float] = field(default_factory=lambda: [0.0, 360.0])
    elevation_deg: list[float] = field(default_factory=lambda: [-20.0, 40.0])
    points: list[int] = field(default_factory=lambda: [4000, 6000])
    basis_components: int = 5


@dataclass
class StanfordCarsPreset:
    """The real-look photos in the Stanford Cars layout."""

    train: int = 8
    test: int = 4
    width: list[int] = field(default_factory=lambda: [320, 640])
    aspect: list[float] = field(default_factory=lambda: [1.25, 1.78])
    fov_deg: list[float] = field(default_factory=lambda: [28.0, 55.0])
    fill: list[float] = field(default_factory=lambda: [0.55, 0.95])
    elevation_deg: list[float] = field(default_factory=lambda: [-4.0, 32.0])
    car_length_m: list[float] = field(default_factory=lambda: [4.0, 5.0])
    road_aligned_prob: float = 0.6
    multi_car_prob: float = 0.25
    extra_cars: list[int] = field(default_factory=lambda: [1, 3])
    crop_prob: float = 0.15
    grayscale_prob: float = 0.08
    jpeg_quality: list[int] = field(default_factory=lambda: [75, 95])


@dataclass
class CarFusionPreset:
    """Multi-camera sequences of cars at an intersection, in the CarFusion layout."""

    train_sequences: list[str] = field(default_factory=lambda: ["car_butler1"])
    test_sequences: list[str] = field(default_factory=lambda: ["car_penn1"])
    cameras: int = 3
    frames: int = 2
    cars: list[int] = field(default_factory=lambda: [2, 6])
    width: int = 640
    height: int = 360
    focal_px: list[float] = field(default_factory=lambda: [420.0, 620.0])
    camera_height_m: list[float] = field(default_factory=lambda: [3.0, 6.5])
    camera_distance_m: list[float] = field(default_factory=lambda: [11.0, 18.0])
    area_m: float = 10.0
    speed_mps: list[float] = field(default_factory=lambda: [0.0, 6.0])
    frame_dt_s: float = 0.2
    car_length_m: list[float] = field(default_factory=lambda: [4.0, 5.0])
    jpeg_quality: int = 90
    degrade_strength: float = 0.5


@dataclass
class BOPPreset:
    """The pose dataset in the BOP layout (seed 004); counts are images per object and split."""

    train_plain: int = 4
    train_dr: int = 4
    test: int = 4
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    fov_deg: float = 40.0
    fill: list[float] = field(default_factory=lambda: [0.45, 0.7])
    elevation_deg: list[float] = field(default_factory=lambda: [10.0, 60.0])
    centre_jitter: float = 0.04
    jpeg_quality: int = 92
    chunk: int = 25


@dataclass
class WorldPreset:
    """A whole world; ``name`` is the preset file's stem."""

    name: str = "tiny"
    shapenet: ShapeNetPreset = field(default_factory=ShapeNetPreset)
    stanford_cars: StanfordCarsPreset = field(default_factory=StanfordCarsPreset)
    carfusion: CarFusionPreset = field(default_factory=CarFusionPreset)
    bop: BOPPreset = field(default_factory=BOPPreset)


def available_presets() -> list[str]:
    """Names of the preset files shipped in ``occaist/conf/synth``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> WorldPreset:
    """Load and type-check ``occaist/conf/synth/<name>.yaml``."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown synth preset {name!r}; choose one of {available_presets()}")
    merged = OmegaConf.merge(OmegaConf.structured(WorldPreset(name=name)), OmegaConf.load(path))
    return OmegaConf.to_object(merged)
