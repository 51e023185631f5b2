"""Stylize a whole ShapeNet-renders dataset with a trained AIST generator G (thesis chapter 6).

``python -m occaist.stylize ckpt=<AIST checkpoint> src=<renders root> dst=<new root>`` writes a
complete copy of ``src`` in which every ``render_<i>.png`` is replaced by G(x):

* RGB = G(x) (x preprocessed exactly as in training: resized to the training size, background
  cleared, colour corrected; the output resized back to the render's size);
* alpha = the source render's alpha channel, **bit for bit** (the annotation AIST must keep);
* every other file (``depth_<i>.png``, ``camera_<i>.mat``, split files, ``gt/`` point clouds,
  side files) is hard-linked, or copied when linking is impossible, unchanged.

So the DPC data module reads the result unchanged. The job is batched, shows a progress bar, and
is resumable: outputs are written atomically, and a rerun skips every file that already exists.
``manifest.json`` at the root of ``dst`` records the source, checkpoint, settings and counts.
A copy of a synthetic world keeps its ``SYNTHETIC`` marker.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from occaist.data.common import SYNTHETIC_MARKER, find_synthetic_marker
from occaist.data.unpaired import load_rgba, to_tensor
from occaist.models.aist.networks import ResnetGenerator, build_partial
from occaist.utils.io import atomic_write, write_json_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)

#: Files replaced by G(x); everything else is linked or copied.
RENDER_PATTERN = re.compile(r"render_\d+\.png")
MANIFEST = "manifest.json"


def load_generator(ckpt: str | os.PathLike, which: str = "G") -> tuple[nn.Module, dict]:
    """Rebuild generator ``G`` (synthetic -> real) or ``F`` from an AISTCycleGAN checkpoint.

    Loads with ``weights_only=True``; the generator's config (``model.generator``, a partial of
    :class:`~occaist.models.aist.networks.ResnetGenerator` stored as its config dict) comes from
    the checkpoint's hyperparameters. Returns the generator in eval mode and the checkpoint's
    ``{"model": ..., "data": ...}`` hyperparameters.
    """
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = state.get("hyper_parameters")
    if not hp or "generator" not in hp or "alpha_mode" not in hp:
        raise ValueError(
            f"{ckpt} is not an AISTCycleGAN checkpoint with a composed generator "
            "(no model.generator config in its hyperparameters)"
        )
    channels = 4 if hp["alpha_mode"] == "channel" else 3
    generator = build_partial(hp["generator"], ResnetGenerator)(
        in_channels=channels, out_channels=channels
    )
    prefix = f"{which}."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    generator.load_state_dict(weights)
    return generator.eval(), {
        "model": dict(hp),
        "data": dict(state.get("datamodule_hyper_parameters") or {}),
    }


def _walk(root: Path) -> Iterator[Path]:
    """Every file under ``root``, relative to it, in a stable (sorted) order."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield (Path(folder) / name).relative_to(root)


def _link_or_copy(src: Path, dst: Path, link: bool) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return "linked"
        except OSError:  # another file system, or links unsupported: copy instead
            pass
    atomic_write(dst, lambda tmp: shutil.copy2(src, tmp))
    return "copied"


