"""What every item of a world needs: the preset, the seed, the car models, byte-stable writers."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from occaist.synth.cars import CarMesh, build_car, model_id, sample_car_params
from occaist.synth.presets import WorldPreset
from occaist.utils.io import atomic_write

GENERATOR_VERSION = "2"
"""Bumped when the generator's output changes for the same preset and seed."""

# Random streams: np.random.default_rng([seed, STREAM, index...]) keeps items independent.
STREAM_MODEL, STREAM_SHAPENET, STREAM_STANFORD, STREAM_CARFUSION, STREAM_PAINT = range(5)

_MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by occaist.synth"


@dataclass
class WorldContext:
    """Deterministic access to the world's car models for a preset and seed."""

    root: Path
    preset: WorldPreset
    seed: int
    _meshes: dict[int, CarMesh] = field(default_factory=dict, repr=False)

    def rng(self, *stream: int) -> np.random.Generator:
        """An independent generator for one item (same bytes whatever the worker)."""
        return np.random.default_rng([self.seed, *stream])

    @property
    def n_models(self) -> int:
        return self.preset.shapenet.models

    def model_id(self, index: int) -> str:
        return model_id(self.seed, index)

    def params(self, index: int) -> dict[str, float | str]:
        return sample_car_params(self.rng(STREAM_MODEL, index))

    def mesh(self, index: int) -> CarMesh:
        if index not in self._meshes:
            self._meshes[index] = build_car(self.params(index))
        return self._meshes[index]

    @cached_property
    def splits(self) -> dict[str, list[int]]:
        """Model indices per split: consecutive blocks in the ratio ``shapenet.split``."""
        ratio = np.asarray(self.preset.shapenet.split, dtype=np.float64)
        bounds = np.round(np.cumsum(ratio) / ratio.sum() * self.n_models).astype(int)
        train, val = int(bounds[0]), int(bounds[1])
        return {
            "train": list(range(train)),
            "val": list(range(train, val)),
            "test": list(range(val, self.n_models)),
        }


def save_png(path: Path, array: np.ndarray) -> None:
    """Atomic PNG (uint8 gray/RGB/RGBA or uint16 gray)."""
    img = Image.fromarray(np.ascontiguousarray(array))  # uint16 gives mode "I;16"
    atomic_write(path, lambda p: img.save(p, format="PNG"))


def save_jpeg(path: Path, array: np.ndarray, quality: int) -> None:
    """Atomic baseline JPEG (gray or RGB)."""
    img = Image.fromarray(array)
    atomic_write(path, lambda p: img.save(p, format="JPEG", quality=int(quality)))


def save_mat(path: str | os.PathLike, variables: dict[str, np.ndarray]) -> None:
    """Atomic MATLAB v5 file with a fixed header (scipy stamps the creation time otherwise)."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables, do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_DESCRIPTION.ljust(116, b" ")
    atomic_write(path, lambda p: p.write_bytes(bytes(data)))
