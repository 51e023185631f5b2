"""Pretrained weights from local files only: torchvision's hub cache by default, never the network.

``load_pretrained(model, name, path=...)``:

* ``path="default"`` looks where torchvision itself caches the file,
  ``$TORCH_HOME/hub/checkpoints/<file name of the weights' URL>`` (``TORCH_HOME`` defaults to
  ``~/.cache/torch``), so a user who ever downloaded the weights needs nothing more;
* an explicit path overrides it;
* ``None`` keeps the random initialisation and logs a loud warning (tests, smoke runs).

A missing file raises :class:`MissingWeightsError` naming the path and how to get the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from occaist.utils.errors import MissingDataError
from occaist.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class WeightsSpec:
    """Where a torchvision weight file comes from (``url``) and how torchvision names it."""

    url: str
    torchvision_enum: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


#: Known weights by short name. The URLs are only used to name the cached file and to tell the
#: user where to download it; this module never opens a connection.
KNOWN_WEIGHTS: dict[str, WeightsSpec] = {
    "resnet18": WeightsSpec(
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "ResNet18_Weights.IMAGENET1K_V1",
    ),
    "resnet50": WeightsSpec(
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "ResNet50_Weights.IMAGENET1K_V1",
    ),
    "maskrcnn_resnet50_fpn": WeightsSpec(
        "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    ),
    "keypointrcnn_resnet50_fpn": WeightsSpec(
        "https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
    ),
}


class MissingWeightsError(MissingDataError):
    """A pretrained weight file is not on disk (the message says where it was looked for)."""


def torch_hub_dir() -> Path:
    """``$TORCH_HOME/hub`` exactly as ``torch.hub.get_dir()`` computes it (no network)."""
    return Path(torch.hub.get_dir())


def default_weights_path(name: str) -> Path:
    """Where torchvision caches the weights called ``name`` (see :data:`KNOWN_WEIGHTS`)."""
    spec = _spec(name)
    return torch_hub_dir() / "checkpoints" / spec.file_name


def _spec(name: str) -> WeightsSpec:
    if name not in KNOWN_WEIGHTS:
        raise KeyError(f"unknown weights {name!r}; known: {sorted(KNOWN_WEIGHTS)}")
    return KNOWN_WEIGHTS[name]


def resolve_weights_path(name: str, path: str | os.PathLike | None = "default") -> Path | None:
    """Turn the user's ``path`` setting into an existing file, or ``None`` for random weights.

    Raises:
        MissingWeightsError: the file does not exist; the message names the path looked at,
            the URL to download and the torchvision call that fills the cache.
    """
    if path is None or str(path).lower() in {"none", "null", "random"}:
        log.warning(
            "\n%s\n  NO PRETRAINED WEIGHTS for %r: the network keeps its RANDOM initialisation.\n"
            "  Fine for tests and smoke runs; results will not match the papers.\n%s",
            "!" * 78,
            name,
            "!" * 78,
        )
        return None
    file = default_weights_path(name) if str(path) == "default" else Path(path).expanduser()
    if not file.is_file():
        spec = _spec(name)
        raise MissingWeightsError(
            f"pretrained weights {name!r} not found at {file}.\n"
            f"  Get them on a machine with network access, either\n"
            f"    curl -L -o {file} {spec.url}\n"
            f"  or in Python: torchvision.models.get_weight('{spec.torchvision_enum}')"
            f".get_state_dict(progress=True)  (fills {torch_hub_dir() / 'checkpoints'}),\n"
            f"  then copy the file here or pass its path explicitly (weights path=/path/to/"
            f"{spec.file_name}), or set TORCH_HOME. Use null for random weights (tests only)."
        )
    return file


def load_state_dict_file(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved by ``torch.save`` (tensors only), on CPU."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_pretrained(
    model: nn.Module,
    name: str,
    path: str | os.PathLike | None = "default",
    strict: bool = True,
) -> nn.Module:
    """Load the weights ``name`` into ``model`` from a local file (see module docstring).

    Args:
        model: the torchvision network to fill (already built with the matching architecture).
        name: a key of :data:`KNOWN_WEIGHTS` (``resnet18``, ``maskrcnn_resnet50_fpn``, ...).
        path: ``"default"`` (torchvision's cache), an explicit file, or ``None`` (random).
        strict: passed to ``load_state_dict``.
    """
    file = resolve_weights_path(name, path)
    if file is None:
        return model
    missing, unexpected = model.load_state_dict(load_state_dict_file(file), strict=strict)
    if missing or unexpected:
        log.warning("weights %s: missing keys %s, unexpected keys %s", file, missing, unexpected)
    log.info("loaded pretrained weights %r from %s", name, file)
    return model