def _batches(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, 3) uint8, the RGB channels."""
    rgb = ((images[:, :3].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def stylize_batch(
    generator: nn.Module,
    paths: Sequence[Path],
    image_size: int,
    device: torch.device,
    bf16: bool = False,
) -> list[np.ndarray]:
    """G(x) for the renders ``paths``: RGBA uint8 (H, W, 4) each, alpha copied from the source.

    All renders of a batch must have the same size (the DPC renders are all 128x128).
    ``bf16`` runs G under bfloat16 autocast (faster where the hardware supports it; RGB may
    differ from float32 by a grey level or two, alpha never changes).
    """
    channels = getattr(generator, "in_channels", 3)
    sources = []
    for path in paths:
        with Image.open(path) as image:
            sources.append(np.asarray(image.convert("RGBA")))
    height, width = sources[0].shape[:2]
    x = torch.stack([to_tensor(load_rgba(p, image_size), channels) for p in paths]).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        y = generator(x).float()  # (B, C, s, s)
    if (height, width) != tuple(y.shape[-2:]):
        y = F.interpolate(y.float(), size=(height, width), mode="bicubic", antialias=True)
    rgb = _to_uint8(y)
    return [np.dstack([rgb[i], src[..., 3]]) for i, src in enumerate(sources)]


def _write_png(path: Path, rgba: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(rgba, "RGBA").save(tmp))


def stylize_dataset(
    generator: nn.Module | str | os.PathLike,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    image_size: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    link: bool = True,
    progress: bool = True,
    bf16: bool = False,
) -> dict[str, Any]:
    """Write a stylized copy of the ShapeNet-renders root ``src`` to ``dst`` (module docstring).

    Args:
        generator: an AISTCycleGAN checkpoint path (G is loaded from it) or a generator module
            taking (B, C, H, W) in [-1, 1].
        src: the renders root (``renders/<synset>/<id>/render_<i>.png``, ...).
        dst: the output root (created; an existing partial output is completed).
        image_size: side the generator runs at; default the checkpoint's training
            ``image_size``, else each render's own size.
        batch_size: renders per generator call.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        link: hard-link unchanged files (copy when impossible) instead of copying them.
        progress: show a progress bar.
        bf16: run G under bfloat16 autocast (see :func:`stylize_batch`).

    Returns:
        The manifest written to ``dst/manifest.json``.
    """
    from tqdm.auto import tqdm

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source renders root {src} does not exist")
    if (src / MANIFEST).exists():
        raise ValueError(f"{src / MANIFEST} exists; the stylized copy writes its own {MANIFEST}")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"dst {dst} must lie outside src {src}")
    checkpoint = None
    settings: dict[str, Any] = {}
    if isinstance(generator, (str, os.PathLike)):
        checkpoint = str(Path(generator).resolve())
        generator, settings = load_generator(generator)
        image_size = image_size or settings["data"].get("image_size")
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else "cpu"
        if device == "auto"
        else device
    )
    generator = generator.to(dev).eval()

    counts = {"stylized": 0, "linked": 0, "copied": 0, "existing": 0}
    renders: list[Path] = []
    for rel in _walk(src):
        out = dst / rel
        if out.exists():
            counts["existing"] += 1
        elif RENDER_PATTERN.fullmatch(rel.name):
            renders.append(rel)
        else:
            counts[_link_or_copy(src / rel, out, link)] += 1
    marker = find_synthetic_marker(src)
    if marker is not None and not (dst / SYNTHETIC_MARKER).exists():
        shutil.copy2(marker, dst / SYNTHETIC_MARKER)

    by_size: dict[tuple[int, int], list[Path]] = {}
    for rel in renders:
        with Image.open(src / rel) as image:
            by_size.setdefault(image.size, []).append(rel)
    bar = tqdm(total=len(renders), desc="stylize", unit="img", disable=not progress)
    for (width, _height), group in sorted(by_size.items()):
        side = image_size or width
        for batch in _batches(group, batch_size):
            outputs = stylize_batch(generator, [src / rel for rel in batch], side, dev, bf16)
            for rel, rgba in zip(batch, outputs):
                _write_png(dst / rel, rgba)
            counts["stylized"] += len(batch)
            bar.update(len(batch))
    bar.close()

    manifest = {
        "source": str(src.resolve()),
        "checkpoint": checkpoint,
        "generator": "G (synthetic -> real)",
        "model_hyper_parameters": settings.get("model", {}),
        "image_size": image_size,
        "bf16": bf16,
        "alpha": "copied bit for bit from the source renders",
        "unchanged_files": "hard-linked" if link else "copied",
        "counts": counts,
    }
    write_json_atomic(dst / MANIFEST, manifest)
    log.info("stylized %d renders into %s (%s)", counts["stylized"], dst, counts)
    return manifest


def main() -> None:
    """``python -m occaist.stylize ckpt=... src=... dst=... [batch_size=16 device=auto]``."""
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path="conf", config_name="stylize.yaml")
    def _run(cfg: DictConfig) -> None:
        stylize_dataset(
            cfg.ckpt,
            cfg.src,
            cfg.dst,
            image_size=cfg.image_size,
            batch_size=cfg.batch_size,
            device=cfg.device,
            link=cfg.link,
            progress=cfg.progress,
            bf16=cfg.bf16,
        )

    _run()


if __name__ == "__main__":
    main()
