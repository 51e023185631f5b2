"""``generate_world``: the whole synthetic car world, parallel, resumable and reproducible.

The world is a list of independent items (one ShapeNet model, one Stanford Cars photo, one
CarFusion frame with all its cameras). Each item draws from its own random stream
``np.random.default_rng([seed, stream, index])``, writes its files atomically and then a marker
``<root>/.synth/items/<item>.json`` holding what the final index files need. A rerun skips
items that have a marker (resume after an interruption), then rewrites the index files (splits,
side files, devkit), and last ``world.json``; a root with a ``world.json`` for the same preset
(name and content), seed and generator version is left untouched. Output bytes depend only on
(preset, seed), not on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from occaist.data.common import SYNTHETIC_MARKER
from occaist.synth.context import GENERATOR_VERSION, WorldContext
from occaist.synth.presets import WorldPreset, load_preset
from occaist.synth.writers import bop, carfusion, shapenet, stanford_cars
from occaist.utils.io import write_json_atomic, write_text_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)

STATE_DIR = ".synth"
IN_PROCESS_MAX_ITEMS = 40
"""Worlds with at most this many items to do run in-process (spawning workers costs more)."""

Item = tuple[Any, ...]


def world_items(ctx: WorldContext) -> list[Item]:
    """Every item of the world, in a fixed order."""
    s = ctx.preset.stanford_cars
    items: list[Item] = [("shapenet", i) for i in range(ctx.n_models)]
    items += [("stanford", "train", j) for j in range(s.train)]
    items += [("stanford", "test", j) for j in range(s.test)]
    for seq in range(len(carfusion.sequences(ctx))):
        items += [("carfusion", seq, f) for f in range(ctx.preset.carfusion.frames)]
    items += bop.items(ctx)
    return items


def _item_name(item: Item) -> str:
    return "-".join(str(part) for part in item)


def _marker(root: Path, item: Item) -> Path:
    return root / STATE_DIR / "items" / f"{_item_name(item)}.json"


_WORKER_CTX: WorldContext | None = None


def _context(root: Path, preset: WorldPreset, seed: int) -> WorldContext:
    """One context per process, so car meshes are built once per worker."""
    global _WORKER_CTX
    current = _WORKER_CTX
    if current is None or (current.root, current.preset, current.seed) != (root, preset, seed):
        _WORKER_CTX = WorldContext(root, preset, seed)
    return _WORKER_CTX


def run_item(root: Path, preset: WorldPreset, seed: int, item: Item) -> Item:
    """Render and write one item, then its marker (the marker is the item's commit)."""
    ctx = _context(root, preset, seed)
    kind = item[0]
    if kind == "shapenet":
        meta = shapenet.render_model(ctx, item[1])
    elif kind == "stanford":
        meta = stanford_cars.render_image(ctx, item[1], item[2])
    elif kind == "carfusion":
        meta = carfusion.render_frame(ctx, item[1], item[2])
    elif kind == "bop":
        meta = bop.render_chunk(ctx, item[1], item[2], item[3])
    else:
        raise ValueError(f"unknown item kind {kind!r}")
    write_json_atomic(_marker(root, item), meta)
    return item


def _load_metas(root: Path, items: list[Item]) -> dict[Item, dict]:
    return {item: json.loads(_marker(root, item).read_text()) for item in items}


def _identity(preset: WorldPreset, seed: int) -> dict[str, Any]:
    """What makes two worlds the same: preset (name and content), seed, generator version."""
    content = json.dumps(asdict(preset), sort_keys=True).encode()
    return {
        "preset": preset.name,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "preset_sha1": hashlib.sha1(content).hexdigest(),
    }


def _check_root(root: Path, preset: WorldPreset, seed: int) -> bool:
    """True if the world is complete; raises if the root holds a different world."""
    identity = _identity(preset, seed)
    for path in (root / "world.json", root / STATE_DIR / "config.json"):
        if path.is_file():
            found = json.loads(path.read_text())
            mine = {k: found.get(k) for k in identity}
            if mine != identity:
                raise ValueError(
                    f"{root} already holds a different synthetic world ({mine}); "
                    f"asked for {identity}. Use another --root or delete it."
                )
    return (root / "world.json").is_file()


def generate_world(
    root: str | os.PathLike,
    preset: str | WorldPreset = "demo",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write (or complete) the synthetic world ``preset`` with ``seed`` under ``root``.

    Args:
        root: output folder; gets ``SYNTHETIC``, ``world.json``, ``shapenet_renders/``,
            ``stanford_cars/``, ``carfusion/``, ``bop/occaist/`` (docs/synthetic_world.md).
        preset: ``tiny`` | ``demo`` | ``full`` (``occaist/conf/synth/<preset>.yaml``), or a
            ``WorldPreset`` (its ``name`` is recorded in ``world.json``).
        seed: world seed; the same (preset, seed) gives the same bytes.
        workers: processes; default: all cores, or in-process for small jobs; 1 = in-process.
        progress: show a progress bar.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    cfg = load_preset(preset) if isinstance(preset, str) else preset
    if _check_root(root, cfg, seed):
        log.info("synthetic world at %s is complete (preset %s, seed %d)", root, cfg.name, seed)
        return root
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        root / SYNTHETIC_MARKER,
        "Generated by occaist.synth (procedural cars), not real data.\n",
    )
    identity = _identity(cfg, seed)
    write_json_atomic(root / STATE_DIR / "config.json", identity)
    ctx = WorldContext(root, cfg, seed)
    items = world_items(ctx)
    todo = [item for item in items if not _marker(root, item).is_file()]
    if workers is None:
        workers = 1 if len(todo) <= IN_PROCESS_MAX_ITEMS else (os.cpu_count() or 1)
    start = time.perf_counter()
    log.info(
        "synthetic world %s (seed %d): %d of %d items to render with %d worker(s)",
        cfg.name, seed, len(todo), len(items), workers,
    )  # fmt: skip
    _render(root, cfg, seed, todo, workers, progress)
    metas = _load_metas(root, items)
    counts = shapenet.finalize(ctx, {i[1]: m for i, m in metas.items() if i[0] == "shapenet"})
    counts |= stanford_cars.finalize(
        ctx, {(i[1], i[2]): m for i, m in metas.items() if i[0] == "stanford"}
    )
    counts |= carfusion.finalize(
        ctx, {(i[1], i[2]): m for i, m in metas.items() if i[0] == "carfusion"}
    )
    counts |= bop.finalize(ctx, {i[1:]: m for i, m in metas.items() if i[0] == "bop"})
    write_json_atomic(root / "world.json", {**identity, "counts": counts, "config": asdict(cfg)})
    log.info("synthetic world written to %s in %.1f s", root, time.perf_counter() - start)
    return root


def _render(
    root: Path, cfg: WorldPreset, seed: int, todo: list[Item], workers: int, progress: bool
) -> None:
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"synth {cfg.name}", total=len(todo))
        if workers <= 1:
            for item in todo:
                run_item(root, cfg, seed, item)
                bar.advance(task)
            return
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_item, root, cfg, seed, item) for item in todo]
            for future in as_completed(futures):
                future.result()
                bar.advance(task)
